"""Purchases and refunds: the one writer of their rows, whatever source reports them.

Sources: `pay` (a WeChat Pay notification), `api` (the brand's Mini Program backend), `import` (history).
One order is one purchase, in whichever order its sources arrive: found by order id (= WeChat Pay's
out_trade_no) or by WeChat Pay's transaction id. Items come from the backend; WeChat Pay is authoritative for
the payment (amount, currency, time): a backend amount that differs is kept beside it and the purchase is
flagged `amount_mismatch`, never silently overwritten. A second report from the backend with another amount
(or currency) for the same order is refused (409 naming the field); the same report again changes nothing.

Concurrency rests on keys and locks: the purchase's contact is locked first (FOR NO KEY UPDATE, following
merges: the order every contact writer uses), then the purchase row (FOR UPDATE); a first report inserts with
ON CONFLICT DO NOTHING and, having lost a race, starts over and finds the winner's row. Unique violations,
deadlocks and serialization failures are retried. Each change writes, in the same transaction, the timeline
event (idempotent by source key), the products and the contact's figures.

Refunds (by the brand's refund number, WeChat Pay's out_refund_no) move through `refund_transition`:
abnormal → success | closed; success and closed are final. A refund WeChat Pay reports before its purchase is
known waits, and is attached when the purchase arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from asyncpg.exceptions import DeadlockDetectedError, SerializationError, UniqueViolationError

from siyu.commerce import products, stats
from siyu.commerce.buyers import Buyer
from siyu.contacts import merge
from siyu.contacts.live import erased, lock_identity_contact, lock_live
from siyu.core import db, effects
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.timeline import services as timeline

log = logging.getLogger("siyu.commerce.purchases")

SOURCES = ("api", "pay", "import")
BACKEND = ("api", "import")  # what the brand itself reports (items, its own amount)
REFUND_STATUSES = ("success", "abnormal", "closed")
FLAGS = ("amount_mismatch", "currency_mismatch", "buyer_mismatch", "transaction_mismatch")
MAX_ATTEMPTS = 20
RETRYABLE = (UniqueViolationError, DeadlockDetectedError, SerializationError)
T = TypeVar("T")

_COLUMNS = ("id, order_id, out_trade_no, transaction_id, contact, identity, amount_fen, currency, api_amount_fen, "
            "api_currency, pay_amount_fen, payer_total_fen, items::text AS items, skus, sources, paid_at, refunded_fen, flags, "
            "attach, buyer::text AS buyer, created_at, updated_at")


class _Again(Exception):
    """What this transaction read changed under it (a concurrent first report, a merge): start over."""


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    if db.in_transaction():
        raise RuntimeError("purchases retry their own transactions; call them outside one")
    for n in range(MAX_ATTEMPTS):
        try:
            async with db.transaction():
                return await attempt()
        except (_Again, *RETRYABLE) as exc:
            if n == MAX_ATTEMPTS - 1:
                raise
            log.debug("purchase write retried after %s", type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 0.002 * (n + 1)))
    raise AssertionError("unreachable")


# --- reading ------------------------------------------------------------------------------------------------

def _purchase(row: Any) -> dict[str, Any]:
    p = dict(row)
    p["items"] = json.loads(p["items"])
    p["buyer"] = json.loads(p["buyer"])
    p["sources"] = list(p["sources"] or [])
    p["flags"] = list(p["flags"] or [])
    p["skus"] = list(p["skus"] or [])
    return p


async def get_by_order(tenant_id: int, order_id: str) -> dict[str, Any]:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM commerce_purchase WHERE tenant = $1 AND order_id = $2",
                            tenant_id, order_id)
    if row is None:
        raise NotFound()
    return _purchase(row)


async def get_purchase(tenant_id: int, purchase_id: int) -> dict[str, Any]:
    if not 0 < purchase_id < 2**63:
        raise NotFound()
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM commerce_purchase WHERE tenant = $1 AND id = $2",
                            tenant_id, purchase_id)
    if row is None:
        raise NotFound()
    return _purchase(row)


async def refunds_of(tenant_id: int, purchase_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    rows = await db.fetch(
        "SELECT id, purchase, refund_id, wechat_refund_id, amount_fen, status, refunded_at, sources, created_at "
        "FROM commerce_refund WHERE tenant = $1 AND purchase = ANY($2::bigint[]) ORDER BY created_at, id",
        tenant_id, list(purchase_ids))
    found: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        found.setdefault(int(r["purchase"]), []).append({**dict(r), "sources": list(r["sources"] or [])})
    return found


# --- payments ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payment:
    """What one source says about one paid order."""

    source: str  # pay | api | import
    order_id: str
    amount_fen: int
    currency: str
    paid_at: datetime
    transaction_id: str | None = None
    items: list[dict[str, Any]] | None = None  # None: the source knows no items (WeChat Pay)
    attach: str = ""
    payer_total_fen: int | None = None


@dataclass(frozen=True)
class Recorded:
    purchase_id: int
    order_id: str
    contact_id: int | None
    created: bool  # the purchase is new
    first_report: bool  # this source had not reported it before (False: a repeat, nothing changed)


def _skus(items: list[dict[str, Any]]) -> list[str]:
    return sorted({str(i["sku"]) for i in items})


def _event_payload(p: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": p["order_id"], "amount_fen": p["amount_fen"], "currency": p["currency"],
            "items": [{"sku": i["sku"], "name": i.get("name", ""), "quantity": i.get("quantity", 1)}
                      for i in p["items"]],
            "source": "+".join(s for s in SOURCES if s in p["sources"]), "refunded_fen": p["refunded_fen"]}


async def _find(tenant_id: int, payment: Payment, lock: bool) -> dict[str, Any] | None:
    """The purchase this report is about: by transaction id first (WeChat's, unique), then by order id (and,
    for WeChat Pay, by the out_trade_no a backend report may have renamed)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM commerce_purchase WHERE tenant = $1 AND (order_id = $2 "
        "OR ($3::text IS NOT NULL AND transaction_id = $3) OR ($4 AND out_trade_no = $2)) "
        f"ORDER BY (transaction_id IS NOT DISTINCT FROM $3) DESC, (order_id = $2) DESC, id {'FOR UPDATE' if lock else ''}",
        tenant_id, payment.order_id, payment.transaction_id, payment.source == "pay")
    if not rows:
        return None
    found = [_purchase(r) for r in rows]
    if len(found) > 1 and payment.source == "api":
        raise Conflict(N_("This transaction_id belongs to another order."), field="transaction_id")
    return found[0]


