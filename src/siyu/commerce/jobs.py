"""Jobs of commerce. They take ids, are registered by name and are safe to run twice.

`commerce.process_pay_notification(id)` turns one stored WeChat Pay notification into a purchase or a refund
(through the one writer, `purchases`, whose merging makes a second run change nothing) and marks it processed;
the sweeper enqueues notifications stored but never processed (Redis was down, a worker died).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from siyu.commerce import buyers, purchases
from siyu.core import clock, db

log = logging.getLogger("siyu.commerce.jobs")

PROCESS_PAY = "commerce.process_pay_notification"
PROCESS_PAY_BATCH = "commerce.process_pay_notifications"
PROCESS_PAY_TRIES = 8
SWEEP = "commerce.sweep"
SWEEP_AFTER_SECONDS = 30
SWEEP_BATCH = 500
REFUND_STATUS = {"REFUND.SUCCESS": "success", "REFUND.ABNORMAL": "abnormal", "REFUND.CLOSED": "closed"}


def pay_job_id(notification_id: int) -> str:
    return f"{PROCESS_PAY}:{notification_id}"


def pay_batch_job_id(first_new_id: int) -> str:
    """A group commit's new notifications: named by the first of them (each row is new in one batch only)."""
    return f"{PROCESS_PAY_BATCH}:{first_new_id}"


def _time(value: Any) -> datetime | None:
    """WeChat Pay's RFC 3339 times (`2018-06-08T10:34:56+08:00`); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


async def apply_notification(tenant_id: int, event_type: str, resource: dict[str, Any], received_at: datetime) -> str:
    """What one notification means, recorded. Returns the outcome noted on the stored row."""
    if event_type == "TRANSACTION.SUCCESS":
        if resource.get("trade_state", "SUCCESS") != "SUCCESS":
            return f"ignored:trade_state {str(resource.get('trade_state'))[:16]}"
        amount = resource["amount"]
        paid_at = _time(resource.get("success_time")) or received_at
        buyer = await buyers.by_openid(tenant_id, str(resource["appid"]), str(resource["payer"]["openid"]), paid_at,
                                       field_prefix="payer", checked=True)
        currency = amount.get("currency") if isinstance(amount.get("currency"), str) else "CNY"
        payer_total = amount.get("payer_total")
        payment = purchases.Payment(
            source="pay", order_id=str(resource["out_trade_no"]), amount_fen=int(amount["total"]),
            currency=currency.upper()[:3] if len(currency) == 3 and currency.isalpha() else "CNY", paid_at=paid_at,
            transaction_id=str(resource["transaction_id"]), attach=str(resource.get("attach") or "")[:128],
            payer_total_fen=payer_total if isinstance(payer_total, int) and not isinstance(payer_total, bool) else None)
        recorded = await purchases.do_record_payment(tenant_id, payment, buyer)
        return f"purchase {recorded.purchase_id}"
    status = REFUND_STATUS.get(event_type)
    if status is None:
        return f"ignored:{event_type[:24]}"
    report = purchases.RefundReport(
        source="pay", refund_id=str(resource["out_refund_no"]), amount_fen=int(resource["amount"]["refund"]),
        status=status, refunded_at=_time(resource.get("success_time")) if status == "success" else None,
        wechat_refund_id=str(resource["refund_id"]), order_id=str(resource["out_trade_no"]),
        transaction_id=str(resource["transaction_id"]) if resource.get("transaction_id") else None)
    done = await purchases.do_record_refund(tenant_id, report)
    return f"refund {done.refund_row_id}" + ("" if done.purchase_id else " (purchase not known yet)")


async def process_pay_notification(ctx: dict[str, Any], notification_id: int) -> str:
    row = await db.fetchrow(
        "SELECT id, tenant, event_type, resource::text AS resource, received_at, processed_at "
        "FROM commerce_pay_notification WHERE id = $1", notification_id)
    if row is None:
        return "missing"
    if row["processed_at"] is not None:
        return "already processed"
    try:
        outcome = await apply_notification(int(row["tenant"]), row["event_type"], json.loads(row["resource"]),
                                           row["received_at"])
    except Exception as exc:
        await db.execute("UPDATE commerce_pay_notification SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                         notification_id, f"{type(exc).__name__}: {exc}"[:500])
        raise  # arq retries; the sweeper picks it up after the last try
    await db.execute(
        "UPDATE commerce_pay_notification SET processed_at = $2, outcome = $3, attempts = attempts + 1, last_error = '' "
        "WHERE id = $1 AND processed_at IS NULL", notification_id, clock.now(), outcome[:32])
    return outcome


async def process_pay_notifications(ctx: dict[str, Any], notification_ids: list[int]) -> int:
    """The notifications one group commit stored (one job per batch: an enqueue costs more than a row). Each
    is processed as by `process_pay_notification`; one failing does not hold up the others, and the job then
    fails so arq tries again (the ones already processed are skipped)."""
    failed: Exception | None = None
    done = 0
    for notification_id in notification_ids:
        try:
            if (await process_pay_notification(ctx, int(notification_id))) != "already processed":
                done += 1
        except Exception as exc:
            log.warning("pay notification %s not processed: %r", notification_id, exc)
            failed = exc
    if failed is not None:
        raise failed
    return done


async def sweep(ctx: dict[str, Any]) -> int:
    """Enqueue notifications stored but not processed after a while."""
    rows = await db.fetch(
        "SELECT id FROM commerce_pay_notification WHERE processed_at IS NULL "
        "AND received_at < now() - make_interval(secs => $1) ORDER BY received_at LIMIT $2",
        SWEEP_AFTER_SECONDS, SWEEP_BATCH)
    for r in rows:
        await ctx["redis"].enqueue_job(PROCESS_PAY, int(r["id"]), _job_id=pay_job_id(int(r["id"])))
    if rows:
        log.info("sweeper re-enqueued %s pay notifications", len(rows))
    return len(rows)
