"""The purchases API for the brand's Mini Program backend: typed, strict (400 naming the field), idempotent
(201 new, 200 again, 409 naming what differs), refunds, keyset pages, tenant isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.core import db
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.integration.commerce.conftest import ACTOR

OPENID = "oApiBuyer00000000000000000001"


@pytest.fixture
async def key(acme: TenantFixture) -> str:
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    _, k = await tenants.do_create_api_key(ACTOR, acme.id, "mp backend")
    return k


def auth(k: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {k}"}


def order(order_id: str = "SO-1001", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": order_id, "paid_at": "2026-11-20T10:00:00+08:00", "amount_fen": 25800, "currency": "CNY",
        "items": [{"sku": "TEA-01", "name": "Oolong 250 g", "quantity": 2, "unit_price_fen": 12900}],
        "buyer": {"openid": OPENID, "app_id": MP["app_id"]}}
    body.update(over)
    return body


async def post(client: Client, k: str, body: Any, url: str = "/api/v1/purchases") -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(url, content=content, headers={**auth(k), "Content-Type": "application/json"})


async def test_a_reported_order_is_201_then_200_and_409_with_another_amount(client: Client, key: str) -> None:
    first = await post(client, key, order())
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["order_id"], body["amount_fen"], body["currency"], body["sources"]) == ("SO-1001", 25800, "CNY", ["api"])
    assert body["items"] == [{"sku": "TEA-01", "name": "Oolong 250 g", "quantity": 2, "unit_price_fen": 12900}]
    identity = await db.fetchrow("SELECT contact, channel, external_id FROM identity")
    assert body["contact_id"] == identity["contact"] and identity["channel"] == "mp"

    again = await post(client, key, order())
    assert again.status_code == 200
    assert again.json() == body

    other = await post(client, key, order(amount_fen=25900))
    assert other.status_code == 409
    assert "amount_fen" in other.json()["fields"]
    other = await post(client, key, order(currency="USD"))
    assert other.status_code == 409 and "currency" in other.json()["fields"]
    assert int((await db.fetchrow("SELECT count(*) AS n FROM commerce_purchase"))["n"]) == 1
    assert (await db.fetchrow("SELECT api_amount_fen FROM commerce_purchase"))["api_amount_fen"] == 25800


async def test_the_purchase_reaches_the_timeline_products_and_the_contacts_figures(client: Client, key: str,
                                                                                   acme: TenantFixture) -> None:
    r = await post(client, key, order())
    contact_id = r.json()["contact_id"]
    event = await db.fetchrow("SELECT kind, channel, payload::text AS p FROM timeline_event WHERE contact = $1",
                              contact_id)
    payload = json.loads(event["p"])
    assert (event["kind"], payload["amount_fen"], payload["source"]) == ("purchase", 25800, "api")
    assert payload["items"] == [{"sku": "TEA-01", "name": "Oolong 250 g", "quantity": 2}]
    product = await db.fetchrow("SELECT sku, name, last_price_fen FROM commerce_product")
    assert dict(product) == {"sku": "TEA-01", "name": "Oolong 250 g", "last_price_fen": 12900}
    from siyu.commerce import stats

    f = await stats.figures(acme.id, contact_id)
    assert (f.orders, f.spent_fen, f.average_fen, f.skus) == (1, 25800, 25800, ["TEA-01"])
    contact = await contacts.get_contact(acme.id, contact_id)
    assert contact["last_purchase_at"].isoformat() == "2026-11-20T02:00:00+00:00"


MISTAKES = [
    ("missing order_id", {"order_id": None}, "order_id"),
    ("amount as a string", {"amount_fen": "25800"}, "amount_fen"),
    ("amount with a fraction", {"amount_fen": 258.5}, "amount_fen"),
    ("amount as a float", {"amount_fen": 25800.0}, "amount_fen"),
    ("negative amount", {"amount_fen": -1}, "amount_fen"),
    ("huge amount", {"amount_fen": 10**30}, "amount_fen"),
    ("boolean amount", {"amount_fen": True}, "amount_fen"),
    ("lower-case currency", {"currency": "cny"}, "currency"),
    ("made-up currency", {"currency": "XYZ"}, "currency"),
    ("a currency no longer in use", {"currency": "DEM"}, "currency"),
    ("paid_at without a zone", {"paid_at": "2026-11-20T10:00:00"}, "paid_at"),
    ("paid_at not a time", {"paid_at": "yesterday"}, "paid_at"),
    ("paid_at in the future", {"paid_at": "2099-01-01T00:00:00Z"}, "paid_at"),
    ("item without a sku", {"items": [{"name": "x"}]}, "items[0].sku"),
    ("item with zero quantity", {"items": [{"sku": "A", "quantity": 0}]}, "items[0].quantity"),
    ("NUL in a sku", {"items": [{"sku": "A\u0000B"}]}, "items[0].sku"),
    ("unknown item field", {"items": [{"sku": "A", "colour": "red"}]}, "items[0].colour"),
    ("too many items", {"items": [{"sku": f"S{i}"} for i in range(201)]}, "items"),
    ("unknown field", {"coupon": "X"}, "coupon"),
    ("no buyer", {"buyer": {}}, "buyer"),
    ("openid without app_id", {"buyer": {"openid": OPENID}}, "buyer.app_id"),
    ("app_id of another brand", {"buyer": {"openid": OPENID, "app_id": "wx1234123412341234"}}, "buyer.app_id"),
    ("malformed openid", {"buyer": {"openid": "o p", "app_id": MP["app_id"]}}, "buyer.openid"),
    ("two ways at once", {"buyer": {"contact_id": 1, "unionid": "uUnion00000000001"}}, "buyer"),
    ("unknown unionid", {"buyer": {"unionid": "uNobody0000000000001"}}, "buyer.unionid"),
    ("unknown contact", {"buyer": {"contact_id": 987654}}, "buyer.contact_id"),
    ("order id with a space", {"order_id": "SO 1"}, "order_id"),
    ("order id too long", {"order_id": "S" * 65}, "order_id"),
]


@pytest.mark.parametrize(("case", "change", "field"), MISTAKES, ids=[m[0] for m in MISTAKES])
async def test_wrong_fields_are_400_naming_the_field_and_store_nothing(client: Client, key: str, case: str,
                                                                       change: dict[str, Any], field: str) -> None:
    body = order(**change)
    body = {k: v for k, v in body.items() if v is not None}
    r = await post(client, key, body)
    assert r.status_code == 400, r.text
    assert field in r.json()["fields"], r.json()
    assert await db.fetchrow("SELECT 1 FROM commerce_purchase") is None
    assert await db.fetchrow("SELECT 1 FROM timeline_event") is None


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b"[" * 100000, b'{"order_id": "A"' + b" " * 10,
                                 b"\x00\x01\x02", b'{"a":' * 5000])
async def test_bodies_that_are_not_an_object_are_400(client: Client, key: str, raw: bytes) -> None:
    r = await post(client, key, raw)
    assert r.status_code == 400, r.text
    assert r.json()["status"] == 400


async def test_a_body_of_a_mebibyte_is_refused(client: Client, key: str) -> None:
    r = await post(client, key, b'{"order_id": "' + b"A" * (1024 * 1024) + b'"}')
    assert r.status_code in (400, 413)
    assert await db.fetchrow("SELECT 1 FROM commerce_purchase") is None


async def test_buyers_by_unionid_and_contact_id(client: Client, key: str, acme: TenantFixture) -> None:
    known = await contacts.resolve(acme.id, "oa", "oOaFollower000000000001", unionid="uUnion0000000000000001")
    r = await post(client, key, order("SO-U", buyer={"unionid": "uUnion0000000000000001"}))
    assert r.status_code == 201 and r.json()["contact_id"] == known.contact_id
    r = await post(client, key, order("SO-C", buyer={"contact_id": known.contact_id}))
    assert r.status_code == 201 and r.json()["contact_id"] == known.contact_id
    # openid with its unionid: the new MP identity joins the person who has it.
    r = await post(client, key, order("SO-O", buyer={"openid": OPENID, "app_id": MP["app_id"],
                                                     "unionid": "uUnion0000000000000001"}))
    assert r.status_code == 201 and r.json()["contact_id"] == known.contact_id


async def test_refunds_201_200_409_and_the_net_spend(client: Client, key: str, acme: TenantFixture) -> None:
    contact_id = (await post(client, key, order())).json()["contact_id"]
    url = "/api/v1/purchases/SO-1001/refunds"
    refund = {"refund_id": "RF-1", "amount_fen": 12900, "refunded_at": "2026-11-21T09:00:00+08:00"}
    r = await post(client, key, refund, url)
    assert r.status_code == 201, r.text
    assert r.json() == {"refund_id": "RF-1", "amount_fen": 12900, "status": "success",
                        "refunded_at": "2026-11-21T01:00:00Z", "sources": ["api"]}
    assert (await post(client, key, refund, url)).status_code == 200
    r = await post(client, key, {**refund, "amount_fen": 100}, url)
    assert r.status_code == 409 and "amount_fen" in r.json()["fields"]
    r = await post(client, key, {**refund, "refund_id": "RF-2", "amount_fen": 13000}, url)
    assert r.status_code == 409 and "amount_fen" in r.json()["fields"]  # only 12900 is left
    r = await post(client, key, {**refund, "refund_id": "RF-2"}, url)
    assert r.status_code == 201
    p = (await client.get("/api/v1/purchases/SO-1001", headers=auth(key))).json()
    assert p["refunded_fen"] == 25800 and [x["refund_id"] for x in p["refunds"]] == ["RF-1", "RF-2"]
    from siyu.commerce import stats

    f = await stats.figures(acme.id, contact_id)
    assert (f.orders, f.spent_fen, f.skus) == (0, 0, [])  # wholly refunded: not an order, nothing bought
    kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM timeline_event ORDER BY occurred_at, id")]
    assert kinds == ["purchase", "refund", "refund"]
    r = await post(client, key, refund, "/api/v1/purchases/NOPE/refunds")
    assert r.status_code == 404
    r = await post(client, key, {"refund_id": "RF-9", "amount_fen": "1", "refunded_at": "2026-11-21T09:00:00Z"}, url)
    assert r.status_code == 400 and "amount_fen" in r.json()["fields"]


async def test_pages_newest_first_with_a_cursor_and_per_contact(client: Client, key: str, acme: TenantFixture) -> None:
    for i in range(5):
        buyer = {"openid": OPENID if i % 2 else "oOtherBuyer0000000000000001", "app_id": MP["app_id"]}
        r = await post(client, key, order(f"SO-{i}", paid_at=f"2026-11-2{i}T10:00:00+08:00", buyer=buyer))
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/purchases?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=auth(key))).json()
        seen += [p["order_id"] for p in page["purchases"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["SO-4", "SO-3", "SO-2", "SO-1", "SO-0"]
    mine = (await client.get("/api/v1/purchases", headers=auth(key))).json()["purchases"]
    contact_id = next(p["contact_id"] for p in mine if p["order_id"] == "SO-1")
    theirs = (await client.get(f"/api/v1/purchases?contact_id={contact_id}", headers=auth(key))).json()
    assert [p["order_id"] for p in theirs["purchases"]] == ["SO-3", "SO-1"]
    for bad in ("cursor=zzz", "limit=0", "limit=abc", "contact_id=x", "contact_id=99999999999999"):
        r = await client.get(f"/api/v1/purchases?{bad}", headers=auth(key))
        assert r.status_code == 400, bad


async def test_another_tenants_purchase_and_contact_answer_like_missing_ones(client: Client, key: str,
                                                                             globex: TenantFixture) -> None:
    await tenants.do_link_channel(ACTOR, globex.id, "mp", {**MP, "app_id": "wx8888888888888888"})
    _, globex_key = await tenants.do_create_api_key(ACTOR, globex.id, "globex")
    theirs = await post(client, globex_key, order("GLOBEX-1", buyer={"openid": OPENID, "app_id": "wx8888888888888888"}))
    assert theirs.status_code == 201
    for foreign, missing in (("/api/v1/purchases/GLOBEX-1", "/api/v1/purchases/NOPE-1"),
                             (f"/api/v1/purchases?contact_id={theirs.json()['contact_id']}",
                              "/api/v1/purchases?contact_id=987654")):
        a = await client.get(foreign, headers=auth(key))
        b = await client.get(missing, headers=auth(key))
        assert a.status_code == b.status_code == 404
        assert a.content == b.content
    refund = {"refund_id": "RF-X", "amount_fen": 1, "refunded_at": "2026-11-21T09:00:00Z"}
    foreign = await post(client, key, refund, "/api/v1/purchases/GLOBEX-1/refunds")
    missing = await post(client, key, refund, "/api/v1/purchases/NOPE-1/refunds")
    assert foreign.status_code == missing.status_code == 404 and foreign.content == missing.content
    assert await db.fetchrow("SELECT 1 FROM commerce_refund") is None
    # The same order id in two tenants is two purchases.
    assert (await post(client, key, order("GLOBEX-1"))).status_code == 201
    r = await post(client, key, order("SO-X", buyer={"contact_id": theirs.json()["contact_id"]}))
    assert r.status_code == 400 and "buyer.contact_id" in r.json()["fields"]


async def test_the_api_needs_a_key(client: Client, key: str) -> None:
    assert (await client.get("/api/v1/purchases")).status_code == 401
    r = await client.post("/api/v1/purchases", json=order())
    assert r.status_code == 401


async def test_the_openapi_schema_documents_the_models(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    names = set(schema["components"]["schemas"])
    assert {"PurchaseIn", "PurchaseOut", "RefundIn", "RefundOut", "PurchasePage", "Item", "BuyerIn"} <= names
    post_op = schema["paths"]["/api/v1/purchases"]["post"]
    assert post_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("PurchaseIn")
    assert {"200", "201", "400", "409"} <= set(post_op["responses"])
