"""WeChat Pay's notifications: `POST /wechat/{tenant}/pay` (the brand's orders name it as `notify_url`).

Verified before parsed (siyu.wechat.pay), decrypted with the merchant's APIv3 key, checked against the
merchant (mchid, and the app a payment was made in), then stored durably under its unique key before Siyu
answers 204; the `commerce.process_pay_notification` job does the rest. Every refusal answers 4xx/5xx with
`{"code": "FAIL", "message": …}` and stores nothing; WeChat Pay retries those (15 s … 6 h, for 24 h). A GCM
failure answers 500 so the retries continue while the admin fixes the APIv3 key, and the merchant row
records why notifications are failing, for the channels page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from siyu.commerce import merchants
from siyu.commerce.jobs import PROCESS_PAY, PROCESS_PAY_BATCH, pay_batch_job_id, pay_job_id
from siyu.core import db, effects, groupcommit
from siyu.wechat import pay
from siyu.wechat.pay import PayRejected

log = logging.getLogger("siyu.commerce.notify")

TRANSACTION_EVENTS = ("TRANSACTION.SUCCESS",)
REFUND_EVENTS = ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED")
# Refusals worth telling the admin about: they come from WeChat Pay itself (a valid signature, or a key
# WeChat switched to that is not linked yet). A bad signature or a probe says nothing about the setup.
NOTED = {"decrypt", "unknown_key", "merchant", "app", "stale", "unreadable"}

# The notifications that arrive together share this one statement and one commit (siyu.core.groupcommit). The
# merchant is looked up again here: one unlinked a moment ago (after its config was read) stores nothing.
# Retries of one notification in the same batch are written once and count their deliveries.
_STORE = """
WITH stored AS (
    INSERT INTO commerce_pay_notification (tenant, mchid, resource_key, event_type, notification_id, resource,
        received_at, deliveries, attempts, last_error, outcome)
    SELECT u.tenant, u.mchid, u.rkey, u.etype, u.nid, u.res::jsonb, now(), u.n, 0, '', ''
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[])
        AS u(tenant, merchant, mchid, rkey, etype, nid, res, n)
    JOIN commerce_pay_merchant m ON m.tenant = u.tenant AND m.id = u.merchant AND m.mchid = u.mchid
    ON CONFLICT (tenant, mchid, resource_key, event_type)
    DO UPDATE SET deliveries = commerce_pay_notification.deliveries + EXCLUDED.deliveries
    RETURNING id, tenant, mchid, resource_key, event_type, (xmax = 0) AS inserted, processed_at IS NULL AS pending
), noted AS (
    %s
)
SELECT * FROM stored
"""

@dataclass(frozen=True)
class Stored:
    id: int
    new: bool


def _text(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and 1 <= len(value) <= limit else None


def _unreadable(what: str) -> PayRejected:
    return PayRejected(400, "unreadable", f"the decrypted resource lacks a valid {what}")


def check_resource(config: merchants.MerchantConfig, event_type: str, resource: dict[str, Any]) -> str:
    """The resource's key for the unique index, once it is known to be this merchant's and readable enough
    for the job to process it."""
    mchid = resource.get("mchid", resource.get("sp_mchid"))
    if mchid != config.mchid:
        raise PayRejected(400, "merchant", f"notification for merchant {str(mchid)[:32]!r}, not the linked "
                                           f"{config.mchid}")
    if _text(resource.get("out_trade_no"), 64) is None:
        raise _unreadable("out_trade_no")
    amount = resource.get("amount")
    if not isinstance(amount, dict):
        raise _unreadable("amount")
    if event_type in TRANSACTION_EVENTS:
        if resource.get("appid") != config.app_id:
            raise PayRejected(400, "app", f"payment made in app {str(resource.get('appid'))[:32]!r}, not the "
                                          f"linked {config.app_id}")
        payer = resource.get("payer")
        if not isinstance(payer, dict) or _text(payer.get("openid"), 128) is None:
            raise _unreadable("payer.openid")
        if not isinstance(amount.get("total"), int) or isinstance(amount.get("total"), bool) or amount["total"] < 0:
            raise _unreadable("amount.total")
        key = _text(resource.get("transaction_id"), 64)
        if key is None:
            raise _unreadable("transaction_id")
        return key
    refund = amount.get("refund")
    if not isinstance(refund, int) or isinstance(refund, bool) or refund < 0:
        raise _unreadable("amount.refund")
    if _text(resource.get("out_refund_no"), 64) is None:
        raise _unreadable("out_refund_no")
    key = _text(resource.get("refund_id"), 64)
    if key is None:
        raise _unreadable("refund_id")
    return key


@dataclass(frozen=True)
class _Item:
    config: merchants.MerchantConfig
    envelope: pay.Envelope
    resource_key: str
    resource: str  # JSON


async def _store_batch(items: list[_Item]) -> list[Stored | BaseException]:
    """One statement and one commit for the notifications that arrived together; the jobs are enqueued after
    commit, in the background (the sweeper enqueues what a lost enqueue missed)."""
    groups: dict[tuple[int, str, str, str], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.config.tenant_id, it.config.mchid, it.resource_key, it.envelope.event_type), []).append(i)
    columns: list[list[Any]] = [[] for _ in range(8)]
    for (tenant_id, mchid, key, event_type), members in groups.items():
        it = items[members[0]]
        for c, value in enumerate((tenant_id, it.config.merchant_id, mchid, key, event_type, it.envelope.id,
                                   it.resource, len(members))):
            columns[c].append(value)
    async with db.transaction():
        rows = await db.fetch(_STORE_SQL, *columns)
    by_key = {(int(r["tenant"]), r["mchid"], r["resource_key"], r["event_type"]): r for r in rows}
    results: list[Stored | BaseException] = [_merchant_gone() for _ in items]
    new: list[int] = []
    again: list[int] = []
    for key, members in groups.items():
        row = by_key.get(key)
        if row is None:
            continue  # the merchant was unlinked or changed since its config was read
        if row["pending"]:
            (new if row["inserted"] else again).append(int(row["id"]))
        for n, i in enumerate(members):
            results[i] = Stored(int(row["id"]), bool(row["inserted"]) and n == 0)
    if new or again:
        groupcommit.hand_over(_enqueue(new, again), f"enqueueing {len(new) + len(again)} pay notifications")
    return results


async def _enqueue(new: list[int], again: list[int]) -> None:
    """The batch's new notifications as one job; a retried one still unprocessed by its own job id (the job
    of its first delivery may be queued still: the id keeps it to one)."""
    target = effects.pool()
    calls = [target.enqueue_job(PROCESS_PAY, i, _job_id=pay_job_id(i)) for i in again]
    if new:
        calls.append(target.enqueue_job(PROCESS_PAY_BATCH, new, _job_id=pay_batch_job_id(new[0])))
    await asyncio.gather(*calls)


def _merchant_gone() -> PayRejected:
    return PayRejected(404, "tenant", "no WeChat Pay merchant linked (it was unlinked just now)")


_STORE_SQL = _STORE % merchants.note_success_sql("IN (SELECT DISTINCT tenant FROM stored)")
_writer: groupcommit.GroupCommit[_Item, Stored] = groupcommit.GroupCommit(_store_batch, "pay-notifications")


async def store(config: merchants.MerchantConfig, envelope: pay.Envelope, resource_key: str,
                resource: dict[str, Any]) -> Stored:
    """Stored under the unique key (a retry counts a delivery) together with the notifications arriving at the
    same time; returns once its row is committed. The job is enqueued after commit while the notification is
    unprocessed."""
    return await _writer.submit(_Item(config, envelope, resource_key, json.dumps(resource, ensure_ascii=False)))


async def stop() -> None:
    """Write what is handed in, then stop the writer and wait for the enqueues (the app's shutdown)."""
    await _writer.stop()
    await groupcommit.settle()


async def receive_notification(slug: str, headers: Any, body: bytes, now: float | None = None) -> Stored | None:
    """Verify, decrypt, check and store one notification. None: an event type Siyu does not use (answered
    so WeChat stops sending it, stored nowhere). Raises PayRejected."""
    config = await merchants.config_for(slug)
    if config is None:
        raise PayRejected(404, "tenant", "no such tenant, or no WeChat Pay merchant linked")
    checked_at = time.time() if now is None else now
    try:
        try:
            envelope, key, resource = _open(config, headers, body, checked_at)
        except PayRejected as exc:
            fresh = await _fresh_config(slug, config, exc)
            if fresh is None:
                raise
            config = fresh
            envelope, key, resource = _open(config, headers, body, checked_at)
    except PayRejected as exc:
        if exc.code in NOTED:
            await merchants.note_failure(config.tenant_id, exc.code, exc.reason)
        raise
    if envelope is None:
        log.info("pay notification of an unused type for tenant %s acknowledged", slug)
        return None
    return await store(config, envelope, key, resource)


def _open(config: merchants.MerchantConfig, headers: Any, body: bytes,
          now: float) -> tuple[pay.Envelope | None, str, dict[str, Any]]:
    pay.verify(headers, body, config.keys, now)
    envelope = pay.open_envelope(body)
    if envelope.event_type not in TRANSACTION_EVENTS + REFUND_EVENTS:
        return None, "", {}
    resource = pay.decrypt_resource(config.apiv3_key, envelope.resource)
    return envelope, check_resource(config, envelope.event_type, resource), resource


# A refusal by the kept config is checked again with a fresh one (the admin may have just linked a key or
# changed the APIv3 key in another process), at most this often per tenant: forged requests must not cost a
# lookup each.
FRESH_RETRY_SECONDS = 1.0
RETRIED_CODES = {"unknown_key", "signature", "decrypt", "merchant", "app"}
_fresh_at: dict[str, float] = {}


def forget_fresh_looks() -> None:
    """Forget when each tenant's config was last looked at afresh (tests: each starts with none)."""
    _fresh_at.clear()


async def _fresh_config(slug: str, config: merchants.MerchantConfig,
                        exc: PayRejected) -> merchants.MerchantConfig | None:
    if exc.code not in RETRIED_CODES:
        return None
    at = time.monotonic()
    if at - _fresh_at.get(slug, -FRESH_RETRY_SECONDS) < FRESH_RETRY_SECONDS:
        return None
    if len(_fresh_at) > 10_000:
        _fresh_at.clear()
    _fresh_at[slug] = at
    merchants.forget_configs(slug)
    fresh = await merchants.config_for(slug)
    return fresh if fresh is not None and fresh != config else None


def _fail(slug: str, exc: PayRejected) -> tuple[int, bytes]:
    log.warning("pay notification refused: tenant=%s status=%s code=%s reason=%s", slug[:40], exc.status, exc.code,
                exc.reason)
    return exc.status, json.dumps({"code": "FAIL", "message": exc.reason}, ensure_ascii=False).encode()


# `POST /wechat/{tenant}/pay`, answered before Litestar's router and middlewares (see `PayEndpoint`).
PATH = re.compile(r"/wechat/([^/]{1,200})/pay/?")


class _Headers:
    """The request's headers as `pay.verify` reads them: case-insensitive, the first of repeated names."""

    __slots__ = ("_by_name",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        by_name: dict[str, str] = {}
        for name, value in raw[:200]:
            by_name.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self._by_name = by_name

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_name.get(name.lower(), default)


class PayEndpoint:
    """WeChat Pay's notifications as a bare ASGI endpoint. The answer WeChat Pay waits for is on the path of
    every payment, so none of what the people's pages need runs here: no session, CSRF or input middleware
    (the body is verified before it is parsed, see `receive_notification`), no routing table, no dependency
    injection. The app (siyu.app.Siyu) hands it the requests whose path matches `PATH`; any other method
    answers 405. Every answer carries `headers` (the app's security headers)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, slug: str) -> None:
        if scope["method"] != "POST":
            await self._answer(send, 405, json.dumps({"code": "FAIL", "message": "only POST"}).encode(),
                               [(b"allow", b"POST")])
            return
        try:
            body = await _read_body(scope, receive)
        except _ClientGone:
            return  # nothing to answer, nothing stored
        if body is None:
            await self._answer(send, *_fail(slug, PayRejected(413, "too_large", f"body over {pay.MAX_BODY} bytes")))
            return
        try:
            await receive_notification(slug, _Headers(scope["headers"]), body)
        except PayRejected as exc:
            await self._answer(send, *_fail(slug, exc))
            return
        except Exception:  # the database is away: nothing was stored, WeChat Pay retries on a 5xx
            log.exception("pay notification for tenant %s not stored", slug[:40])
            await self._answer(send, *_fail(slug, PayRejected(503, "unavailable",
                                                              "temporarily unable to store the notification")))
            return
        await self._answer(send, 204, b"")

    async def _answer(self, send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
                      ) -> None:
        headers = [*self._headers, *(extra or [])]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _ClientGone(Exception):
    """The client closed the connection before the body was read."""


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes | None:
    """The whole body, or None once it is over `pay.MAX_BODY` (said by Content-Length or seen while read):
    nothing more of it is read."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or len(value) > 12 or int(value) > pay.MAX_BODY:
                return None
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > pay.MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
