"""What re-engagement reads of commerce, in one place: a purchase as the facts its triggers and attribution
need (with the buyer's order count and the products' replenishment intervals), and a refund's order. Commerce
hands purchases and refunds over after commit by job name (`engagement.on_purchase`, `engagement.on_refund`);
this is the only engagement module that imports it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from siyu.commerce import products, stats
from siyu.commerce import purchases as commerce
from siyu.core.errors import NotFound
from siyu.engagement.triggers import PurchaseFacts


async def facts(tenant_id: int, purchase_id: int) -> PurchaseFacts | None:
    try:
        p = await commerce.get_purchase(tenant_id, purchase_id)
    except NotFound:
        return None
    contact = p["contact"]
    first = contact is not None and (await stats.figures(tenant_id, int(contact))).orders <= 1
    days: dict[str, int] = {}
    for sku in p["skus"]:
        found, _ = await products.list_products(tenant_id, q=sku, limit=20)
        match = next((x for x in found if x["sku"] == sku and x["replenish_days"]), None)
        if match is not None:
            days[sku] = int(match["replenish_days"])
    return PurchaseFacts(int(p["id"]), p["order_id"], int(contact) if contact is not None else None,
                         int(p["amount_fen"]), p["currency"], tuple(p["skus"]), p["paid_at"], tuple(p["sources"]),
                         p["attach"] or "", first, days)


@dataclass(frozen=True)
class RefundFacts:
    refund_id: str
    order_id: str
    contact_id: int | None
    skus: tuple[str, ...]
    status: str
    at: datetime | None


async def refund_facts(tenant_id: int, purchase_id: int, refund_row_id: int) -> RefundFacts | None:
    """A refund of a purchase (by its row id) with the purchase's order, buyer and SKUs."""
    try:
        p = await commerce.get_purchase(tenant_id, purchase_id)
    except NotFound:
        return None
    refund = next((r for r in (await commerce.refunds_of(tenant_id, [p["id"]])).get(p["id"], [])
                   if int(r["id"]) == refund_row_id), None)
    if refund is None:
        return None
    return RefundFacts(refund["refund_id"], p["order_id"], int(p["contact"]) if p["contact"] is not None else None,
                       tuple(p["skus"]), refund["status"], refund["refunded_at"])
