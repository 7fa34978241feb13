"""Data-subject requests reach purchases: the person's export holds their purchases and refunds; the erasure
removes what they bought, the order's attach, how the sources named them and the decrypted WeChat Pay
notifications about them, keeps the order ids, amounts and times (the shape), and touches nobody else's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from siyu.commerce import stats
from siyu.contacts import privacy
from siyu.contacts import services as contacts
from siyu.core import db
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR, deliver, run_jobs
from tests.pay_payloads import PaySender, transaction_id_for

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
WANG = "oWangBuyer00000000000000001"
LI = "oLiBuyer0000000000000000001"
SECRETS = ("Rose perfume", "PERF-ROSE", "gift for my mother", WANG)


@pytest.fixture
async def shoppers(client: Client, paying: PaySender, acme: TenantFixture) -> dict[str, int]:
    """Wang bought perfume (reported by the backend with a note in attach, paid through WeChat Pay) and got part
    of it refunded by WeChat Pay; Li bought a candle."""
    _, key = await tenants.do_create_api_key(ACTOR, acme.id, "mp backend")
    for order_id, openid, sku, name, fen, attach in (
            ("W-1", WANG, "PERF-ROSE", "Rose perfume", 32000, "gift for my mother"),
            ("L-1", LI, "CANDLE", "Candle", 9000, "")):
        r = await client.post("/api/v1/purchases", headers={"Authorization": f"Bearer {key}"}, json={
            "order_id": order_id, "paid_at": "2026-11-20T10:00:05+08:00", "amount_fen": fen, "currency": "CNY",
            "items": [{"sku": sku, "name": name, "quantity": 1, "unit_price_fen": fen}],
            "buyer": {"openid": openid, "app_id": MP["app_id"]}, "attach": attach})
        assert r.status_code == 201, r.text
        n = paying.transaction(order_id, fen, openid, attach=attach)
        assert (await deliver(client, n)).status_code == 204
    assert (await deliver(client, paying.refund("W-1", transaction_id_for("W-1"), "RW-1", 2000, 32000))).status_code == 204
    await run_jobs()
    return {"wang": await contacts.resolve_identity(acme.id, "mp", WANG),
            "li": await contacts.resolve_identity(acme.id, "mp", LI)}


async def commerce_rows(tenant_id: int) -> str:
    rows: list[Any] = []
    for table in ("commerce_purchase", "commerce_refund", "commerce_pay_notification", "commerce_contact_stats"):
        rows += [dict(r) for r in await db.fetch(f"SELECT * FROM {table} WHERE tenant = $1 ORDER BY 1, 2",
                                                 tenant_id)]
    return json.dumps(rows, default=str, ensure_ascii=False)


async def test_the_export_holds_the_persons_purchases_and_refunds(acme: TenantFixture,
                                                                  shoppers: dict[str, int]) -> None:
    doc = await privacy.export_contact(acme.id, shoppers["wang"], ACTOR)
    [p] = doc["purchases"]
    assert (p["order_id"], p["amount_fen"], p["refunded_fen"], p["attach"]) == ("W-1", 32000, 2000, "gift for my mother")
    assert p["items"][0]["name"] == "Rose perfume" and sorted(p["sources"]) == ["api", "pay"]
    assert [(r["refund_id"], r["amount_fen"], r["status"]) for r in p["refunds"]] == [("RW-1", 2000, "success")]
    assert "L-1" not in json.dumps(doc)  # only theirs
    json.dumps(doc)  # plain JSON all the way down


async def test_the_erasure_removes_what_they_bought_keeps_the_shape_and_leaves_others_alone(
        acme: TenantFixture, shoppers: dict[str, int]) -> None:
    before = await commerce_rows(acme.id)
    assert all(s in before for s in SECRETS)  # the test can fail: everything is there first
    li_before = await privacy.export_contact(acme.id, shoppers["li"], ACTOR)

    erased = await privacy.do_erase_contact(acme.id, shoppers["wang"], "DSR-2026-0077", ACTOR)

    assert erased["purchases"] == 1
    after = await commerce_rows(acme.id)
    assert [s for s in SECRETS if s in after] == []
    [p] = (await privacy.export_contact(acme.id, shoppers["wang"], ACTOR))["purchases"]
    assert (p["order_id"], p["amount_fen"], p["refunded_fen"], p["items"], p["attach"], p["buyer"]) == \
        ("W-1", 32000, 2000, [], "", {})
    fig = await stats.figures(acme.id, shoppers["wang"])
    assert (fig.orders, fig.spent_fen, fig.skus) == (1, 30000, [])  # the figures stay, the products go
    li_after = await privacy.export_contact(acme.id, shoppers["li"], ACTOR)
    assert li_after["purchases"] == li_before["purchases"]
    assert "Candle" in after and "CANDLE" in after

    # Again: nothing more to erase, nothing changes.
    again = await privacy.do_erase_contact(acme.id, shoppers["wang"], "DSR-2026-0077", ACTOR)
    assert again["purchases"] == 0 and await commerce_rows(acme.id) == after


async def test_a_merged_away_contacts_purchases_are_erased_with_the_survivor(
        acme: TenantFixture, shoppers: dict[str, int]) -> None:
    await contacts.do_merge(acme.id, shoppers["li"], shoppers["wang"], "manual", ACTOR)
    erased = await privacy.do_erase_contact(acme.id, shoppers["wang"], "DSR-9", ACTOR)  # the merged-away id
    assert erased["purchases"] == 2
    assert "Candle" not in json.dumps((await privacy.export_contact(acme.id, shoppers["li"], ACTOR))["purchases"])


@pytest.mark.parametrize("first", ["backend", "pay"])
async def test_another_source_reporting_an_erased_order_brings_nothing_back(
        client: Client, paying: PaySender, acme: TenantFixture, first: str) -> None:
    """The order was reported by one source, the person was erased, then the other source reported it: the
    order's bookkeeping merges, what was bought, the attach and how the source named the buyer do not come
    back (they did on the old code)."""
    _, key = await tenants.do_create_api_key(ACTOR, acme.id, "mp backend")

    async def backend() -> None:
        r = await client.post("/api/v1/purchases", headers={"Authorization": f"Bearer {key}"}, json={
            "order_id": "E-1", "paid_at": "2026-11-20T10:00:05+08:00", "amount_fen": 32000, "currency": "CNY",
            "items": [{"sku": "PERF-ROSE", "name": "Rose perfume", "quantity": 1, "unit_price_fen": 32000}],
            "buyer": {"openid": WANG, "app_id": MP["app_id"]}, "attach": "gift for my mother"})
        assert r.status_code in (200, 201), r.text

    async def pay() -> None:
        n = paying.transaction("E-1", 32000, WANG, attach="gift for my mother")
        assert (await deliver(client, n)).status_code == 204
        await run_jobs()

    steps = [backend, pay] if first == "backend" else [pay, backend]
    await steps[0]()
    wang = await contacts.resolve_identity(acme.id, "mp", WANG)
    await privacy.do_erase_contact(acme.id, wang, "DSR-2026-0078", ACTOR)
    await steps[1]()

    row = await db.fetchrow("SELECT items::text AS items, skus, attach, buyer::text AS buyer, sources, amount_fen "
                            "FROM commerce_purchase WHERE tenant = $1 AND order_id = 'E-1'", acme.id)
    assert sorted(row["sources"]) == ["api", "pay"] and row["amount_fen"] == 32000  # the bookkeeping merged
    assert (row["items"], list(row["skus"]), row["attach"], row["buyer"]) == ("[]", [], "", "{}")
    assert (await stats.figures(acme.id, wang)).skus == []
