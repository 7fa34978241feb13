"""Commerce on the pages: the contact page's purchase summary and timeline entries."""

from __future__ import annotations

import pytest

from siyu.commerce import buyers, purchases
from siyu.contacts import services as contacts
from siyu.core import clock
from tests.conftest import Client, TenantFixture

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def bought(tenant_id: int, contact_id: int, order_id: str, fen: int, sku: str = "TEA-01",
                 name: str = "Oolong") -> None:
    buyer = await buyers.by_contact_id(tenant_id, contact_id)
    await purchases.do_record_payment(tenant_id, purchases.Payment(
        source="api", order_id=order_id, amount_fen=fen, currency="CNY", paid_at=clock.now(),
        items=[{"sku": sku, "name": name, "quantity": 2, "unit_price_fen": fen // 2}]), buyer)


async def test_the_contact_page_shows_the_purchase_figures_and_the_timeline_entries(
        acme_admin: Client, acme: TenantFixture) -> None:
    # The admin sees every contact; an agent sees only those in their data scope (tested apart).
    cid = await contacts.resolve_identity(acme.id, "mp", "oPageBuyer000000000000000001")
    page = await acme_admin.get(f"/contacts/{cid}")
    assert 'id="contact-purchases"' in page.text and "No purchases yet." in page.text
    await bought(acme.id, cid, "P-1", 12000)
    await bought(acme.id, cid, "P-2", 3000, sku="CUP-1", name="Cup")
    page = await acme_admin.get(f"/contacts/{cid}")
    assert page.status_code == 200
    section = page.text.split('id="contact-purchases"', 1)[1].split("</section>", 1)[0]
    for shown in ("<dd>2</dd>", "¥150.00", "¥75.00", "Oolong", "Cup", "P-1", "P-2"):
        assert shown in section, shown
    assert "2 × Oolong" in page.text  # the purchase on the timeline, with its items
    # htmx asks for the timeline only: no summary is computed or sent.
    fragment = await acme_admin.hx_get(f"/contacts/{cid}?kind=purchase")
    assert fragment.status_code == 200 and "contact-purchases" not in fragment.text and "P-1" in fragment.text


# --- the purchases page ------------------------------------------------------------------------------------------

@pytest.fixture
async def orders(acme: TenantFixture) -> dict[str, int]:
    """Five orders over five days (Shanghai time), one refunded in part, one wholly, one flagged."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    sh = ZoneInfo("Asia/Shanghai")
    people = {n: await contacts.resolve_identity(acme.id, "mp", f"o{n}0000000000000000000000001") for n in "ab"}
    specs = [("SO-100", "a", 1000, 1, "api"), ("SO-101", "a", 5000, 2, "api"), ("SO-102", "b", 20000, 3, "api"),
             ("=HYPERLINK(1)", "b", 300, 4, "import"), ("SO-200", "a", 9900, 5, "api")]
    for order_id, who, fen, day, source in specs:
        buyer = await buyers.by_contact_id(acme.id, people[who])
        await purchases.do_record_payment(acme.id, purchases.Payment(
            source=source, order_id=order_id, amount_fen=fen, currency="CNY",
            paid_at=datetime(2026, 11, day, 23, 30, tzinfo=sh), items=[{"sku": "T", "name": "茶", "quantity": 1}]), buyer)
    p101 = await purchases.get_by_order(acme.id, "SO-101")
    await purchases.do_record_refund(acme.id, purchases.RefundReport("api", "R1", 1000, "success", clock.now()),
                                     purchase_id=p101["id"])
    p100 = await purchases.get_by_order(acme.id, "SO-100")
    await purchases.do_record_refund(acme.id, purchases.RefundReport("api", "R2", 1000, "success", clock.now()),
                                     purchase_id=p100["id"])
    from siyu.core import db

    await db.execute("UPDATE commerce_purchase SET flags = '{amount_mismatch}', api_amount_fen = 21000 "
                     "WHERE order_id = 'SO-102'")
    return people


def listed(html: str) -> list[str]:
    import re

    return re.findall(r'<tr class="purchase-row">\s*<td><code>([^<]+)</code>', html)


FILTERS = [
    ("", ["SO-200", "=HYPERLINK(1)", "SO-102", "SO-101", "SO-100"]),
    ("q=SO-1", ["SO-102", "SO-101", "SO-100"]),
    ("q=SO-101", ["SO-101"]),
    ("from=2026-11-02&to=2026-11-03", ["SO-102", "SO-101"]),  # 23:30 in Shanghai is the same day there
    ("min=50&max=200", ["SO-200", "SO-102", "SO-101"]),
    ("source=import", ["=HYPERLINK(1)"]),
    ("refunded=partly", ["SO-101"]),
    ("refunded=fully", ["SO-100"]),
    ("refunded=no", ["SO-200", "=HYPERLINK(1)", "SO-102"]),
    ("flagged=1", ["SO-102"]),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS, ids=[q or "all" for q, _ in FILTERS])
async def test_the_purchases_page_filters(acme_admin: Client, orders: dict[str, int], query: str,
                                          expected: list[str]) -> None:
    page = await acme_admin.get(f"/purchases?{query}")
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html>")
    assert listed(page.text) == expected
    fragment = await acme_admin.hx_get(f"/purchases?{query}")
    assert fragment.text.lstrip().startswith('<div id="results">') and listed(fragment.text) == expected


async def test_the_purchases_page_pages_by_keyset_and_flags_mismatches(acme_admin: Client, orders: dict[str, int],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.commerce import listing

    monkeypatch.setattr(listing, "PAGE", 2)
    first = await acme_admin.get("/purchases")
    assert listed(first.text) == ["SO-200", "=HYPERLINK(1)"]
    import re

    seen = listed(first.text)
    more = re.search(r'hx-get="(/purchases\?[^"]+)"', first.text)
    while more:
        nxt = await acme_admin.hx_get(more.group(1).replace("&amp;", "&"))
        assert not nxt.text.lstrip().startswith("<div")  # just the rows
        seen += listed(nxt.text)
        more = re.search(r'hx-get="(/purchases\?[^"]+)"', nxt.text)
    assert seen == ["SO-200", "=HYPERLINK(1)", "SO-102", "SO-101", "SO-100"]
    flagged = await acme_admin.get("/purchases?flagged=1")
    assert "The backend reported another amount: 210.00" in flagged.text


@pytest.mark.parametrize("query", ["from=2026-13-01", "min=lots", "source=fax", "refunded=maybe", "cursor=%%%"])
async def test_wrong_filters_are_named(acme_admin: Client, orders: dict[str, int], query: str) -> None:
    r = await acme_admin.get(f"/purchases?{query}")
    assert r.status_code == 400
    assert listed(r.text) == []


async def test_the_csv_export(acme_admin: Client, orders: dict[str, int]) -> None:
    import csv
    import io

    r = await acme_admin.get("/purchases/export.csv?refunded=no")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["order_id", "transaction_id", "paid_at", "amount"]
    assert [row[0] for row in rows[1:]] == ["SO-200", "'=HYPERLINK(1)", "SO-102"]  # no formula reaches a spreadsheet
    assert rows[1][3] == "99.00" and rows[1][2] == "2026-11-05T23:30:00+08:00" and rows[1][10] == "T x1"
    from siyu.core import db

    assert await db.fetchrow("SELECT 1 FROM audit_log WHERE action = 'purchases.exported'") is not None


async def test_agents_do_not_see_the_purchases_pages(acme_agent: Client, orders: dict[str, int]) -> None:
    for url in ("/purchases", "/purchases/export.csv", "/products"):
        assert (await acme_agent.get(url)).status_code == 403


# --- products ----------------------------------------------------------------------------------------------------

async def test_products_are_learned_and_an_admin_sets_the_replenishment_interval(acme_admin: Client,
                                                                                acme: TenantFixture) -> None:
    cid = await contacts.resolve_identity(acme.id, "mp", "oProd000000000000000000000001")
    await bought(acme.id, cid, "P-1", 6000, sku="TEA-01", name="Oolong 250 g")
    page = await acme_admin.get("/products")
    assert "TEA-01" in page.text and "Oolong 250 g" in page.text and "30.00 CNY" in page.text
    from siyu.core import db

    pid = int((await db.fetchrow("SELECT id FROM commerce_product"))["id"])
    r = await acme_admin.form(f"/products/{pid}", {"replenish_days": "45"}, htmx=True)
    assert r.status_code == 200 and r.text.lstrip().startswith(f'<tr id="product-{pid}">') and 'value="45"' in r.text
    assert (await db.fetchrow("SELECT replenish_days FROM commerce_product"))["replenish_days"] == 45
    for bad in ("0", "3651", "two weeks", "1.5"):
        r = await acme_admin.form(f"/products/{pid}", {"replenish_days": bad}, htmx=True)
        assert r.status_code == 400 and "from 1 to 3650" in r.text
    assert (await db.fetchrow("SELECT replenish_days FROM commerce_product"))["replenish_days"] == 45
    r = await acme_admin.form(f"/products/{pid}", {"replenish_days": ""})  # no JavaScript: back to the list
    assert r.status_code == 303
    assert (await db.fetchrow("SELECT replenish_days FROM commerce_product"))["replenish_days"] is None
    found = await acme_admin.hx_get("/products?q=oolong")
    assert "TEA-01" in found.text and not found.text.lstrip().startswith("<!doctype")
    assert "TEA-01" not in (await acme_admin.hx_get("/products?q=coffee")).text


async def test_a_later_sale_updates_the_name_and_price_an_older_one_does_not(acme: TenantFixture) -> None:
    from datetime import timedelta

    from siyu.commerce import products
    from siyu.core import db

    now = clock.now()
    await products.learn(acme.id, [{"sku": "S", "name": "New", "unit_price_fen": 200}], "CNY", now)
    await products.learn(acme.id, [{"sku": "S", "name": "Old", "unit_price_fen": 100}], "CNY", now - timedelta(days=9))
    row = await db.fetchrow("SELECT name, last_price_fen, first_sold_at FROM commerce_product")
    assert (row["name"], row["last_price_fen"]) == ("New", 200) and row["first_sold_at"] == now - timedelta(days=9)
    await products.learn(acme.id, [{"sku": "S", "name": "Newer", "unit_price_fen": 250}], "CNY", now + timedelta(days=1))
    assert (await db.fetchrow("SELECT name FROM commerce_product"))["name"] == "Newer"
