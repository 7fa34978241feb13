"""Simulated WeChat Pay: its key for linking, notifications exactly as WeChat Pay builds them (checked by an
independent SDK, wechatpayv3, and by Siyu's verifier), WeChat's retry schedule compressed by a time factor,
the `WECHATPAY/SIGNTEST/` probe, refunds, the brand backend's reports in both orders of arrival, and its memory
on disk."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siyu.simulator import pay, persist
from siyu.simulator.state import State
from siyu.wechat import pay as siyu_pay
from tests.integration.simulator.conftest import MP_ID, Sim
from tests.integration.simulator.receiver import Received, Receiver

APIV3 = "SimApiV3Key0123456789abcdefghijk"
MCHID = "1900000109"
API_KEY = "siyu_test_backendkey"


def is_notification(req: Received) -> bool:
    return "wechatpay-signature" in req.headers


async def setup(simc: Sim, receiver: Receiver, **merchant: Any) -> dict[str, Any]:
    await simc.register("mp", MP_ID, backend={"purchases_url": f"http://127.0.0.1:{receiver.port}/api/v1/purchases",
                                              "api_key": API_KEY}, open_platform="brand")
    r = await simc.http.post("/_sim/pay/merchants", json={
        "mchid": MCHID, "app_id": MP_ID, "apiv3_key": APIV3, "notify_url": f"http://127.0.0.1:{receiver.port}/pay",
        "probe_rate": 0, **merchant})
    assert r.status_code == 200, r.text
    assert "apiv3_key" not in r.json() and r.json()["apiv3_key_set"]
    return dict((await simc.http.get("/_sim/pay/key")).json())


def siyu_keys(key: dict[str, Any]) -> dict[str, Any]:
    return {key["public_key_id"]: siyu_pay.load_public_key(key["public_key"]),
            key["platform_serial"]: siyu_pay.load_platform_certificate(key["platform_certificate"]).public_key}


def opened(req: Received, key: dict[str, Any], now: float) -> dict[str, Any]:
    """The notification as Siyu's verifier and decryptor read it."""
    siyu_pay.verify(httpx.Headers(req.headers), req.body, siyu_keys(key), now)
    envelope = siyu_pay.open_envelope(req.body)
    return {"event_type": envelope.event_type, "id": envelope.id,
            **siyu_pay.decrypt_resource(APIV3, envelope.resource)}


