"""Sending to a person, at most once per idempotency key, inside WeChat's windows.

`deliver_text` is what the inbox and the re-engagement jobs call. It records the message in the
`wechat_outbound` ledger before calling WeChat (unique on the caller's key), reserves a slot in the reply
window (so Siyu knows before WeChat whether it will be accepted), then calls WeChat once. A job that
runs twice finds the ledger row and does not send again; a send whose outcome is unknown (the process
died mid-call) is never repeated automatically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from siyu.core.clock import now
from siyu.tenants.services import channel_credentials
from siyu.wechat import consents, windows
from siyu.wechat.client import ApiAccount, WeChatClient, WeChatError, WeChatNotAllowed
from siyu.wechat.ratelimit import RateLimiter
from siyu.wechat.tables import Outbound

log = logging.getLogger("siyu.wechat.outbound")


class WeChatRuntime:
    """What every WeChat call of a process shares: one HTTP connection pool, Redis and the rate limiter."""

    def __init__(self, redis: Redis, http: httpx.AsyncClient | None = None) -> None:
        self.redis = redis
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0),
                                              limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        self.limiter = RateLimiter(redis)

    async def client(self, tenant_id: int, channel: str) -> WeChatClient:
        creds = await channel_credentials(tenant_id, channel)  # NotFound when the account is not linked
        return WeChatClient(self.http, self.redis, self.limiter,
                            ApiAccount(tenant_id, channel, creds.app_id, creds.secret))

    async def close(self) -> None:
        await self.http.aclose()


def runtime_of(ctx: dict[str, Any]) -> WeChatRuntime:
    """A job's runtime: the worker's (`ctx["wechat"]`, made at startup); a job called without the
    composition root's startup (tests, scripts) makes one and keeps it in its context."""
    rt = ctx.get("wechat")
    if rt is None:
        rt = ctx["wechat"] = WeChatRuntime(ctx["redis"])
    return rt


@dataclass(frozen=True)
class Delivery:
    outbound_id: int
    state: str  # sent | refused | retryable | unknown | pending
    errcode: int | None = None
    reason: str = ""
    duplicate: bool = False  # this key had been handled before: nothing was sent now


async def deliver_text(runtime: WeChatRuntime, tenant_id: int, channel: str, external_id: str, text: str,
                       idempotency_key: str, *, open_kfid: str = "", bulk: bool = False) -> Delivery:
    """Send a text to a person on `channel` (customer-service message on OA/MP, 微信客服 on WeCom)."""
    kind = "kf" if channel == "wecom" else "custom"
    payload = {"text": text, **({"open_kfid": open_kfid} if open_kfid else {})}
    claimed = await _claim(tenant_id, channel, external_id, idempotency_key, kind, payload)
    if isinstance(claimed, Delivery):
        return claimed
    outbound_id = claimed

    slot = await windows.reserve(tenant_id, channel, external_id)
    if isinstance(slot, int):  # Siyu knows WeChat would refuse: do not call it
        reason = WeChatNotAllowed.REASONS.get(slot, "not_allowed")
        await _finish(outbound_id, "refused", errcode=slot, errmsg=f"{reason} (checked by Siyu before sending)")
        return Delivery(outbound_id, "refused", slot, reason)

    await Outbound.update({Outbound.window_slot: slot}).where(Outbound.id == outbound_id)

    async def send(client: WeChatClient) -> dict[str, Any]:
        if channel == "wecom":
            return await client.kf_send_text(external_id, open_kfid, text, msgid=f"siyu{outbound_id}")
        return await client.send_text(external_id, text, bulk=bulk)

    delivery = await _call(outbound_id, send, tenant_id, channel, runtime)
    if delivery.state != "sent":  # WeChat did not take it: the reserved place in the window is free again
        await windows.release(tenant_id, channel, external_id, slot)
    return delivery


