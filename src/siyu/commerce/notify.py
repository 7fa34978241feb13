"""WeChat Pay's notifications: `POST /wechat/{tenant}/pay` (the brand's orders name it as `notify_url`).

Verified before parsed (siyu.wechat.pay), decrypted with the merchant's APIv3 key, checked against the
merchant (mchid, and the app a payment was made in), then stored durably under its unique key before Siyu
answers 204; the `commerce.process_pay_notification` job does the rest. Every refusal answers 4xx/5xx with
`{"code": "FAIL", "message": …}` and stores nothing; WeChat Pay retries those (15 s … 6 h, for 24 h). A GCM
failure answers 500 so the retries continue while the admin fixes the APIv3 key, and the merchant row
records why notifications are failing, for the channels page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from siyu.commerce import merchants
from siyu.commerce.jobs import PROCESS_PAY, pay_job_id
from siyu.core import db, effects
from siyu.wechat import pay
from siyu.wechat.pay import PayRejected

log = logging.getLogger("siyu.commerce.notify")

TRANSACTION_EVENTS = ("TRANSACTION.SUCCESS",)
REFUND_EVENTS = ("REFUND.SUCCESS", "REFUND.ABNORMAL", "REFUND.CLOSED")
# Refusals worth telling the admin about: they come from WeChat Pay itself (a valid signature, or a key
# WeChat switched to that is not linked yet). A bad signature or a probe says nothing about the setup.
NOTED = {"decrypt", "unknown_key", "merchant", "app", "stale", "unreadable"}

_STORE = """
INSERT INTO commerce_pay_notification (tenant, mchid, resource_key, event_type, notification_id, resource,
    received_at, deliveries, attempts, last_error, outcome)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, now(), 1, 0, '', '')
ON CONFLICT (tenant, mchid, resource_key, event_type)
DO UPDATE SET deliveries = commerce_pay_notification.deliveries + 1
RETURNING id, (xmax = 0) AS inserted, processed_at IS NULL AS pending
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


async def store(config: merchants.MerchantConfig, envelope: pay.Envelope, resource_key: str,
                resource: dict[str, Any]) -> Stored:
    """One INSERT … ON CONFLICT under the unique key (a retry counts a delivery); the job is enqueued after
    commit while the notification is unprocessed (the sweeper covers a lost enqueue)."""
    import json

    async with db.transaction():
        row = await db.fetchrow(_STORE, config.tenant_id, config.mchid, resource_key, envelope.event_type,
                                envelope.id, json.dumps(resource, ensure_ascii=False))
        await db.execute(merchants.note_success_sql(), config.tenant_id)
        if row["pending"]:
            await effects.enqueue(PROCESS_PAY, int(row["id"]), job_id=pay_job_id(int(row["id"])))
    return Stored(int(row["id"]), bool(row["inserted"]))


async def receive(slug: str, headers: Any, body: bytes, now: float | None = None) -> Stored | None:
    """Verify, decrypt, check and store one notification. None: an event type Siyu does not use (answered
    so WeChat stops sending it, stored nowhere). Raises PayRejected."""
    config = await merchants.config_for(slug)
    if config is None:
        raise PayRejected(404, "tenant", "no such tenant, or no WeChat Pay merchant linked")
    try:
        pay.verify(headers, body, config.keys, time.time() if now is None else now)
        envelope = pay.open_envelope(body)
        if envelope.event_type not in TRANSACTION_EVENTS + REFUND_EVENTS:
            log.info("pay notification of unused type %s for tenant %s acknowledged", envelope.event_type, slug)
            return None
        resource = pay.decrypt_resource(config.apiv3_key, envelope.resource)
        key = check_resource(config, envelope.event_type, resource)
    except PayRejected as exc:
        if exc.code in NOTED:
            await merchants.note_failure(config.tenant_id, exc.code, exc.reason)
        raise
    return await store(config, envelope, key, resource)


def _fail(slug: str, exc: PayRejected) -> Response[Any]:
    log.warning("pay notification refused: tenant=%s status=%s code=%s reason=%s", slug[:40], exc.status, exc.code,
                exc.reason)
    return Response({"code": "FAIL", "message": exc.reason}, status_code=exc.status,
                    media_type="application/json")


class PayNotifications(Controller):
    path = "/wechat"
    include_in_schema = False

    @post("/{tenant:str}/pay", request_max_body_size=pay.MAX_BODY, status_code=200)
    async def receive(self, request: Request[Any, Any, Any], tenant: FromPath[str]) -> Response[Any]:
        try:
            body = await request.body()
        except HTTPException as exc:
            if exc.status_code == 413:
                return _fail(tenant, PayRejected(413, "too_large", f"body over {pay.MAX_BODY} bytes"))
            raise
        try:
            await receive(tenant, request.headers, body)
        except PayRejected as exc:
            return _fail(tenant, exc)
        except Exception:  # the database is away: nothing was stored, WeChat Pay retries on a 5xx
            log.exception("pay notification for tenant %s not stored", tenant[:40])
            return _fail(tenant, PayRejected(503, "unavailable", "temporarily unable to store the notification"))
        return Response(None, status_code=204)