async def _lock_contact(tenant_id: int, purchase: dict[str, Any] | None, buyer: Buyer | None) -> int | None:
    """Lock the contact the purchase belongs to (or, for a new one, its buyer's) before the purchase row."""
    if purchase is not None and purchase["contact"] is not None:
        return await lock_live(tenant_id, int(purchase["contact"]))
    if buyer is None:
        return None
    if buyer.identity_id is not None:
        return await lock_identity_contact(tenant_id, buyer.identity_id)
    return await lock_live(tenant_id, buyer.contact_id)


async def do_record_payment(tenant_id: int, payment: Payment, buyer: Buyer | None) -> Recorded:
    """Record what a source reports about a paid order; see the module's doc for the merging rules."""
    if payment.source not in SOURCES:
        raise InvalidInput.one("source", N_("Choose one of: {choices}."), choices=", ".join(SOURCES))

    async def attempt() -> Recorded:
        seen = await _find(tenant_id, payment, lock=False)
        contact = await _lock_contact(tenant_id, seen, buyer)
        row = await _find(tenant_id, payment, lock=True)
        if (row is None) != (seen is None) or (row is not None and seen is not None and (
                row["id"] != seen["id"] or row["contact"] != seen["contact"])):
            raise _Again()
        if row is None:
            return await _insert(tenant_id, payment, buyer, contact)
        return await _merge(tenant_id, row, payment, buyer, contact)

    return await _retrying(attempt)


async def _wait_lock(tenant_id: int, *names: str | None) -> None:
    """Serialise a first purchase with a WeChat Pay refund that names the same order or transaction before
    it is known: whichever commits second sees the other (the refund waits, the purchase attaches it)."""
    for name in sorted({n for n in names if n}):
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"commerce:{tenant_id}:{name}")