async def _claim(tenant_id: int, channel: str, external_id: str, idempotency_key: str, kind: str,
                 payload: dict[str, Any]) -> int | Delivery:
    """Claim a send in the ledger: the new row's id, or the Delivery of the key's earlier claim (sent,
    refused, pending elsewhere, unknown). A retryable earlier attempt is claimed again."""
    claimed = await Outbound.raw(
        "INSERT INTO wechat_outbound (tenant, channel, external_id, idempotency_key, kind, payload, state, "
        "window_slot, errmsg, wechat_msgid, attempts, created_at, claimed_at) "
        "VALUES ({}, {}, {}, {}, {}, {}::jsonb, 'pending', '', '', '', 1, now(), now()) "
        "ON CONFLICT (tenant, idempotency_key) DO UPDATE SET state = 'pending', claimed_at = now(), "
        "attempts = wechat_outbound.attempts + 1 WHERE wechat_outbound.state = 'retryable' RETURNING id",
        tenant_id, channel, external_id, idempotency_key, kind, json.dumps(payload, ensure_ascii=False))
    if not claimed:
        row = await Outbound.select(Outbound.id, Outbound.state, Outbound.errcode).where(
            (Outbound.tenant == tenant_id) & (Outbound.idempotency_key == idempotency_key)).first()
        assert row is not None
        return Delivery(row["id"], row["state"], row["errcode"], duplicate=True)
    return int(claimed[0]["id"])


async def deliver_template(runtime: WeChatRuntime, tenant_id: int, openid: str, template_id: str,
                           data: dict[str, str], idempotency_key: str) -> Delivery:
    """Send an Official Account template message (a service notice, outside the reply windows). Once per
    key, as every send."""
    claimed = await _claim(tenant_id, "oa", openid, idempotency_key, "template",
                           {"template_id": template_id, "data": data})
    if isinstance(claimed, Delivery):
        return claimed
    return await _call(claimed, lambda client: client.send_template(openid, template_id, data), tenant_id, "oa",
                       runtime)


async def deliver_subscribe(runtime: WeChatRuntime, tenant_id: int, channel: str, openid: str, template_id: str,
                            data: dict[str, str], idempotency_key: str) -> Delivery:
    """Send a one-time subscription message, taking one of the person's consents to the template first
    (none left: refused without calling WeChat, as WeChat would answer 43101). Once per key."""
    claimed = await _claim(tenant_id, channel, openid, idempotency_key, "subscribe",
                           {"template_id": template_id, "data": data})
    if isinstance(claimed, Delivery):
        return claimed
    if not await consents.reserve(tenant_id, channel, openid, template_id):
        await _finish(claimed, "refused", errcode=43101, errmsg="no_consent (checked by Siyu before sending)")
        return Delivery(claimed, "refused", 43101, "no_consent")
    delivery = await _call(claimed, lambda client: client.send_subscribe(openid, template_id, data), tenant_id,
                           channel, runtime)
    if delivery.errcode == 43101:  # WeChat knows better than the count: none left
        await consents.clear(tenant_id, channel, openid, template_id)
    elif delivery.state != "sent":
        await consents.release(tenant_id, channel, openid, template_id)
    return delivery


async def deliver_owner_task(runtime: WeChatRuntime, tenant_id: int, sender_userid: str, external_userid: str,
                             text: str, idempotency_key: str) -> Delivery:
    """Have a WeCom member send a text 1:1 to a customer they added (`add_msg_template`): WeChat creates a
    task the member confirms in the WeCom client. No reply window applies; WeChat caps how many such
    messages a customer receives a month and answers that as a refusal. Once per key, as every send."""
    claimed = await _claim(tenant_id, "wecom", external_userid, idempotency_key, "wecom_task",
                           {"text": text, "sender": sender_userid})
    if isinstance(claimed, Delivery):
        return claimed
    def refused_by_answer(answer: dict[str, Any]) -> str:
        return "not_their_contact" if external_userid in (answer.get("fail_list") or []) else ""

    return await _call(claimed, lambda client: client.add_msg_template(sender_userid, [external_userid], text),
                       tenant_id, "wecom", runtime, refused_by_answer)


async def deliver_mass(runtime: WeChatRuntime, tenant_id: int, openids: list[str], text: str, idempotency_key: str,
                       clientmsgid: str) -> Delivery:
    """An OA mass send of one text to these followers, once per key. WeChat refuses a `clientmsgid` it has seen
    within 24 h (45065): that answer means the first send went out, and is recorded as sent with its msg_id."""
    claimed = await _claim(tenant_id, "oa", f"mass:{clientmsgid}"[:128], idempotency_key, "mass",
                           {"text": text, "clientmsgid": clientmsgid, "recipients": len(openids)})
    if isinstance(claimed, Delivery):
        return claimed

    async def send(client: WeChatClient) -> dict[str, Any]:
        try:
            return await client.mass_send_text(openids, text, clientmsgid)
        except WeChatError as exc:
            if exc.errcode == 45065:  # "clientmsgid exist, msg_id …": WeChat has it already
                return {"msgid": exc.errmsg.rsplit(" ", 1)[-1] if "msg_id" in exc.errmsg else ""}
            raise

    async def with_msg_id(client: WeChatClient) -> dict[str, Any]:
        answer = await send(client)
        return {**answer, "msgid": str(answer.get("msg_id") or answer.get("msgid") or "")}

    return await _call(claimed, with_msg_id, tenant_id, "oa", runtime)


