"""Products, learned from the purchases' items: SKU, the newest name and unit price. An admin sets how many
days a customer takes to run out of one (the re-engagement rules' replenishment reminder reads it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit

MAX_REPLENISH_DAYS = 3650
PAGE = 50


async def learn(tenant_id: int, items: list[dict[str, Any]], currency: str, at: datetime) -> None:
    """Note the items' products (inside the purchase's transaction). A product's name and price change only
    for a newer sale that says something different: an old order reported late never overwrites them, and
    a repeat sale of the same product writes nothing (popular products are not a point of contention)."""
    latest: dict[str, dict[str, Any]] = {}
    for item in items:
        latest[item["sku"]] = item  # the last line of a SKU in the order wins
    if not latest:
        return
    skus = sorted(latest)  # one lock order for concurrent orders sharing products
    names = [latest[s].get("name") or "" for s in skus]
    prices = [latest[s].get("unit_price_fen") for s in skus]
    await db.execute(
        "INSERT INTO commerce_product (tenant, sku, name, last_price_fen, currency, price_at, first_sold_at, "
        "created_at, updated_at) SELECT $1, u.sku, u.name, u.price, $4, $5, $5, now(), now() "
        "FROM unnest($2::varchar[], $3::varchar[], $6::bigint[]) AS u(sku, name, price) "
        "ON CONFLICT (tenant, sku) DO NOTHING", tenant_id, skus, names, currency, at, prices)
    await db.execute(
        "UPDATE commerce_product p SET name = CASE WHEN u.name <> '' THEN u.name ELSE p.name END, "
        "last_price_fen = COALESCE(u.price, p.last_price_fen), currency = $4, price_at = $5, updated_at = now() "
        "FROM unnest($2::varchar[], $3::varchar[], $6::bigint[]) AS u(sku, name, price) "
        "WHERE p.tenant = $1 AND p.sku = u.sku AND p.price_at < $5 AND ((u.name <> '' AND u.name <> p.name) "
        "OR u.price IS DISTINCT FROM p.last_price_fen AND u.price IS NOT NULL OR p.currency <> $4)",
        tenant_id, skus, names, currency, at, prices)
    await db.execute(
        "UPDATE commerce_product SET first_sold_at = $3 WHERE tenant = $1 AND sku = ANY($2::varchar[]) "
        "AND first_sold_at > $3", tenant_id, skus, at)


async def learn_many(tenant_id: int, sales: list[dict[str, Any]]) -> None:
    """`learn` for many orders at once (a history import): per SKU its newest sale's name, price and currency
    (`sku, name, unit_price_fen, currency, at`) and its first sale (`first_at`). The same rules: an older sale
    never overwrites a newer one's name or price."""
    if not sales:
        return
    sales = sorted(sales, key=lambda s: s["sku"])  # one lock order for concurrent writers sharing products
    args = (tenant_id, [s["sku"] for s in sales], [s.get("name") or "" for s in sales],
            [s.get("unit_price_fen") for s in sales], [s["currency"] for s in sales], [s["at"] for s in sales],
            [s["first_at"] for s in sales])
    rows = "unnest($2::varchar[], $3::varchar[], $4::bigint[], $5::varchar[], $6::timestamptz[], $7::timestamptz[]) " \
           "AS u(sku, name, price, currency, at, first_at)"
    await db.execute(
        "INSERT INTO commerce_product (tenant, sku, name, last_price_fen, currency, price_at, first_sold_at, "
        f"created_at, updated_at) SELECT $1, u.sku, u.name, u.price, u.currency, u.at, u.first_at, now(), now() FROM {rows} "
        "ON CONFLICT (tenant, sku) DO NOTHING", *args)
    await db.execute(
        "UPDATE commerce_product p SET name = CASE WHEN u.name <> '' THEN u.name ELSE p.name END, "
        "last_price_fen = COALESCE(u.price, p.last_price_fen), currency = u.currency, price_at = u.at, "
        f"updated_at = now() FROM {rows} WHERE p.tenant = $1 AND p.sku = u.sku AND p.price_at < u.at "
        "AND ((u.name <> '' AND u.name <> p.name) OR u.price IS DISTINCT FROM p.last_price_fen AND u.price IS NOT NULL "
        "OR p.currency <> u.currency)", *args)
    await db.execute(
        f"UPDATE commerce_product p SET first_sold_at = u.first_at FROM {rows} WHERE p.tenant = $1 AND p.sku = u.sku "
        "AND p.first_sold_at > u.first_at", *args)


async def list_products(tenant_id: int, q: str = "", after_sku: str | None = None,
                        limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """Products by SKU in keyset pages; `q` finds SKUs and names containing it."""
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" if q else None
    rows = await db.fetch(
        "SELECT id, sku, name, last_price_fen, currency, price_at, replenish_days, first_sold_at FROM commerce_product "
        "WHERE tenant = $1 AND ($2::text IS NULL OR sku > $2) AND ($3::text IS NULL OR sku ILIKE $3 OR name ILIKE $3) "
        "ORDER BY sku LIMIT $4", tenant_id, after_sku, like, limit + 1)
    found = [dict(r) for r in rows[:limit]]
    return found, (found[-1]["sku"] if len(rows) > limit else None)


async def get_product(tenant_id: int, product_id: int) -> dict[str, Any]:
    if not 0 < product_id < 2**31:
        raise NotFound()
    row = await db.fetchrow("SELECT id, sku, name, last_price_fen, currency, price_at, replenish_days, first_sold_at "
                            "FROM commerce_product WHERE tenant = $1 AND id = $2", tenant_id, product_id)
    if row is None:
        raise NotFound()
    return dict(row)


def parse_days(raw: str) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4 or not 1 <= int(raw) <= MAX_REPLENISH_DAYS:
        raise InvalidInput.one("replenish_days", N_("Enter a whole number of days from 1 to {max}, or leave it empty."),
                               max=MAX_REPLENISH_DAYS)
    return int(raw)


async def do_set_replenish_days(tenant_id: int, product_id: int, days: int | None, actor: Actor) -> dict[str, Any]:
    async with db.transaction():
        row = await db.fetchrow(
            "UPDATE commerce_product SET replenish_days = $3, updated_at = now() WHERE tenant = $1 AND id = $2 "
            "RETURNING sku, (SELECT replenish_days FROM commerce_product WHERE tenant = $1 AND id = $2) AS before",
            tenant_id, product_id, days)
        if row is None:
            raise NotFound()
        if row["before"] != days:
            await record_audit(actor, tenant_id, "product.replenish_days", "product", product_id,
                               {"sku": row["sku"], "replenish_days": [row["before"], days]})
    return await get_product(tenant_id, product_id)
