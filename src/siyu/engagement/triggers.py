"""What starts journeys: a purchase (and its replenishment date), a refund, a follow (OA follow, WeCom add),
inactivity for N days, entering a segment. Each handler is idempotent: the entry's key is the order, the
refund, the follow event, the inactive spell, the segment period.

Purchases and refunds arrive by job after commerce has committed them; follows after contacts has resolved
the callback (job by name, like the inbox's); inactivity and segments are evaluated by a cron, page by page
through the segments' keyset (by contact id), skipping people who entered with that key already.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from siyu.core import clock, db
from siyu.engagement import attribution, entries, journeys
from siyu.engagement.definition import Trigger as TriggerRule
from siyu.engagement.entries import Trigger
from siyu.engagement.rules import get_settings
from siyu.segments import services as segments
from siyu.segments.definition import Definition, Recency

log = logging.getLogger("siyu.engagement.triggers")

# A purchase paid longer ago than this starts no journey (history imports, a report days late): thanking
# someone for last year's order is not re-engagement. It still counts for attribution.
FRESH = timedelta(days=1)
PAGE = 500  # segments give at most 500 members a page


@dataclass(frozen=True)
class PurchaseFacts:
    purchase_id: int
    order_id: str
    contact_id: int | None
    amount_fen: int
    currency: str
    skus: tuple[str, ...]
    paid_at: datetime
    sources: tuple[str, ...]
    attach: str = ""
    first_order: bool = False
    replenish_days: dict[str, int] = field(default_factory=dict)  # SKU → days, for the SKUs that have one


def matches(rule: TriggerRule, p: PurchaseFacts) -> bool:
    if rule.skus and not set(rule.skus) & set(p.skus):
        return False
    if rule.min_fen is not None and p.amount_fen < rule.min_fen:
        return False
    if rule.max_fen is not None and p.amount_fen > rule.max_fen:
        return False
    if rule.order == "first" and not p.first_order or rule.order == "repeat" and p.first_order:
        return False
    return not (rule.sources and not set(rule.sources) & set(p.sources))


def replenish_at(p: PurchaseFacts, skus: tuple[str, ...] = ()) -> datetime | None:
    """When the first of the products bought (of `skus`, if given) runs out."""
    days = [d for sku, d in p.replenish_days.items() if d and (not skus or sku in skus)]
    return p.paid_at + timedelta(days=min(days)) if days else None


async def on_purchase(tenant_id: int, p: PurchaseFacts) -> int:
    """Credit conversions, then enter the purchase and replenishment journeys it matches. Returns entries."""
    if p.contact_id is None:
        return 0
    settings = await get_settings(tenant_id)
    await attribution.credit(tenant_id, attribution.Purchase(p.purchase_id, p.contact_id, p.amount_fen, p.currency,
                                                             p.paid_at, p.attach), settings.conversion_days)
    if clock.now() - p.paid_at > FRESH or set(p.sources) <= {"import"}:
        return 0
    entered = 0
    facts = {"purchase_id": p.purchase_id, "order_id": p.order_id, "amount_fen": p.amount_fen, "skus": list(p.skus)}
    for j in await journeys.active_by_trigger(tenant_id, ("purchase", "replenishment")):
        rule = j.definition.trigger
        if rule.kind == "purchase":
            if not matches(rule, p):
                continue
            when = replenish_at(p)
            trigger = Trigger(p.contact_id, p.order_id, p.paid_at, facts, replenish_at=when)
        else:
            if rule.skus and not set(rule.skus) & set(p.skus):
                continue
            when = replenish_at(p, rule.skus)
            if when is None:
                continue
            trigger = Trigger(p.contact_id, p.order_id, p.paid_at, {**facts, "replenish_at": when.isoformat()},
                              start=when)
        entered += await entries.enter(tenant_id, j, trigger) is not None
    return entered


async def on_refund(tenant_id: int, contact_id: int | None, order_id: str, refund_id: str, skus: tuple[str, ...],
                    at: datetime) -> int:
    """The order's entries leave journeys that exit on refunds; refund journeys start."""
    left = 0
    rows = await db.fetch(
        "SELECT e.id FROM engagement_entry e JOIN engagement_journey j ON j.tenant = e.tenant AND j.id = e.journey "
        "WHERE e.tenant = $1 AND e.trigger_key = $2 AND e.exited_at IS NULL AND j.status IN ('active', 'paused') "
        "AND COALESCE((j.definition->'exit'->>'refunded')::boolean, true)", tenant_id, order_id)
    for r in rows:
        left += await entries.do_exit(tenant_id, int(r["id"]), "refunded")
    if contact_id is not None:
        for j in await journeys.active_by_trigger(tenant_id, ("refund",)):
            if j.definition.trigger.skus and not set(j.definition.trigger.skus) & set(skus):
                continue
            await entries.enter(tenant_id, j, Trigger(contact_id, f"refund:{refund_id}", at,
                                                      {"order_id": order_id, "refund_id": refund_id}))
    return left


