"""A person's purchases in data-subject requests: contacts' export and erasure call these through the
`Holder` registered under the name "purchases" (contacts never names commerce or its tables).

The erasure follows contacts' rule: identifiers and the shape of the history stay, what says something about
the person goes. A purchase keeps its order id, amounts, times and refunds (the brand's bookkeeping, and the
person's figures: order count and spend); it loses what was bought (items and SKUs), the order's free-text
`attach`, how the sources named the buyer, and the decrypted WeChat Pay notifications about it keep only
what makes a retry recognisable (their unique key), not the payer or the order's details.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from siyu.commerce import stats
from siyu.contacts import privacy
from siyu.core import db

NAME = "purchases"


async def export_purchases(tenant_id: int, contact_id: int) -> list[dict[str, Any]]:
    """The contact's purchases, oldest first, each with its refunds."""
    rows = await db.fetch(
        "SELECT id, order_id, out_trade_no, transaction_id, amount_fen, currency, api_amount_fen, api_currency, "
        "pay_amount_fen, payer_total_fen, items::text AS items, sources, paid_at, refunded_fen, flags, attach, "
        "buyer::text AS buyer, created_at, updated_at FROM commerce_purchase WHERE tenant = $1 AND contact = $2 "
        "ORDER BY paid_at, id", tenant_id, contact_id)
    refunds: dict[int, list[dict[str, Any]]] = {}
    for r in await db.fetch(
            "SELECT purchase, refund_id, wechat_refund_id, amount_fen, status, refunded_at, sources, created_at "
            "FROM commerce_refund WHERE tenant = $1 AND purchase = ANY($2::bigint[]) ORDER BY created_at, id",
            tenant_id, [int(p["id"]) for p in rows]):
        refund = {k: v for k, v in dict(r).items() if k != "purchase"}
        refunds.setdefault(int(r["purchase"]), []).append({**refund, "sources": list(r["sources"] or [])})
    return [{**{k: v for k, v in dict(p).items() if k != "id"}, "items": json.loads(p["items"]),
             "buyer": json.loads(p["buyer"]), "sources": list(p["sources"] or []), "flags": list(p["flags"] or []),
             "refunds": refunds.get(int(p["id"]), [])} for p in rows]


async def erase_purchases(tenant_id: int, contact_ids: Sequence[int]) -> int:
    """Erase the personal part of these contacts' purchases and of the WeChat Pay notifications about them
    (see the module's docstring); returns how many purchases changed. Again: nothing more changes."""
    contacts = sorted({int(c) for c in contact_ids})
    rows = await db.fetch(
        "UPDATE commerce_purchase SET items = '[]'::jsonb, skus = '{}', attach = '', buyer = '{}'::jsonb, "
        "updated_at = now() WHERE tenant = $1 AND contact = ANY($2::int[]) "
        "AND (items <> '[]'::jsonb OR skus <> '{}' OR attach <> '' OR buyer <> '{}'::jsonb) RETURNING id",
        tenant_id, contacts)
    # Every notification about their payments and refunds, changed or not this time (a notification stored
    # after an earlier erasure is erased by the next request too).
    await db.execute(
        "UPDATE commerce_pay_notification n SET resource = '{\"erased\": true}'::jsonb "
        "WHERE n.tenant = $1 AND n.processed_at IS NOT NULL AND n.resource <> '{\"erased\": true}'::jsonb "
        "AND n.resource_key IN (SELECT p.transaction_id FROM commerce_purchase p WHERE p.tenant = $1 "
        "    AND p.contact = ANY($2::int[]) AND p.transaction_id IS NOT NULL "
        "  UNION SELECT r.wechat_refund_id FROM commerce_refund r JOIN commerce_purchase p "
        "    ON p.tenant = r.tenant AND p.id = r.purchase WHERE r.tenant = $1 AND p.contact = ANY($2::int[]) "
        "    AND r.wechat_refund_id IS NOT NULL)", tenant_id, contacts)
    if rows:
        await stats.refresh(tenant_id, contacts)  # the products they bought go from their figures
    return len(rows)


HOLDER = privacy.Holder(NAME, export_purchases, erase_purchases)