async def _insert(tenant_id: int, payment: Payment, buyer: Buyer | None, contact: int | None) -> Recorded:
    items = payment.items or []
    await _wait_lock(tenant_id, payment.order_id, payment.transaction_id)
    backend = payment.source in BACKEND
    row = await db.fetchrow(
        "INSERT INTO commerce_purchase (tenant, order_id, out_trade_no, transaction_id, contact, identity, amount_fen, "
        "currency, api_amount_fen, pay_amount_fen, payer_total_fen, items, skus, sources, paid_at, refunded_fen, "
        "flags, attach, buyer, api_currency, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
        "$11, $12::jsonb, $13::varchar[], ARRAY[$14]::varchar[], $15, 0, '{}', $16, $17::jsonb, $18, now(), now()) "
        f"ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
        tenant_id, payment.order_id, payment.order_id if payment.source == "pay" else None, payment.transaction_id,
        contact, buyer.identity_id if buyer else None, payment.amount_fen, payment.currency,
        payment.amount_fen if backend else None, payment.amount_fen if payment.source == "pay" else None,
        payment.payer_total_fen, json.dumps(items, ensure_ascii=False), _skus(items), payment.source,
        payment.paid_at, payment.attach[:128], json.dumps(buyer.named if buyer else {}, ensure_ascii=False),
        payment.currency if backend else None)
    if row is None:
        raise _Again()  # a concurrent first report won (order id or transaction id): merge into it
    p = _purchase(row)
    await _attach_waiting_refunds(tenant_id, p)
    p = await get_purchase(tenant_id, p["id"])
    await products.learn(tenant_id, items, payment.currency, payment.paid_at)
    await _timeline(tenant_id, p, buyer.channel if buyer else "mp", new=True)
    await stats.refresh(tenant_id, [contact])
    if payment.source != "import":  # re-engagement: journeys and conversions, by job name after commit
        await effects.enqueue("engagement.on_purchase", tenant_id, p["id"], job_id=f"engagement:purchase:{p['id']}")
    return Recorded(p["id"], p["order_id"], contact, created=True, first_report=True)


async def _merge(tenant_id: int, row: dict[str, Any], payment: Payment, buyer: Buyer | None,
                 contact: int | None) -> Recorded:
    src = payment.source
    if contact is not None and row["contact"] is not None and contact != row["contact"]:
        # The purchase sat on a contact merged away meanwhile: it belongs to the survivor.
        await db.execute("UPDATE commerce_purchase SET contact = $3 WHERE tenant = $1 AND id = $2",
                         tenant_id, row["id"], contact)
        row["contact"] = contact
    if src in BACKEND and any(s in row["sources"] for s in BACKEND):
        # The backend reports an order it reported before: the same facts, or a refusal naming what differs.
        if row["api_amount_fen"] != payment.amount_fen:
            raise Conflict(N_("This order was reported with another amount."), field="amount_fen")
        if row["api_currency"] != payment.currency:
            raise Conflict(N_("This order was reported in another currency."), field="currency")
    if src in row["sources"]:
        return Recorded(row["id"], row["order_id"], row["contact"], created=False, first_report=False)

    changes: dict[str, Any] = {"sources": [s for s in SOURCES if s in row["sources"] or s == src]}
    flags = set(row["flags"])
    if src == "pay":
        changes.update(amount_fen=payment.amount_fen, pay_amount_fen=payment.amount_fen, currency=payment.currency,
                       paid_at=payment.paid_at, payer_total_fen=payment.payer_total_fen, out_trade_no=payment.order_id)
        if row["api_amount_fen"] is not None and row["api_amount_fen"] != payment.amount_fen:
            flags.add("amount_mismatch")
        if row["api_currency"] is not None and row["api_currency"] != payment.currency:
            flags.add("currency_mismatch")
        # A backend that named the order its own way (found here by transaction id) keeps its order id.
    else:
        changes["api_amount_fen"] = payment.amount_fen
        changes["api_currency"] = payment.currency
        if not row["items"] and payment.items:
            changes["items"] = payment.items
            changes["skus"] = _skus(payment.items)
        if "pay" in row["sources"]:
            if row["pay_amount_fen"] != payment.amount_fen:
                flags.add("amount_mismatch")
            if row["currency"] != payment.currency:
                flags.add("currency_mismatch")
            if row["order_id"] != payment.order_id and row["order_id"] == row["out_trade_no"]:
                changes["order_id"] = payment.order_id  # found by transaction id: the brand's name for its order
        else:
            changes.update(amount_fen=payment.amount_fen, currency=payment.currency)
    if payment.transaction_id is not None:
        if row["transaction_id"] is None:
            changes["transaction_id"] = payment.transaction_id
        elif row["transaction_id"] != payment.transaction_id:
            flags.add("transaction_mismatch")
    if not row["attach"] and payment.attach:
        changes["attach"] = payment.attach[:128]
    if buyer is not None:
        if row["contact"] is None:
            changes["contact"] = contact
            changes["identity"] = buyer.identity_id
        elif row["identity"] is None and buyer.identity_id is not None and contact == row["contact"]:
            changes["identity"] = buyer.identity_id
        elif contact != row["contact"]:
            flags.add("buyer_mismatch")
        changes["buyer"] = {**row["buyer"], **{k: v for k, v in buyer.named.items() if k not in row["buyer"]}}
    if row["contact"] is not None and await erased(tenant_id, row["contact"]):
        # The person asked to be erased after an earlier report: a later source still settles the order's
        # bookkeeping (amounts, ids, flags) but brings back nothing about them (commerce.privacy).
        for personal in ("items", "skus", "attach", "buyer"):
            changes.pop(personal, None)
    changes["flags"] = sorted(flags)
    await _update(tenant_id, row["id"], changes)
    p = await get_purchase(tenant_id, row["id"])
    await _attach_waiting_refunds(tenant_id, p)
    p = await get_purchase(tenant_id, row["id"])
    if "items" in changes:
        await products.learn(tenant_id, p["items"], p["currency"], p["paid_at"])
    await _timeline(tenant_id, p, buyer.channel if buyer else "mp", new=row["contact"] is None)
    await stats.refresh(tenant_id, [p["contact"]])
    return Recorded(p["id"], p["order_id"], p["contact"], created=False, first_report=True)