async def on_follow(tenant_id: int, contact_id: int, channel: str, event_id: int, at: datetime) -> int:
    entered = 0
    for j in await journeys.active_by_trigger(tenant_id, ("follow",)):
        if channel in j.definition.trigger.channels:
            entered += await entries.enter(tenant_id, j, Trigger(contact_id, f"follow:{channel}:{event_id}", at,
                                                                 {"channel": channel})) is not None
    return entered


# --- evaluated by the cron -----------------------------------------------------------------------------------

def _audience(j: journeys.JourneyRow) -> tuple[Definition, str] | None:
    rule = j.definition.trigger
    if rule.kind == "inactivity":
        recency = Recency("more_than", rule.days)
        d = Definition(last_purchase=recency) if rule.since == "purchase" else Definition(last_interaction=recency)
        return d, rule.since
    return None


async def evaluate(tenant_id: int, j: journeys.JourneyRow, now: datetime | None = None) -> int:
    """Enter everyone who matches an inactivity or segment journey now and has not entered with this key.
    Keys: an inactive spell is keyed by the last purchase (or interaction) it started from, so a person who
    comes back and lapses again enters again; a segment is keyed per re-entry period (once, without one)."""
    now = now or clock.now()
    rule = j.definition.trigger
    if rule.kind == "segment_entry":
        assert rule.segment_id is not None
        definition = (await segments.get_segment(tenant_id, rule.segment_id)).definition
    else:
        audience = _audience(j)
        if audience is None:
            return 0
        definition = audience[0]
    entered = 0
    after: int | None = None
    while True:
        page = await segments.members_of(tenant_id, definition, after, PAGE)
        wanted: dict[int, Trigger] = {}
        for c in page.contacts:
            if rule.kind == "segment_entry":
                period = int(now.timestamp() // 86400 // j.definition.reentry_days) if j.definition.reentry_days else 0
                key = f"segment:{rule.segment_id}:{period}"
            else:
                last = c["last_purchase_at"] if rule.since == "purchase" else c["last_interaction_at"]
                key = f"inactive:{rule.since}:{last.isoformat() if last else 'never'}"
            wanted[int(c["id"])] = Trigger(int(c["id"]), key, now, {"kind": rule.kind})
        if wanted:
            seen = await db.fetch(
                "SELECT contact, trigger_key FROM engagement_entry WHERE tenant = $1 AND journey = $2 "
                "AND contact = ANY($3::int[])", tenant_id, j.id, sorted(wanted))
            done = {(int(r["contact"]), r["trigger_key"]) for r in seen}
            for contact_id, trigger in wanted.items():
                if (contact_id, trigger.key) not in done:
                    entered += await entries.enter(tenant_id, j, trigger) is not None
        if page.next_after is None:
            break
        after = page.next_after
    await db.execute("UPDATE engagement_journey SET evaluated_at = $3 WHERE tenant = $1 AND id = $2",
                     tenant_id, j.id, now)
    return entered


async def journeys_to_evaluate(now: datetime, every: timedelta) -> list[tuple[int, int]]:
    rows = await db.fetch(
        "SELECT tenant, id FROM engagement_journey WHERE status = 'active' AND trigger_kind IN ('inactivity', "
        "'segment_entry') AND (evaluated_at IS NULL OR evaluated_at < $1) ORDER BY evaluated_at NULLS FIRST LIMIT 50",
        now - every)
    return [(int(r["tenant"]), int(r["id"])) for r in rows]
