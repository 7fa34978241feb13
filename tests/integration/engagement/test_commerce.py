"""Purchases and refunds from commerce reach re-engagement by job after commit: the brand's backend reports an
order (`POST /api/v1/purchases`), the worker runs `engagement.on_purchase`, the post-purchase journey sends its
thanks through the simulator, a replenishment reminder is scheduled from the product's interval, a second order
is a conversion of the first message, and a refund ends the order's journey. History imports start nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from siyu.commerce import products
from siyu.core import clock, db
from siyu.engagement import attribution, journeys
from siyu.tenants import services as tenants
from tests.conftest import MP, Client
from tests.integration.engagement.conftest import ACTOR, World, make_journey, rows
from tests.integration.test_jobs import run_worker

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
CUSTOM = "cgi-bin/message/custom/send"

CARE = {"name": "After an order", "trigger": {"kind": "purchase"}, "holdout_percent": 0,
        "steps": [{"id": "thanks", "send": {"purpose": "service", "text": "谢谢您的订单"}},
                  {"id": "w", "wait": "replenishment"},
                  {"id": "again", "send": {"purpose": "marketing", "text": "该补货了"}}]}


@pytest.fixture
async def key(world: World) -> dict[str, str]:
    _, k = await tenants.do_create_api_key(ACTOR, world.tenant.id, "shop backend")
    return {"Authorization": f"Bearer {k}"}


def order(order_id: str, p: Any, amount: int = 12800, **over: Any) -> dict[str, Any]:
    return {"order_id": order_id, "paid_at": clock.now().isoformat(), "amount_fen": amount, "currency": "CNY",
            "items": [{"sku": "TEA-1", "name": "龙井", "quantity": 1, "unit_price_fen": amount}],
            "buyer": {"openid": p.mp_openid, "app_id": MP["app_id"]}, **over}


async def test_a_reported_purchase_starts_the_journey_and_converts(client: Client, key: dict[str, str],
                                                                   world: World) -> None:
    tid = world.tenant.id
    j = await make_journey(tid, CARE)
    ann = await world.person("ann", mp=True)
    await world.open_window(ann, "mp")
    assert (await client.post("/api/v1/purchases", json=order("SO-1", ann), headers=key)).status_code == 201
    await run_worker()
    [product] = (await products.list_products(tid, q="TEA-1"))[0]
    await products.do_set_replenish_days(tid, int(product["id"]), 30, ACTOR)
    got = {r.step: r for r in await rows(tid)}
    assert got["thanks"].state == "sent" and got["thanks"].channel == "mp_window"
    assert [m["payload"]["text"]["content"] for m in world.received(ann, CUSTOM)] == ["谢谢您的订单"]
    # The interval was set after the first order: its reminder was not scheduled; the next order's is.
    assert "again" not in got
    assert (await client.post("/api/v1/purchases", json=order("SO-2", ann, amount=9900), headers=key)).status_code == 201
    await run_worker()
    second = [r for r in await rows(tid) if r.trigger_key == "SO-2"]
    reminder = next(r for r in second if r.step == "again")
    assert reminder.state == "scheduled"
    paid = (await db.fetchrow("SELECT paid_at FROM commerce_purchase WHERE order_id = 'SO-2'"))["paid_at"]
    assert abs((reminder.due_at - (paid + timedelta(days=30))).total_seconds()) < 1
    figures = await attribution.figures(tid, "journey", j.id)
    assert figures["thanks"].conversions == 1 and figures["thanks"].revenue_fen == 9900  # SO-2 after SO-1's thanks
    # A refund of SO-2: its reminder is skipped.
    r = await client.post("/api/v1/purchases/SO-2/refunds", json={"refund_id": "RF-1", "amount_fen": 9900,
                                                                 "refunded_at": clock.now().isoformat()}, headers=key)
    assert r.status_code == 201, r.text
    await run_worker()
    reminder = next(r for r in await rows(tid) if r.trigger_key == "SO-2" and r.step == "again")
    assert (reminder.state, reminder.reason) == ("skipped", "refunded")
    assert (await journeys.get_journey(tid, j.id)).status == "active"


async def test_imported_history_starts_nothing(client: Client, key: dict[str, str], world: World) -> None:
    from siyu.commerce import purchases as commerce
    from siyu.commerce.buyers import by_contact_id

    tid = world.tenant.id
    await make_journey(tid, CARE)
    bob = await world.person("bob", mp=True)
    payment = commerce.Payment(source="import", order_id="OLD-1", amount_fen=100, currency="CNY",
                               paid_at=clock.now() - timedelta(days=400), items=[{"sku": "TEA-1", "quantity": 1}])
    await commerce.do_record_payment(tid, payment, await by_contact_id(tid, bob.contact_id))
    await run_worker()
    assert await rows(tid) == []
