"""Segments by purchase figures: spend (net of refunds), orders, products bought or not, first purchase within
N days; through the services, the editor's form (amounts typed in yuan) and the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from siyu.commerce import buyers, purchases
from siyu.contacts import services as contacts
from siyu.core import clock
from siyu.segments import services as segments
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR


@pytest.fixture
async def shop(acme: TenantFixture) -> dict[str, int]:
    """ann: 2 orders (300 + 200 yuan, TEA), first 100 days ago; bob: 1 order of 50 yuan (CUP), 5 days ago;
    cyd: one 80-yuan order wholly refunded (TEA); dan: never bought."""
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    now = clock.now()
    people: dict[str, int] = {}
    for name in ("ann", "bob", "cyd", "dan"):
        people[name] = await contacts.resolve_identity(acme.id, "mp", f"o{name}00000000000000000000001")

    async def buy(who: str, order_id: str, fen: int, sku: str, days_ago: int) -> None:
        buyer = await buyers.by_contact_id(acme.id, people[who])
        await purchases.do_record_payment(acme.id, purchases.Payment(
            source="api", order_id=order_id, amount_fen=fen, currency="CNY", paid_at=now - timedelta(days=days_ago),
            items=[{"sku": sku, "name": sku, "quantity": 1, "unit_price_fen": fen}]), buyer)

    await buy("ann", "A-1", 30000, "TEA", 100)
    await buy("ann", "A-2", 20000, "TEA", 10)
    await buy("bob", "B-1", 5000, "CUP", 5)
    await buy("cyd", "C-1", 8000, "TEA", 20)
    order = await purchases.get_by_order(acme.id, "C-1")
    await purchases.do_record_refund(acme.id, purchases.RefundReport(
        source="api", refund_id="CR-1", amount_fen=8000, status="success", refunded_at=now), purchase_id=order["id"])
    return people


async def selected(tenant_id: int, people: dict[str, int], definition: dict[str, Any]) -> str:
    d = await segments.validate_definition(tenant_id, definition)
    page = await segments.members_of(tenant_id, d, limit=50)
    ids = {c["id"] for c in page.contacts}
    assert await segments.count(tenant_id, d) == len(ids)
    return "".join(name[0] for name, cid in people.items() if cid in ids)


CASES = [
    ("spent at least 100 yuan", {"spent": {"at_least": 10000}}, "a"),
    ("spent at most 100 yuan (refunded and never count as 0)", {"spent": {"at_most": 10000}}, "bcd"),
    ("spent between 10 and 100 yuan", {"spent": {"at_least": 1000, "at_most": 10000}}, "b"),
    ("at least 2 orders", {"orders": {"at_least": 2}}, "a"),
    ("no orders", {"orders": {"at_most": 0}}, "cd"),
    ("bought TEA (a wholly refunded order does not count)", {"bought": {"skus": ["TEA"]}}, "a"),
    ("bought TEA or CUP", {"bought": {"skus": ["TEA", "CUP"], "match": "any"}}, "ab"),
    ("bought TEA and CUP", {"bought": {"skus": ["TEA", "CUP"], "match": "all"}}, ""),
    ("never bought TEA", {"not_bought": ["TEA"]}, "bcd"),
    ("first purchase within 30 days", {"first_purchase": {"op": "within", "days": 30}}, "bc"),
    ("first purchase more than 30 days ago", {"first_purchase": {"op": "more_than", "days": 30}}, "a"),
    ("no first purchase within 30 days", {"first_purchase": {"op": "not_within", "days": 30}}, "ad"),
    ("never purchased", {"first_purchase": {"op": "never"}}, "d"),
    ("with other filters", {"channels": ["mp"], "spent": {"at_least": 1}, "last_purchase": {"op": "within", "days": 7}},
     "b"),
]


@pytest.mark.parametrize(("case", "definition", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_segments_filter_on_purchase_figures(acme: TenantFixture, shop: dict[str, int], case: str,
                                                   definition: dict[str, Any], expected: str) -> None:
    assert await selected(acme.id, shop, definition) == expected


async def test_the_editor_takes_yuan_and_shows_the_filters_in_words(acme_agent: Client, acme: TenantFixture,
                                                                    shop: dict[str, int]) -> None:
    form = {"name": "Tea lovers", "spent.at_least": "150.5", "bought": "TEA, CUP", "bought.match": "any",
            "first_purchase": "more_than", "first_purchase.days": "30"}
    r = await acme_agent.form("/segments/preview", form, htmx=True)
    assert r.status_code == 200 and "<strong>1</strong>" in r.text
    r = await acme_agent.form("/segments", form)
    assert r.status_code == 303, r.text
    sid = int(r.headers["location"].rsplit("/", 1)[1])
    saved = (await segments.get_segment(acme.id, sid)).definition
    assert saved.spent is not None and (saved.spent.at_least, saved.spent.at_most) == (15050, None)
    assert saved.bought == ("TEA", "CUP")
    assert saved.first_purchase is not None and (saved.first_purchase.op, saved.first_purchase.days) == ("more_than", 30)
    page = await acme_agent.get(f"/segments/{sid}")
    assert 'value="150.50"' in page.text and 'value="TEA, CUP"' in page.text
    listing = await acme_agent.get("/segments")
    assert "≥ ¥150.50" in listing.text and "Bought any of:" in listing.text
    bad = await acme_agent.form("/segments/preview", {"spent.at_least": "lots", "orders.at_least": "x"}, htmx=True)
    assert bad.status_code == 200 and "Spent at least" in bad.text and "At least … orders" in bad.text


async def test_the_segments_api_returns_the_purchase_filters(client: Client, acme: TenantFixture,
                                                             shop: dict[str, int]) -> None:
    sid = await segments.do_create_segment(acme.id, "Big spenders", {"spent": {"at_least": 10000}}, ACTOR)
    _, key = await tenants.do_create_api_key(ACTOR, acme.id, "k")
    r = await client.get(f"/api/v1/segments/{sid}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json()["definition"]["spent"] == {"at_least": 10000, "at_most": None}
    assert r.json()["count"] == 1