_JSON_COLUMNS = {"items", "buyer"}
_ARRAY_COLUMNS = {"skus", "sources", "flags"}


async def _update(tenant_id: int, purchase_id: int, changes: dict[str, Any]) -> None:
    names = sorted(changes)
    sets = []
    for i, name in enumerate(names):
        cast = "::jsonb" if name in _JSON_COLUMNS else "::varchar[]" if name in _ARRAY_COLUMNS else ""
        sets.append(f"{name} = ${i + 3}{cast}")
    values = [json.dumps(changes[n], ensure_ascii=False) if n in _JSON_COLUMNS else changes[n] for n in names]
    await db.execute(f"UPDATE commerce_purchase SET {', '.join(sets)}, updated_at = now() "
                     "WHERE tenant = $1 AND id = $2", tenant_id, purchase_id, *values)


async def _timeline(tenant_id: int, p: dict[str, Any], channel: str, new: bool) -> None:
    """The purchase's one timeline event (source key `purchase:<id>`): written when the purchase first has a
    contact, revised when a source adds to it (items, the paid amount, refunds)."""
    if p["contact"] is None:
        return
    key = f"purchase:{p['id']}"
    payload = _event_payload(p)
    added = await timeline.append(tenant_id, p["contact"] if p["identity"] is None else None, "purchase", channel,
                                  p["paid_at"], payload, key, identity_id=p["identity"])
    if added is None and not new:
        await timeline.revise_payload(tenant_id, key, payload)


# --- refunds -------------------------------------------------------------------------------------------------

def refund_transition(current: str | None, reported: str) -> str:
    """The one place refund statuses change: a new refund takes what is reported; `abnormal` (WeChat Pay needs
    the merchant to act) can still end `success` or `closed`; those two are final."""
    if reported not in REFUND_STATUSES:
        raise ValueError(reported)
    if current is None or current == "abnormal":
        return reported
    return current


@dataclass(frozen=True)
class RefundReport:
    source: str  # pay | api | import
    refund_id: str  # the brand's refund number (out_refund_no)
    amount_fen: int
    status: str  # success | abnormal | closed
    refunded_at: datetime | None
    wechat_refund_id: str | None = None
    order_id: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class RefundRecorded:
    refund_row_id: int
    purchase_id: int | None
    status: str
    created: bool
    changed: bool
    first_report: bool  # this source had not reported the refund before


