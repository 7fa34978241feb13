"""What became of a WeCom 1:1 task: WeChat taking `add_msg_template` (the ledger's `sent`) only creates a task;
nothing reaches the customer until the member confirms it in the WeCom client, and WeChat pushes no result.
So Siyu asks (`get_groupmsg_send_result`, by the task's msgid and the member) with a growing pause, and keeps
the answer on the send's ledger row:

    waiting   the member has not sent it yet                                   (asked again later)
    sent      the member sent it to the customer (`task_sent_at`)                               (final)
    not_sent  it will not reach them: no longer the member's contact, the customer's monthly receive
              limit, WeCom forgot the task, or the member did not confirm it within HORIZON      (final)

Any domain that creates tasks through `outbound.deliver_owner_task` follows them here by the same ledger key:
`poll_owner_task` (asks WeChat when the row is still waiting), `task_result` (what the ledger knows, no call),
`due` (the keys whose next question is due, for a caller's sweep). This module is the one writer of the
`task_*` columns; a conditional update lets concurrent pollers settle a row once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.core import db
from siyu.core.errors import NotFound
from siyu.wechat.client import WeChatError
from siyu.wechat.outbound import OWNER_TASK_FIRST_CHECK, WeChatRuntime

log = logging.getLogger("siyu.wechat.owner_tasks")

FIRST_CHECK_AFTER = OWNER_TASK_FIRST_CHECK  # seconds after WeChat took the task (the ledger writes it as it settles)
# Pauses between questions: soon while a rep who saw the notification confirms, then rarely. The last repeats.
BACKOFF = (30, 60, 120, 300, 600, 1800, 3600)
# How long Siyu keeps asking. WeCom publishes no expiry for a member's pending task; three days is Siyu's choice,
# the life of the temporary media a task may carry, after which the customer is told nothing more by it.
HORIZON = timedelta(days=3)

STATUS_SENT, STATUS_NOT_FRIEND, STATUS_LIMIT = 1, 2, 3  # get_groupmsg_send_result's per-customer status


@dataclass(frozen=True)
class TaskResult:
    status: str  # waiting | sent | not_sent
    reason: str = ""  # not_sent: not_their_contact | receive_limit | rep_did_not_confirm | an errcode
    sent_at: datetime | None = None  # sent: when the member sent it
    checked_at: datetime | None = None  # when WeChat was last asked


_COLUMNS = ("id, tenant, kind, state, wechat_msgid, external_id, payload, sent_at, task_state, task_reason, "
            "task_checks, task_checked_at, task_sent_at")


def _result(row: Any) -> TaskResult:
    return TaskResult(row["task_state"] or "waiting", row["task_reason"], row["task_sent_at"], row["task_checked_at"])


async def _row(tenant_id: int, key: str) -> Any:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM wechat_outbound WHERE tenant = $1 AND idempotency_key = $2",
                            tenant_id, key)
    if row is None or row["kind"] != "wecom_task" or row["state"] != "sent" or not row["wechat_msgid"]:
        return None  # no task WeChat took under this key
    return row


async def task_result(tenant_id: int, key: str) -> TaskResult | None:
    """What the ledger knows of the task sent under `key` (no call to WeChat); None when the key holds no task
    WeChat took."""
    row = await _row(tenant_id, key)
    return _result(row) if row is not None else None


def pause_after(checks: int) -> int:
    return BACKOFF[min(checks, len(BACKOFF) - 1)]


async def poll_owner_task(runtime: WeChatRuntime, tenant_id: int, key: str) -> TaskResult | None:
    """Ask WeChat what became of the task sent under `key` while the ledger says it is waiting, and record the
    answer; a settled task is answered from the ledger. None when the key holds no task WeChat took.

    WeChat's errors propagate (busy, a limit, the network) after the next question has been put off, so a
    caller's sweep does not ask again at once; WeCom no longer knowing the task (41063) settles it as not sent."""
    row = await _row(tenant_id, key)
    if row is None:
        return None
    if row["task_state"] in ("sent", "not_sent"):
        return _result(row)
    payload = row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"] or "{}")
    sender = str(payload.get("sender") or "")
    try:
        client = await runtime.client(tenant_id, "wecom")
        answer = await client.get_groupmsg_send_result(row["wechat_msgid"], sender)
    except NotFound:  # the WeCom account was unlinked: nobody can ask any more
        return await _record(row, "not_sent", "not_linked")
    except WeChatError as exc:
        if exc.errcode == 41063:
            return await _record(row, "not_sent", "41063")
        await _record(row, "waiting", "")  # asked: the next question waits its turn
        log.info("task %s of tenant %s: %r; asked again later", key, tenant_id, exc)
        raise
    status, sent_time = 0, 0
    for item in answer.get("send_list") or []:
        if isinstance(item, dict) and item.get("external_userid") == row["external_id"]:
            status, sent_time = int(item.get("status") or 0), int(item.get("send_time") or 0)
            break
    if status == STATUS_SENT:
        at = datetime.fromtimestamp(sent_time, UTC) if sent_time else None
        return await _record(row, "sent", "", sent_at=at)
    if status in (STATUS_NOT_FRIEND, STATUS_LIMIT):
        return await _record(row, "not_sent", "not_their_contact" if status == STATUS_NOT_FRIEND else "receive_limit")
    expired = await db.fetchrow("SELECT $1::timestamptz < now() - make_interval(secs => $2) AS past", row["sent_at"],
                                HORIZON.total_seconds())
    if expired["past"]:
        return await _record(row, "not_sent", "rep_did_not_confirm")
    return await _record(row, "waiting", "")


async def _record(row: Any, state: str, reason: str, sent_at: datetime | None = None) -> TaskResult:
    """One question's answer, written only while the row still waits (a concurrent poller may have settled it:
    then its answer stands)."""
    done = await db.fetchrow(
        "UPDATE wechat_outbound SET task_state = $2::varchar, task_reason = $3, task_checks = task_checks + 1, "
        "task_checked_at = now(), task_sent_at = CASE WHEN $2::varchar = 'sent' THEN COALESCE($4, now()) END, "
        "task_next_check_at = CASE WHEN $2::varchar = 'waiting' THEN now() + make_interval(secs => $5) END "
        "WHERE id = $1 AND task_state IN ('', 'waiting') "
        "RETURNING task_state, task_reason, task_sent_at, task_checked_at",
        row["id"], state, reason[:32], sent_at, pause_after(int(row["task_checks"])))
    if done is None:
        done = await db.fetchrow("SELECT task_state, task_reason, task_sent_at, task_checked_at FROM wechat_outbound "
                                 "WHERE id = $1", row["id"])
    return _result(done)


@dataclass(frozen=True)
class Due:
    tenant_id: int
    key: str
    checks: int  # questions asked so far: with the key, a job id for this question


async def due(prefix: str, limit: int = 200) -> list[Due]:
    """Waiting tasks whose next question is due, keys starting with `prefix` (each domain follows its own), the
    longest overdue first."""
    rows = await db.fetch(
        "SELECT tenant, idempotency_key, task_checks FROM wechat_outbound WHERE task_state = 'waiting' "
        "AND task_next_check_at <= now() AND starts_with(idempotency_key, $1) ORDER BY task_next_check_at LIMIT $2",
        prefix, limit)
    return [Due(int(r["tenant"]), str(r["idempotency_key"]), int(r["task_checks"])) for r in rows]
