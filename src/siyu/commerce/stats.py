"""Each contact's purchase figures: orders, spend net of refunds, first and last purchase, average order
value, the products bought.

`commerce_contact_stats` holds them per contact, recomputed from the contact's purchases by `refresh` in the
transaction of every change to those purchases (the writers hold the contact's lock, so two changes never
interleave) and on merges. Definitions:
- an order is a purchase not wholly refunded;
- spend is CNY paid net of refunds (WeChat Pay's mainland currency; purchases in another currency count as
  orders but not in the spend);
- first / last purchase: the earliest and latest payment time of any purchase;
- products bought: SKUs of purchases not wholly refunded.

`segment_*` give the SQL conditions the segments domain uses to filter contacts on these figures; they name
only this domain's table and take every value as a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.core import db

SPEND_CURRENCY = "CNY"
_COUNTS = "(p.refunded_fen < p.amount_fen OR p.amount_fen = 0)"  # not wholly refunded

_REFRESH = f"""
INSERT INTO commerce_contact_stats (tenant, contact, orders, spent_fen, first_purchase_at, last_purchase_at, skus,
    updated_at)
SELECT $1, p.contact, count(*) FILTER (WHERE {_COUNTS}),
    COALESCE(sum(p.amount_fen - LEAST(p.refunded_fen, p.amount_fen)) FILTER (WHERE p.currency = '{SPEND_CURRENCY}'), 0),
    min(p.paid_at), max(p.paid_at),
    ARRAY(SELECT DISTINCT s FROM commerce_purchase q, unnest(q.skus) AS s WHERE q.tenant = $1 AND q.contact = p.contact
          AND (q.refunded_fen < q.amount_fen OR q.amount_fen = 0) ORDER BY s),
    now()
FROM commerce_purchase p WHERE p.tenant = $1 AND p.contact = ANY($2::int[]) GROUP BY p.contact
ON CONFLICT (tenant, contact) DO UPDATE SET orders = EXCLUDED.orders, spent_fen = EXCLUDED.spent_fen,
    first_purchase_at = EXCLUDED.first_purchase_at, last_purchase_at = EXCLUDED.last_purchase_at,
    skus = EXCLUDED.skus, updated_at = now()
"""


async def refresh(tenant_id: int, contact_ids: Iterable[int | None]) -> None:
    """Recompute the figures of these contacts from their purchases (inside the writer's transaction)."""
    ids = sorted({int(c) for c in contact_ids if c is not None})
    if not ids:
        return
    await db.execute(_REFRESH, tenant_id, ids)
    await db.execute(
        "DELETE FROM commerce_contact_stats s WHERE s.tenant = $1 AND s.contact = ANY($2::int[]) AND NOT EXISTS "
        "(SELECT 1 FROM commerce_purchase p WHERE p.tenant = $1 AND p.contact = s.contact)", tenant_id, ids)


@dataclass(frozen=True)
class Figures:
    orders: int
    spent_fen: int
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    skus: list[str]

    @property
    def average_fen(self) -> int | None:
        """Average order value in fen (rounded down), None before the first order."""
        return self.spent_fen // self.orders if self.orders else None


NONE = Figures(0, 0, None, None, [])


async def figures(tenant_id: int, contact_id: int) -> Figures:
    row = await db.fetchrow(
        "SELECT orders, spent_fen, first_purchase_at, last_purchase_at, skus FROM commerce_contact_stats "
        "WHERE tenant = $1 AND contact = $2", tenant_id, contact_id)
    if row is None:
        return NONE
    return Figures(int(row["orders"]), int(row["spent_fen"]), row["first_purchase_at"], row["last_purchase_at"],
                   list(row["skus"] or []))


# --- for segments --------------------------------------------------------------------------------------------

Add = Callable[[Any], str]  # keeps a value as a query parameter and returns its placeholder

_STATS = "SELECT 1 FROM commerce_contact_stats s WHERE s.tenant = c.tenant AND s.contact = c.id"


def segment_spent(add: Add, at_least: int | None, at_most: int | None) -> str:
    """Contacts (alias `c`) whose spend lies within the bounds; a contact without purchases spent 0."""
    parts = []
    if at_least is not None and at_least > 0:
        parts.append(f"EXISTS ({_STATS} AND s.spent_fen >= {add(at_least)})")
    if at_most is not None:
        parts.append(f"NOT EXISTS ({_STATS} AND s.spent_fen > {add(at_most)})")
    return " AND ".join(parts) or "TRUE"


def segment_orders(add: Add, at_least: int | None, at_most: int | None) -> str:
    parts = []
    if at_least is not None and at_least > 0:
        parts.append(f"EXISTS ({_STATS} AND s.orders >= {add(at_least)})")
    if at_most is not None:
        parts.append(f"NOT EXISTS ({_STATS} AND s.orders > {add(at_most)})")
    return " AND ".join(parts) or "TRUE"


def segment_bought(add: Add, skus: list[str], match_all: bool) -> str:
    """Contacts who bought any (or all) of these SKUs and did not have those purchases wholly refunded."""
    op = "@>" if match_all else "&&"
    return f"EXISTS ({_STATS} AND s.skus {op} {add(skus)}::varchar[])"


def segment_not_bought(add: Add, skus: list[str]) -> str:
    return f"NOT EXISTS ({_STATS} AND s.skus && {add(skus)}::varchar[])"


def segment_first_purchase(add: Add, op: str, cutoff: datetime | None) -> str:
    """`within`: the first purchase is at or after the cutoff; `more_than`: before it; `not_within`: before it
    or never; `never`: no purchase at all."""
    if op == "never":
        return f"NOT EXISTS ({_STATS})"
    placeholder = add(cutoff)
    if op == "within":
        return f"EXISTS ({_STATS} AND s.first_purchase_at >= {placeholder})"
    if op == "more_than":
        return f"EXISTS ({_STATS} AND s.first_purchase_at < {placeholder})"
    return f"NOT EXISTS ({_STATS} AND s.first_purchase_at >= {placeholder})"


# --- the contact page -----------------------------------------------------------------------------------------

RECENT = 5


async def summary(tenant_id: int, contact_id: int) -> dict[str, Any]:
    """What the contact page shows of a person's purchases: the figures, the products bought (with their
    names) and the newest purchases."""
    f = await figures(tenant_id, contact_id)
    names = {r["sku"]: r["name"] for r in await db.fetch(
        "SELECT sku, name FROM commerce_product WHERE tenant = $1 AND sku = ANY($2::varchar[])", tenant_id, f.skus)}
    recent = [dict(r) for r in await db.fetch(
        "SELECT order_id, amount_fen, currency, paid_at, refunded_fen, sources, flags FROM commerce_purchase "
        "WHERE tenant = $1 AND contact = $2 ORDER BY paid_at DESC, id DESC LIMIT $3", tenant_id, contact_id, RECENT)]
    return {"figures": f, "products": [(sku, names.get(sku, "")) for sku in f.skus], "recent": recent}