async def do_record_refund(tenant_id: int, report: RefundReport, purchase_id: int | None = None) -> RefundRecorded:
    """Record a refund of the purchase `purchase_id` (the API names it) or of the order / transaction the
    report names (WeChat Pay). The backend may not refund more than is left of the purchase, nor report the
    same refund number with another amount (409 naming the field)."""

    async def attempt() -> RefundRecorded:
        if purchase_id is None:
            await _wait_lock(tenant_id, report.order_id, report.transaction_id)
        seen = await _refund_purchase(tenant_id, report, purchase_id, lock=False)
        if seen is not None and seen["contact"] is not None:
            await lock_live(tenant_id, int(seen["contact"]))
        purchase = await _refund_purchase(tenant_id, report, purchase_id, lock=True)
        if (purchase is None) != (seen is None) or (purchase is not None and seen is not None and (
                purchase["id"] != seen["id"] or purchase["contact"] != seen["contact"])):
            raise _Again()
        existing = await db.fetchrow(
            "SELECT id, purchase, amount_fen, status, sources FROM commerce_refund WHERE tenant = $1 AND "
            "(refund_id = $2 OR ($3::text IS NOT NULL AND wechat_refund_id = $3)) ORDER BY (refund_id = $2) DESC "
            "LIMIT 1 FOR UPDATE", tenant_id, report.refund_id, report.wechat_refund_id)
        if existing is not None and existing["purchase"] is not None and purchase is not None \
                and int(existing["purchase"]) != purchase["id"]:
            raise Conflict(N_("This refund number belongs to another order."), field="refund_id")
        if report.source in BACKEND and purchase is not None:
            already = int((await db.fetchrow(
                "SELECT COALESCE(sum(amount_fen), 0) AS n FROM commerce_refund WHERE tenant = $1 AND purchase = $2 "
                "AND status <> 'closed' AND id IS DISTINCT FROM $3", tenant_id, purchase["id"],
                existing["id"] if existing else None))["n"])
            if existing is not None and existing["amount_fen"] != report.amount_fen:
                raise Conflict(N_("This refund was reported with another amount."), field="amount_fen")
            if already + report.amount_fen > purchase["amount_fen"]:
                raise Conflict(N_("This is more than is left to refund of the purchase."), field="amount_fen")
        if existing is None:
            row = await db.fetchrow(
                "INSERT INTO commerce_refund (tenant, refund_id, wechat_refund_id, purchase, order_id, transaction_id, "
                "amount_fen, status, refunded_at, sources, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                "$8, $9, ARRAY[$10]::varchar[], now(), now()) ON CONFLICT DO NOTHING RETURNING id",
                tenant_id, report.refund_id, report.wechat_refund_id, purchase["id"] if purchase else None,
                report.order_id or (purchase["order_id"] if purchase else None), report.transaction_id,
                report.amount_fen, refund_transition(None, report.status), report.refunded_at, report.source)
            if row is None:
                raise _Again()
            refund_id, status, created, changed, first = int(row["id"]), report.status, True, True, True
        else:
            refund_id, created = int(existing["id"]), False
            first = report.source not in existing["sources"]
            status = refund_transition(existing["status"], report.status)
            sources = [s for s in SOURCES if s in existing["sources"] or s == report.source]
            changed = status != existing["status"] or sources != list(existing["sources"])
            if changed or (existing["purchase"] is None and purchase is not None):
                await db.execute(
                    "UPDATE commerce_refund SET status = $3, sources = $4::varchar[], purchase = COALESCE(purchase, $5), "
                    "wechat_refund_id = COALESCE(wechat_refund_id, $6), refunded_at = COALESCE($7, refunded_at), "
                    "transaction_id = COALESCE(transaction_id, $8), updated_at = now() WHERE tenant = $1 AND id = $2",
                    tenant_id, refund_id, status, sources, purchase["id"] if purchase else None,
                    report.wechat_refund_id, report.refunded_at if status != existing["status"] else None,
                    report.transaction_id)
        if purchase is not None:
            await _settle_refunds(tenant_id, purchase["id"])
            if status == "success" and report.source != "import" \
                    and (created or (existing is not None and existing["status"] != "success")):
                # re-engagement: the order leaves its journeys, refund journeys start (by job name, after commit)
                await effects.enqueue("engagement.on_refund", tenant_id, purchase["id"], refund_id,
                                      job_id=f"engagement:refund:{refund_id}")
        return RefundRecorded(refund_id, purchase["id"] if purchase else None, status, created, changed, first)

    return await _retrying(attempt)


