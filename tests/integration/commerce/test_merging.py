"""One order, one purchase: a WeChat Pay notification and the backend's report merge in either order (and at
once); refunds from both sources; merges and unmerges of contacts carry purchases and figures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from siyu.commerce import stats
from siyu.contacts import services as contacts
from siyu.core import db
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR, deliver, run_jobs
from tests.pay_payloads import PaySender, transaction_id_for

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's, not ours
OPENID = "oMergeBuyer000000000000000001"


@pytest.fixture
async def key(paying: PaySender, acme: TenantFixture) -> str:
    _, k = await tenants.do_create_api_key(ACTOR, acme.id, "mp backend")
    return k


def report(order_id: str = "MO-1", amount: int = 9900, **over: Any) -> dict[str, Any]:
    return {"order_id": order_id, "paid_at": "2026-11-20T10:00:05+08:00", "amount_fen": amount, "currency": "CNY",
            "items": [{"sku": "CUP-1", "name": "Cup", "quantity": 1, "unit_price_fen": amount}],
            "buyer": {"openid": OPENID, "app_id": MP["app_id"]}, **over}


async def api(client: Client, k: str, body: dict[str, Any], url: str = "/api/v1/purchases") -> Any:
    return await client.post(url, json=body, headers={"Authorization": f"Bearer {k}"})


async def purchases() -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM commerce_purchase ORDER BY id")]


async def pay(client: Client, paying: PaySender, order_id: str = "MO-1", total: int = 9900, **kw: Any) -> None:
    assert (await deliver(client, paying.transaction(order_id, total, OPENID, **kw))).status_code == 204
    await run_jobs()


@pytest.mark.parametrize("first", ["pay", "api"])
async def test_pay_and_the_backend_make_one_purchase_in_either_order(client: Client, paying: PaySender, key: str,
                                                                     first: str) -> None:
    if first == "pay":
        await pay(client, paying, success_time="2026-11-20T10:00:00+08:00", attach="utm=spring")
        r = await api(client, key, report())
    else:
        r = await api(client, key, report())
        await pay(client, paying, success_time="2026-11-20T10:00:00+08:00", attach="utm=spring")
    assert r.status_code == 201, r.text
    [p] = await purchases()
    assert p["sources"] == ["api", "pay"]
    assert json.loads(p["items"])[0]["sku"] == "CUP-1"  # items from the backend
    assert p["transaction_id"] == transaction_id_for("MO-1")  # payment facts from WeChat Pay
    assert p["paid_at"].isoformat() == "2026-11-20T02:00:00+00:00"
    assert (p["amount_fen"], p["flags"], p["attach"]) == (9900, [], "utm=spring")
    [event] = await db.fetch("SELECT payload::text AS p FROM timeline_event WHERE kind = 'purchase'")
    payload = json.loads(event["p"])
    assert payload["source"] == "api+pay" and payload["items"][0]["sku"] == "CUP-1"
    # A repeat of either changes nothing.
    assert (await api(client, key, report())).status_code == 200
    await pay(client, paying)
    assert len(await purchases()) == 1 and len(await db.fetch("SELECT 1 FROM timeline_event")) == 1


@pytest.mark.parametrize("first", ["pay", "api"])
async def test_pay_is_authoritative_for_the_amount_and_a_mismatch_is_flagged(client: Client, paying: PaySender,
                                                                              key: str, first: str) -> None:
    if first == "pay":
        await pay(client, paying, total=8900)
        r = await api(client, key, report(amount=9900))
    else:
        r = await api(client, key, report(amount=9900))
        await pay(client, paying, total=8900)
    assert r.status_code == 201
    [p] = await purchases()
    assert (p["amount_fen"], p["pay_amount_fen"], p["api_amount_fen"], p["flags"]) == (8900, 8900, 9900,
                                                                                        ["amount_mismatch"])
    shown = (await client.get("/api/v1/purchases/MO-1", headers={"Authorization": f"Bearer {key}"})).json()
    assert (shown["amount_fen"], shown["reported_amount_fen"], shown["flags"]) == (8900, 9900, ["amount_mismatch"])
    # The backend repeating its own amount is still the same report (200), not a conflict.
    assert (await api(client, key, report(amount=9900))).status_code == 200


async def test_a_backend_with_its_own_order_ids_merges_by_transaction_id(client: Client, paying: PaySender,
                                                                         key: str) -> None:
    await pay(client, paying, order_id="WXPAY-77")
    r = await api(client, key, report("SHOP-77", transaction_id=transaction_id_for("WXPAY-77")))
    assert r.status_code == 201
    [p] = await purchases()
    assert (p["order_id"], p["out_trade_no"], p["sources"]) == ("SHOP-77", "WXPAY-77", ["api", "pay"])
    await pay(client, paying, order_id="WXPAY-77")  # WeChat's retry still finds it
    assert len(await purchases()) == 1


async def test_both_sources_at_the_same_moment_make_one_purchase(client: Client, paying: PaySender, key: str,
                                                                 acme: TenantFixture) -> None:
    from siyu.commerce import buyers
    from siyu.commerce import purchases as writer
    from siyu.commerce.jobs import apply_notification
    from siyu.core import clock

    for i in range(8):
        order_id = f"RACE-{i}"
        resource = {"appid": MP["app_id"], "mchid": paying.mchid, "out_trade_no": order_id,
                    "transaction_id": transaction_id_for(order_id), "trade_state": "SUCCESS",
                    "success_time": "2026-11-20T10:00:00+08:00", "payer": {"openid": OPENID},
                    "amount": {"total": 500, "payer_total": 500, "currency": "CNY"}}
        buyer = await buyers.by_openid(acme.id, MP["app_id"], OPENID, clock.now())
        from_api = writer.Payment(source="api", order_id=order_id, amount_fen=500, currency="CNY",
                                  paid_at=clock.now(), items=[{"sku": "S", "name": "", "quantity": 1}])
        await asyncio.gather(apply_notification(acme.id, "TRANSACTION.SUCCESS", resource, clock.now()),
                             writer.do_record_payment(acme.id, from_api, buyer),
                             apply_notification(acme.id, "TRANSACTION.SUCCESS", resource, clock.now()))
    rows = await purchases()
    assert len(rows) == 8 and all(r["sources"] == ["api", "pay"] for r in rows)
    assert len(await db.fetch("SELECT 1 FROM timeline_event WHERE kind = 'purchase'")) == 8
    f = await stats.figures(acme.id, rows[0]["contact"])
    assert (f.orders, f.spent_fen) == (8, 4000)


async def test_pay_refunds_success_abnormal_closed(client: Client, paying: PaySender, acme: TenantFixture) -> None:
    await pay(client, paying, total=10000)
    tx = transaction_id_for("MO-1")
    for event, refund_no, amount in (("REFUND.ABNORMAL", "R-1", 3000), ("REFUND.SUCCESS", "R-1", 3000),
                                     ("REFUND.CLOSED", "R-2", 2000), ("REFUND.SUCCESS", "R-2", 2000),
                                     ("REFUND.SUCCESS", "R-3", 1000)):
        n = paying.refund("MO-1", tx, refund_no, amount, 10000, event_type=event)
        assert (await deliver(client, n)).status_code == 204
        await run_jobs()
    refunds = {r["refund_id"]: r["status"] for r in await db.fetch("SELECT refund_id, status FROM commerce_refund")}
    assert refunds == {"R-1": "success", "R-2": "closed", "R-3": "success"}  # closed is final
    [p] = await purchases()
    assert p["refunded_fen"] == 4000
    f = await stats.figures(acme.id, p["contact"])
    assert (f.orders, f.spent_fen) == (1, 6000)
    keys = sorted(r["source_key"].split(":", 2)[2] for r in await db.fetch(
        "SELECT source_key FROM timeline_event WHERE kind = 'refund'"))
    assert keys == ["abnormal", "closed", "success", "success"]


async def test_a_refund_notified_before_its_payment_waits_for_it(client: Client, paying: PaySender,
                                                                 acme: TenantFixture) -> None:
    n = paying.refund("MO-1", transaction_id_for("MO-1"), "R-EARLY", 500, 9900)
    assert (await deliver(client, n)).status_code == 204
    await run_jobs()
    assert (await db.fetchrow("SELECT purchase FROM commerce_refund"))["purchase"] is None
    await pay(client, paying)
    [p] = await purchases()
    assert p["refunded_fen"] == 500
    assert (await db.fetchrow("SELECT purchase FROM commerce_refund"))["purchase"] == p["id"]


async def test_api_and_pay_report_one_refund(client: Client, paying: PaySender, key: str) -> None:
    await pay(client, paying)
    r = await api(client, key, {"refund_id": "R-9", "amount_fen": 900, "refunded_at": "2026-11-21T09:00:00+08:00"},
                  "/api/v1/purchases/MO-1/refunds")
    assert r.status_code == 201
    n = paying.refund("MO-1", transaction_id_for("MO-1"), "R-9", 900, 9900)
    assert (await deliver(client, n)).status_code == 204
    await run_jobs()
    rows = await db.fetch("SELECT refund_id, wechat_refund_id, sources FROM commerce_refund")
    assert len(rows) == 1 and rows[0]["sources"] == ["api", "pay"] and rows[0]["wechat_refund_id"]
    assert (await purchases())[0]["refunded_fen"] == 900


async def test_merges_and_unmerges_carry_purchases_and_figures(client: Client, paying: PaySender, key: str,
                                                               acme: TenantFixture) -> None:
    await pay(client, paying, total=1000)
    mp_contact = (await purchases())[0]["contact"]
    oa_contact = await contacts.resolve_identity(acme.id, "oa", "oOaPerson0000000000000000001")
    other = await api(client, key, report("MO-2", amount=500, buyer={"contact_id": oa_contact}))
    assert other.status_code == 201
    merge_id = await contacts.do_merge(acme.id, oa_contact, mp_contact, "manual", ACTOR)
    assert {p["contact"] for p in await purchases()} == {oa_contact}
    f = await stats.figures(acme.id, oa_contact)
    assert (f.orders, f.spent_fen) == (2, 1500)
    assert (await stats.figures(acme.id, mp_contact)).orders == 0
    # A payment that arrives through the MP identity after the merge lands on the survivor.
    await pay(client, paying, order_id="MO-3", total=200)
    assert {p["contact"] for p in await purchases()} == {oa_contact}

    await contacts.do_unmerge(acme.id, merge_id, ACTOR)
    by_order = {p["order_id"]: p["contact"] for p in await purchases()}
    assert by_order == {"MO-1": mp_contact, "MO-2": oa_contact, "MO-3": mp_contact}
    assert (await stats.figures(acme.id, mp_contact)).spent_fen == 1200
    assert (await stats.figures(acme.id, oa_contact)).spent_fen == 500
    # The merge log names what moved, without contacts knowing commerce's tables.
    snap = json.loads((await db.fetchrow("SELECT snapshot::text AS s FROM contact_merge"))["s"])
    assert len(snap["carried"]["commerce.purchases"]) == 1


async def test_a_unionid_merge_carries_purchases(client: Client, paying: PaySender, acme: TenantFixture) -> None:
    await pay(client, paying, total=700)
    buyer = (await purchases())[0]["contact"]
    follower = await contacts.resolve_identity(acme.id, "oa", "oOaFollower00000000000000001", unionid="uUnionXYZ0000001")
    await contacts.resolve(acme.id, "mp", OPENID, unionid="uUnionXYZ0000001")  # the MP login learns the unionid
    survivor = min(buyer, follower)
    assert {p["contact"] for p in await purchases()} == {survivor}
    assert (await stats.figures(acme.id, survivor)).spent_fen == 700