async def buy(simc: Sim, expect: int = 200, **fields: Any) -> dict[str, Any]:
    r = await simc.http.post("/_sim/pay/buy", json={"app_id": MP_ID, "person": "alice", **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


async def test_the_key_is_one_a_merchant_can_link(simc: Sim) -> None:
    key = (await simc.http.get("/_sim/pay/key")).json()
    assert siyu_pay.PUBLIC_KEY_ID_RE.match(key["public_key_id"]) and len(key["public_key_id"]) == 43
    assert siyu_pay.load_public_key(key["public_key"]).key_size == 2048
    cert = siyu_pay.load_platform_certificate(key["platform_certificate"])
    assert cert.serial == key["platform_serial"] and len(cert.serial) == 40
    assert (await simc.http.get("/_sim/pay/key")).json() == key  # made once
    await simc.http.post("/_sim/reset")
    assert (await simc.http.get("/_sim/pay/key")).json()["public_key_id"] == key["public_key_id"]  # WeChat's key stays


@pytest.mark.parametrize(("body", "problem"), [
    ({"mchid": "12ab"}, "mchid"), ({"app_id": "wxnope000000000000"}, "app_id"), ({"apiv3_key": "short"}, "apiv3_key"),
    ({"notify_url": "https://example.com/pay"}, "notify_url"), ({"retry_time_factor": 0}, "retry_time_factor"),
    ({"sign_with": "hmac"}, "sign_with"), ({"catalog": [{"sku": "A"}]}, "unit_price_fen")])
async def test_a_merchant_registration_names_what_is_wrong(simc: Sim, body: dict[str, Any], problem: str) -> None:
    await simc.register("mp", MP_ID)
    good = {"mchid": MCHID, "app_id": MP_ID, "apiv3_key": APIV3, "notify_url": "http://127.0.0.1:1/pay"}
    r = await simc.http.post("/_sim/pay/merchants", json={**good, **body})
    assert r.status_code == 400 and problem in r.json()["error"]


@pytest.mark.parametrize("sign_with", ["public_key", "platform_cert"])
async def test_a_payment_is_notified_as_wechat_pay_does_and_reported_by_the_backend(
        simc: Sim, receiver: Receiver, sign_with: str) -> None:
    from wechatpayv3.core import Core

    async def answer(req: Received, n: int) -> tuple[int, str]:
        return (204, "") if is_notification(req) else (201, json.dumps({"id": 1}))

    receiver.answer = answer
    key = await setup(simc, receiver, sign_with=sign_with)
    items = [{"sku": "CANDLE-01", "name": "香薰蜡烛", "quantity": 2, "unit_price_fen": 12800}]
    done = await buy(simc, items=items, sequence="pay_first", attach="campaign=spring")
    assert done["delivered"] and done["sequence"] == "pay_first"
    order = done["order"]
    assert order["total"] == 25600 and len(order["transaction_id"]) == 28 and order["openid"].startswith("o")
    notification, backend = receiver.requests
    assert is_notification(notification) and notification.path == "/pay"  # WeChat Pay first, as asked

    assert notification.headers["wechatpay-serial"] == (key["public_key_id"] if sign_with == "public_key"
                                                        else key["platform_serial"])
    assert notification.headers["wechatpay-signature-type"] == "WECHATPAY2-SHA256-RSA2048"
    assert notification.headers["content-type"] == "application/json"
    now = float(notification.headers["wechatpay-timestamp"])
    resource = opened(notification, key, now)
    assert resource["event_type"] == "TRANSACTION.SUCCESS" and resource["id"].startswith("EV-")
    assert resource["out_trade_no"] == order["out_trade_no"] and resource["transaction_id"] == order["transaction_id"]
    assert resource["appid"] == MP_ID and resource["mchid"] == MCHID and resource["trade_state"] == "SUCCESS"
    assert resource["payer"] == {"openid": order["openid"]} and resource["attach"] == "campaign=spring"
    assert resource["amount"] == {"total": 25600, "payer_total": 25600, "currency": "CNY", "payer_currency": "CNY"}
    assert resource["success_time"].endswith("+08:00")
    envelope = json.loads(notification.body)
    assert envelope["resource"]["associated_data"] == "transaction" and len(envelope["resource"]["nonce"]) == 12

    if sign_with == "public_key":  # an independent implementation agrees (wechatpayv3, public-key mode)
        merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        core = Core(mchid=MCHID, cert_serial_no="0123456789ABCDEF", apiv3_key=APIV3,
                    private_key=merchant_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()).decode(),
                    public_key=key["public_key"], public_key_id=key["public_key_id"])
        sdk = core.callback({k.title(): v for k, v in notification.headers.items()}, notification.body)
        assert sdk is not None and sdk["resource"]["out_trade_no"] == order["out_trade_no"]

    # The brand's backend reported the same order through the CRM's API, with its key.
    assert backend.path == "/api/v1/purchases" and backend.headers["authorization"] == f"Bearer {API_KEY}"
    reported = json.loads(backend.body)
    assert reported["order_id"] == order["out_trade_no"] and reported["amount_fen"] == 25600
    assert reported["items"] == items and reported["transaction_id"] == order["transaction_id"]
    assert reported["buyer"]["openid"] == order["openid"] and reported["buyer"]["app_id"] == MP_ID
    assert reported["buyer"]["unionid"] and reported["attach"] == "campaign=spring"
    assert reported["paid_at"] == resource["success_time"]

    orders = (await simc.http.get("/_sim/pay/orders", params={"person": "alice"})).json()
    assert [o["out_trade_no"] for o in orders] == [order["out_trade_no"]]
    assert orders[0]["notifications"][0]["delivered"] and orders[0]["backend_reports"][0]["status"] == 201


@pytest.mark.parametrize("sequence", ["backend_first", "pay_first", "together"])
async def test_both_orders_of_arrival_happen(simc: Sim, receiver: Receiver, sequence: str) -> None:
    await setup(simc, receiver)
    await buy(simc, sequence=sequence)
    await receiver.wait_for(2)
    kinds = [is_notification(r) for r in receiver.requests]
    assert sorted(kinds) == [False, True]
    if sequence != "together":
        assert kinds[0] == (sequence == "pay_first")
    seen = set()
    for _ in range(40):  # left to chance, both orders come up
        seen.add((await buy(simc, person=f"p{len(seen)}-{_}"))["sequence"])
    assert seen == set(pay.SEQUENCES)


async def test_failures_are_retried_on_wechats_schedule_with_fresh_signatures(simc: Sim, receiver: Receiver) -> None:
    async def answer(req: Received, n: int) -> tuple[int, str]:
        notifications = sum(1 for r in receiver.requests if is_notification(r))
        return (500, '{"code":"FAIL","message":"not yet"}') if notifications <= 3 else (200, "")

    receiver.answer = answer
    factor = 0.01
    key = await setup(simc, receiver, retry_time_factor=factor)
    done = await buy(simc, report_backend=False)
    first = done["pay"]
    assert not done["delivered"] and not first["delivered"] and first["attempts"][0]["status"] == 500
    assert first["next_attempt_in"] == pytest.approx(15 * factor, abs=0.05)
    await receiver.wait_for(4)
    for _ in range(100):
        state = (await simc.http.get("/_sim/pay/notifications")).json()[0]
        if state["delivered"]:
            break
        await asyncio.sleep(0.02)
    assert state["delivered"] and [a["status"] for a in state["attempts"]] == [500, 500, 500, 200]
    assert (await simc.http.get("/_sim/pay/notifications", params={"pending": "true"})).json() == []
    sent = [r for r in receiver.requests if is_notification(r)]
    gaps = [b.at - a.at for a, b in zip(sent, sent[1:], strict=False)]
    for gap, planned in zip(gaps, pay.RETRY_SCHEDULE[:3], strict=True):
        assert gap >= planned * factor * 0.9, (gaps, planned)
    assert len({r.body for r in sent}) == 1  # the same notification…
    assert len({r.headers["wechatpay-nonce"] for r in sent}) == 4  # …signed afresh each time
    for r in sent:
        opened(r, key, float(r.headers["wechatpay-timestamp"]))


async def test_wechat_pay_gives_up_after_its_fifteen_retries(simc: Sim, receiver: Receiver) -> None:
    async def refuse(req: Received, n: int) -> tuple[int, str]:
        return 503, "down"

    receiver.answer = refuse
    await setup(simc, receiver, retry_time_factor=0.00002)  # the 24 h schedule in about two seconds
    await buy(simc, report_backend=False)
    for _ in range(300):
        state = (await simc.http.get("/_sim/pay/notifications")).json()[0]
        if state["gave_up"]:
            break
        await asyncio.sleep(0.02)
    assert state["gave_up"] and not state["delivered"]
    assert len(state["attempts"]) == 1 + len(pay.RETRY_SCHEDULE) == 16


async def test_a_signtest_probe_comes_first_and_must_be_refused(simc: Sim, receiver: Receiver) -> None:
    async def answer(req: Received, n: int) -> tuple[int, str]:
        if req.headers["wechatpay-signature"].startswith("WECHATPAY/SIGNTEST/"):
            return 401, '{"code":"FAIL","message":"bad signature"}'
        return 204, ""

    receiver.answer = answer
    key = await setup(simc, receiver)
    done = await buy(simc, report_backend=False, probe=True)
    probe, real = receiver.requests
    assert probe.headers["wechatpay-signature"].startswith("WECHATPAY/SIGNTEST/") and probe.body == real.body
    with pytest.raises(siyu_pay.PayRejected) as refused:
        siyu_pay.verify(httpx.Headers(probe.headers), probe.body, siyu_keys(key), float(probe.headers["wechatpay-timestamp"]))
    assert refused.value.code == "probe"
    assert done["pay"]["probes"][0]["refused"] and done["pay"]["delivered"]


async def test_refunds_are_notified_and_reported(simc: Sim, receiver: Receiver) -> None:
    async def answer(req: Received, n: int) -> tuple[int, str]:
        return (204, "") if is_notification(req) else (201, "{}")

    receiver.answer = answer
    key = await setup(simc, receiver)
    order = (await buy(simc, sequence="backend_first", items=[
        {"sku": "A", "name": "a", "quantity": 1, "unit_price_fen": 5000}]))["order"]
    receiver.requests.clear()

    partial = (await simc.http.post("/_sim/pay/refund", json={"app_id": MP_ID, "person": "alice", "amount_fen": 2000,
                                                              "sequence": "backend_first"})).json()
    assert partial["delivered"] and partial["refund"]["status"] == "SUCCESS"
    backend, notification = receiver.requests
    assert backend.path == f"/api/v1/purchases/{order['out_trade_no']}/refunds"
    assert json.loads(backend.body)["refund_id"] == partial["refund"]["out_refund_no"]
    assert json.loads(backend.body)["amount_fen"] == 2000
    resource = opened(notification, key, float(notification.headers["wechatpay-timestamp"]))
    assert resource["event_type"] == "REFUND.SUCCESS" and json.loads(notification.body)["resource"][
        "associated_data"] == "refund"
    assert resource["out_trade_no"] == order["out_trade_no"] and resource["transaction_id"] == order["transaction_id"]
    assert resource["out_refund_no"] == partial["refund"]["out_refund_no"] and resource["refund_status"] == "SUCCESS"
    assert resource["amount"] == {"total": 5000, "refund": 2000, "payer_total": 5000, "payer_refund": 2000}

    # A refund that needs the merchant's hand (ABNORMAL) is notified but not reported; it later succeeds.
    receiver.requests.clear()
    stuck = (await simc.http.post("/_sim/pay/refund", json={"out_trade_no": order["out_trade_no"],
                                                            "status": "ABNORMAL"})).json()
    assert stuck["refund"]["amount"] == 3000 and [is_notification(r) for r in receiver.requests] == [True]
    assert opened(receiver.requests[0], key, float(receiver.requests[0].headers["wechatpay-timestamp"]))[
        "event_type"] == "REFUND.ABNORMAL"
    ended = (await simc.http.post("/_sim/pay/refund", json={"out_trade_no": order["out_trade_no"], "status": "SUCCESS",
                                                            "out_refund_no": stuck["refund"]["out_refund_no"]})).json()
    assert ended["refund"]["status"] == "SUCCESS" and ended["backend"]["status"] == 201
    nothing_left = await simc.http.post("/_sim/pay/refund", json={"out_trade_no": order["out_trade_no"]})
    assert nothing_left.status_code == 409 and nothing_left.json()["code"] == "bad_amount"
    again = await simc.http.post("/_sim/pay/refund", json={"out_trade_no": order["out_trade_no"], "status": "CLOSED",
                                                           "out_refund_no": stuck["refund"]["out_refund_no"]})
    assert again.status_code == 409 and again.json()["code"] == "refund_final"


async def test_buying_needs_someone_to_tell(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    r = await simc.http.post("/_sim/pay/buy", json={"app_id": MP_ID, "person": "alice"})
    assert r.status_code == 409 and r.json()["code"] == "nobody_to_tell"
    r = await simc.http.post("/_sim/pay/buy", json={"app_id": "wxnope", "person": "alice"})
    assert r.status_code == 404
    r = await simc.http.post("/_sim/pay/refund", json={"out_trade_no": "nope"})
    assert r.status_code == 404 and r.json()["code"] == "no_order"


async def test_its_memory_survives_a_restart_and_owed_retries_resume(receiver: Receiver) -> None:
    sim = State()
    d = pay.desk(sim)
    sim.apps.clear()
    from siyu.simulator.state import SimApp

    sim.apps[MP_ID] = SimApp(kind="mp", app_id=MP_ID, secret="s")
    merchant = pay.build_merchant({"mchid": MCHID, "app_id": MP_ID, "apiv3_key": APIV3, "retry_time_factor": 0.01,
                                   "notify_url": f"http://127.0.0.1:{receiver.port}/pay"}, sim)
    assert isinstance(merchant, pay.Merchant)
    d.merchants[MCHID] = merchant

    async def refuse(req: Received, n: int) -> tuple[int, str]:
        return (500, "no") if n == 1 else (204, "")

    receiver.answer = refuse
    done = await pay.buy(sim, {"app_id": MP_ID, "person": "bob", "probe": False})
    assert not done["pay"]["delivered"]
    saved = json.loads(json.dumps(persist.snapshot(sim)))  # as written to state.json
    for task in list(d.tasks):
        task.cancel()

    again = State()
    persist.restore(again, saved)
    d2 = pay.desk(again)
    assert d2.key_id == d.key_id and d2.cert_serial == d.cert_serial
    assert list(d2.orders) == list(d.orders) and d2.orders[done["order"]["out_trade_no"]].items == done["order"]["items"]
    assert d2.resume() == 1
    await receiver.wait_for(2)
    for _ in range(100):
        if next(iter(d2.notices.values())).delivered:
            break
        await asyncio.sleep(0.02)
    assert next(iter(d2.notices.values())).delivered