async def mass_msg_id(tenant_id: int, idempotency_key: str) -> str:
    """The msg_id WeChat gave a mass send recorded under this key ("" if none)."""
    row = await Outbound.select(Outbound.wechat_msgid).where(
        (Outbound.tenant == tenant_id) & (Outbound.idempotency_key == idempotency_key)).first()
    return str(row["wechat_msgid"]) if row else ""


@dataclass(frozen=True)
class TaskResult:
    status: str  # waiting | sent | not_sent
    reason: str = ""  # for not_sent: not_their_contact | receive_limit
    sent_at: int | None = None  # unix seconds, for sent


async def owner_task_result(runtime: WeChatRuntime, tenant_id: int, idempotency_key: str) -> TaskResult | None:
    """What became of a 1:1 task sent with `deliver_owner_task` under this key: still waiting for the member,
    sent to the customer, or not sent (no longer their contact, or the customer's monthly receive limit). None
    when the key holds no task WeChat took."""
    row = await Outbound.select(Outbound.wechat_msgid, Outbound.external_id, Outbound.payload, Outbound.state).where(
        (Outbound.tenant == tenant_id) & (Outbound.idempotency_key == idempotency_key)).first()
    if row is None or row["state"] != "sent" or not row["wechat_msgid"]:
        return None
    payload = row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"] or "{}")
    client = await runtime.client(tenant_id, "wecom")
    answer = await client.get_groupmsg_send_result(row["wechat_msgid"], str(payload.get("sender", "")))
    for item in answer.get("send_list") or []:
        if item.get("external_userid") != row["external_id"]:
            continue
        status = int(item.get("status", 0) or 0)
        if status == 1:
            return TaskResult("sent", sent_at=int(item.get("send_time", 0) or 0) or None)
        if status in (2, 3):
            return TaskResult("not_sent", "not_their_contact" if status == 2 else "receive_limit")
    return TaskResult("waiting")


async def _call(outbound_id: int, send: Callable[[WeChatClient], Awaitable[dict[str, Any]]], tenant_id: int,
                channel: str, runtime: WeChatRuntime,
                refused_by_answer: Callable[[dict[str, Any]], str] | None = None) -> Delivery:
    """Make a claimed send's one call to WeChat and settle its ledger row by the answer."""
    try:
        answer = await send(await runtime.client(tenant_id, channel))
    except WeChatNotAllowed as exc:
        await _finish(outbound_id, "refused", errcode=exc.errcode, errmsg=exc.errmsg)
        return Delivery(outbound_id, "refused", exc.errcode, exc.reason)
    except WeChatError as exc:
        state = "retryable" if getattr(exc, "retryable", False) else "refused"
        await _finish(outbound_id, state, errcode=exc.errcode, errmsg=exc.errmsg)
        return Delivery(outbound_id, state, exc.errcode, type(exc).__name__)
    reason = refused_by_answer(answer) if refused_by_answer else ""
    if reason:
        await _finish(outbound_id, "refused", errmsg=f"{reason} (in WeChat's answer)")
        return Delivery(outbound_id, "refused", None, reason)
    await _finish(outbound_id, "sent", msgid=str(answer.get("msgid", "")))
    return Delivery(outbound_id, "sent")


async def _finish(outbound_id: int, state: str, errcode: int | None = None, errmsg: str = "",
                  msgid: str = "") -> None:
    values: dict[Any, Any] = {Outbound.state: state, Outbound.errcode: errcode, Outbound.errmsg: errmsg[:500]}
    if state == "sent":
        values[Outbound.sent_at] = now()
        values[Outbound.wechat_msgid] = msgid
    await Outbound.update(values).where(Outbound.id == outbound_id)


async def mark_stale_pending_unknown(older_than_seconds: int = 600) -> int:
    """A row still pending long after its call began: the process died mid-send. WeChat may or may not
    have delivered it, so it is marked unknown and never sent again automatically."""
    rows = await Outbound.raw(
        "UPDATE wechat_outbound SET state = 'unknown', errmsg = 'the sending process stopped mid-call' "
        "WHERE state = 'pending' AND claimed_at < now() - make_interval(secs => {}) RETURNING id",
        older_than_seconds)
    return len(rows)