async def _refund_purchase(tenant_id: int, report: RefundReport, purchase_id: int | None,
                           lock: bool) -> dict[str, Any] | None:
    suffix = " FOR UPDATE" if lock else ""
    if purchase_id is not None:
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM commerce_purchase WHERE tenant = $1 AND id = $2{suffix}",
                                tenant_id, purchase_id)
        if row is None:
            raise NotFound()
        return _purchase(row)
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM commerce_purchase WHERE tenant = $1 AND (($2::text IS NOT NULL AND transaction_id = $2) "
        "OR ($3::text IS NOT NULL AND (order_id = $3 OR out_trade_no = $3))) "
        f"ORDER BY (transaction_id IS NOT DISTINCT FROM $2) DESC, id LIMIT 1{suffix}",
        tenant_id, report.transaction_id, report.order_id)
    return _purchase(row) if row else None


async def _attach_waiting_refunds(tenant_id: int, p: dict[str, Any]) -> None:
    """Refunds WeChat Pay reported before this purchase was known (inside its writer's transaction)."""
    names = sorted({n for n in (p["order_id"], p["out_trade_no"]) if n})
    waiting = await db.fetch(
        "UPDATE commerce_refund SET purchase = $2, updated_at = now() WHERE tenant = $1 AND purchase IS NULL "
        "AND (order_id = ANY($3::varchar[]) OR ($4::text IS NOT NULL AND transaction_id = $4)) RETURNING id",
        tenant_id, p["id"], names, p["transaction_id"])
    if waiting:
        await _settle_refunds(tenant_id, p["id"])


async def _settle_refunds(tenant_id: int, purchase_id: int) -> None:
    """The purchase's refunded amount from its successful refunds, their timeline events, and the figures."""
    await db.execute(
        "UPDATE commerce_purchase p SET refunded_fen = r.total, updated_at = now() FROM (SELECT COALESCE(sum(amount_fen), 0) "
        "AS total FROM commerce_refund WHERE tenant = $1 AND purchase = $2 AND status = 'success') r "
        "WHERE p.tenant = $1 AND p.id = $2 AND p.refunded_fen <> r.total", tenant_id, purchase_id)
    p = await get_purchase(tenant_id, purchase_id)
    if p["contact"] is None:
        return
    for r in (await refunds_of(tenant_id, [purchase_id])).get(purchase_id, []):
        payload = {"order_id": p["order_id"], "refund_id": r["refund_id"], "amount_fen": r["amount_fen"],
                   "currency": p["currency"], "status": r["status"], "source": "+".join(r["sources"])}
        await timeline.append(tenant_id, p["contact"] if p["identity"] is None else None, "refund", "mp",
                              r["refunded_at"] or r["created_at"], payload, f"refund:{r['id']}:{r['status']}",
                              identity_id=p["identity"])
    await timeline.revise_payload(tenant_id, f"purchase:{p['id']}", _event_payload(p))
    await stats.refresh(tenant_id, [p["contact"]])


# --- merges carry purchases ----------------------------------------------------------------------------------

async def _move(tenant_id: int, merged_id: int, survivor_id: int) -> list[int]:
    rows = await db.fetch("UPDATE commerce_purchase SET contact = $3 WHERE tenant = $1 AND contact = $2 RETURNING id",
                          tenant_id, merged_id, survivor_id)
    await stats.refresh(tenant_id, [merged_id, survivor_id])
    return sorted(int(r["id"]) for r in rows)


async def _move_back(tenant_id: int, survivor_id: int, merged_id: int, purchase_ids: Sequence[int],
                     identity_ids: Sequence[int]) -> list[int]:
    rows = await db.fetch(
        "UPDATE commerce_purchase SET contact = $3 WHERE tenant = $1 AND contact = $2 "
        "AND (id = ANY($4::bigint[]) OR identity = ANY($5::int[])) RETURNING id",
        tenant_id, survivor_id, merged_id, list(purchase_ids), list(identity_ids))
    await stats.refresh(tenant_id, [merged_id, survivor_id])
    return sorted(int(r["id"]) for r in rows)


CARRIER = merge.Carrier("commerce.purchases", _move, _move_back)


def install() -> None:
    """Make merges carry purchases, and data-subject exports and erasures reach them (the composition roots
    call this once per process)."""
    from siyu.commerce import privacy as commerce_privacy
    from siyu.contacts import privacy

    merge.carry(CARRIER)
    privacy.hold(commerce_privacy.HOLDER)
