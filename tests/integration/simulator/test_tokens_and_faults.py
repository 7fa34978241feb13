"""Access tokens (41001 / 40014 / 40001 / 42001), injected faults and latency, the clock, statistics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.simulator.conftest import CORP_ID, MP_ID, OA_ID, SECRET, Sim


async def test_legacy_registration_and_token_endpoints_still_work(simc: Sim) -> None:
    r = await simc.http.post("/_sim/apps", json={"kind": "wechat", "app_id": OA_ID, "secret": SECRET})
    assert r.status_code == 200
    assert r.json()["kind"] == "oa" and r.json()["message_mode"] == "plain" and "secret" not in r.json()
    r = await simc.http.get("/wechat-api/cgi-bin/token",
                            params={"grant_type": "client_credential", "appid": OA_ID, "secret": SECRET})
    assert set(r.json()) == {"access_token", "expires_in"} and r.json()["expires_in"] == 7200
    r = await simc.http.get("/wechat-api/cgi-bin/token",
                            params={"grant_type": "client_credential", "appid": OA_ID, "secret": "wrong"})
    assert r.json()["errcode"] == 40125
    r = await simc.http.post("/_sim/apps", json={"kind": "wecom", "app_id": CORP_ID, "secret": SECRET})
    r = await simc.http.get("/wecom-api/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
    assert r.json()["errcode"] == 0 and r.json()["access_token"]


async def test_missing_unknown_and_foreign_tokens(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    await simc.register("wecom", CORP_ID)
    r = await simc.http.get("/wechat-api/cgi-bin/menu/get")
    assert r.json()["errcode"] == 41001
    r = await simc.http.get("/wechat-api/cgi-bin/menu/get", params={"access_token": "nonsense"})
    assert r.json()["errcode"] == 40014
    wecom_token = await simc.token(CORP_ID)
    r = await simc.http.get("/wechat-api/cgi-bin/menu/get", params={"access_token": wecom_token})
    assert r.json()["errcode"] == 40014  # a WeCom token means nothing to api.weixin.qq.com


async def test_expired_and_invalidated_tokens(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    first = await simc.token(OA_ID)
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 0

    r = await simc.http.post(f"/_sim/apps/{OA_ID}/tokens", json={"action": "expire"})
    assert r.json() == {"app_id": OA_ID, "action": "expire", "tokens": 1}
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 42001
    second = await simc.token(OA_ID, fresh=True)  # stable_token hands out a new one once expired
    assert second != first
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 0

    await simc.http.post(f"/_sim/apps/{OA_ID}/tokens", json={"action": "invalidate"})
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 40001
    await simc.token(OA_ID, fresh=True)
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 0

    await simc.advance(7200, keep_tokens=True)  # tokens live 7200 s
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 42001
    bad = await simc.http.post(f"/_sim/apps/{OA_ID}/tokens", json={"action": "burn"})
    assert bad.status_code == 400


async def test_stable_token_repeats_and_cgi_bin_token_supersedes_with_a_grace(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    body = {"grant_type": "client_credential", "appid": OA_ID, "secret": SECRET}
    a = (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()["access_token"]
    b = (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()["access_token"]
    assert a == b
    params = {"grant_type": "client_credential", "appid": OA_ID, "secret": SECRET}
    old = (await simc.http.get("/wechat-api/cgi-bin/token", params=params)).json()["access_token"]
    new = (await simc.http.get("/wechat-api/cgi-bin/token", params=params)).json()["access_token"]
    assert old != new
    call = {"access_token": old}
    assert (await simc.http.get("/wechat-api/cgi-bin/menu/delete", params=call)).json()["errcode"] == 0
    await simc.advance(301, keep_tokens=True)  # the superseded token works 5 more minutes, then 40001
    assert (await simc.http.get("/wechat-api/cgi-bin/menu/delete", params=call)).json()["errcode"] == 40001
    assert (await simc.http.get("/wechat-api/cgi-bin/menu/delete",
                                params={"access_token": new})).json()["errcode"] == 0
    assert (await simc.http.get("/wechat-api/cgi-bin/menu/delete",
                                params={"access_token": a})).json()["errcode"] == 0  # stable_token is isolated
    stats = await simc.get("/_sim/stats")
    assert stats["token_fetches"][OA_ID] == 4
    assert stats["tokens_issued"][OA_ID] == 3
    assert stats["calls"]["wechat-api/cgi-bin/menu/delete"] == 4
    assert stats["calls_by_app"][OA_ID]["cgi-bin/menu/delete"] == 4


async def test_faults_are_answered_in_order_then_the_call_succeeds(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    await simc.token(OA_ID)
    r = await simc.http.post(f"/_sim/apps/{OA_ID}/faults", json={"errcodes": [-1, 45009, 45011, 40001]})
    assert r.json()["faults"] == [-1, 45009, 45011, 40001]
    codes = [(await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] for _ in range(5)]
    assert codes == [-1, 45009, 45011, 40001, 0]
    refused = await simc.get("/_sim/refusals", app_id=OA_ID, endpoint="cgi-bin/menu/delete")
    assert [x["errcode"] for x in refused] == [-1, 45009, 45011, 40001]


async def test_faults_apply_to_token_endpoints_too(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    await simc.http.post(f"/_sim/apps/{MP_ID}/faults", json={"errcodes": [-1]})
    body = {"grant_type": "client_credential", "appid": MP_ID, "secret": SECRET}
    assert (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()["errcode"] == -1
    assert "access_token" in (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()


async def test_latency_is_added_until_reset(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    await simc.token(OA_ID)
    await simc.http.post(f"/_sim/apps/{OA_ID}/faults", json={"latency_ms": 300})
    t0 = time.monotonic()
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 0
    assert time.monotonic() - t0 >= 0.3
    await simc.http.post(f"/_sim/apps/{OA_ID}/faults", json={"latency_ms": 0})
    t0 = time.monotonic()
    await simc.call(OA_ID, "cgi-bin/menu/delete")
    assert time.monotonic() - t0 < 0.25


async def test_one_endpoint_answers_late_after_doing_its_work(simc: Sim) -> None:
    """A late answer, as when WeChat delivers and the caller stops waiting: the message is recorded at once,
    the answer comes `endpoint_latency_ms` later; other endpoints are not slowed."""
    await simc.register("oa", OA_ID)
    await simc.token(OA_ID)
    openid = (await simc.push(OA_ID, "amy", "follow"))["openid"]
    await simc.push(OA_ID, "amy", "text", text="hi")
    r = await simc.http.post(f"/_sim/apps/{OA_ID}/faults",
                             json={"endpoint_latency_ms": {"cgi-bin/message/custom/send": 400}})
    assert r.json()["endpoint_latency_ms"] == {"cgi-bin/message/custom/send": 400}
    t0 = time.monotonic()
    await simc.call(OA_ID, "cgi-bin/menu/delete")
    assert time.monotonic() - t0 < 0.3
    send = asyncio.create_task(simc.text(OA_ID, openid, "late"))
    await asyncio.sleep(0.2)
    assert not send.done()
    recorded = await simc.get("/_sim/messages", app_id=OA_ID, endpoint="cgi-bin/message/custom/send")
    assert [m["payload"]["text"]["content"] for m in recorded] == ["late"]  # carried out before the answer
    assert await send == 0
    assert time.monotonic() - t0 >= 0.4
    await simc.http.post(f"/_sim/apps/{OA_ID}/faults", json={"endpoint_latency_ms": {"cgi-bin/message/custom/send": 0}})
    t0 = time.monotonic()
    assert await simc.text(OA_ID, openid, "fast") == 0
    assert time.monotonic() - t0 < 0.3


async def test_the_token_endpoint_times_out_as_often_as_asked(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    r = await simc.http.post(f"/_sim/apps/{MP_ID}/faults", json={"token_timeouts": 1, "token_timeout_ms": 300})
    assert r.json()["token_timeouts"] == 1
    body = {"grant_type": "client_credential", "appid": MP_ID, "secret": SECRET}
    t0 = time.monotonic()
    hung = (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()
    assert time.monotonic() - t0 >= 0.3 and hung["errcode"] == -1 and "access_token" not in hung
    assert (await simc.get("/_sim/stats"))["token_fetches"].get(MP_ID, 0) == 0  # nothing was issued
    t0 = time.monotonic()
    assert "access_token" in (await simc.http.post("/wechat-api/cgi-bin/stable_token", json=body)).json()
    assert time.monotonic() - t0 < 0.25
    await simc.http.post(f"/_sim/apps/{MP_ID}/faults", json={"token_timeouts": 5})
    await simc.http.post(f"/_sim/apps/{MP_ID}/faults", json={"clear": True})
    assert (await simc.get(f"/_sim/apps/{MP_ID}"))["token_timeouts"] == 0


@pytest.mark.parametrize("body", [
    {"endpoint_latency_ms": {"cgi-bin/message/custom/send": 60_001}},
    {"endpoint_latency_ms": {"cgi-bin/message/custom/send": "11000"}},
    {"endpoint_latency_ms": {"": 10}},
    {"endpoint_latency_ms": ["cgi-bin/message/custom/send"]},
    {"endpoint_latency_ms": {f"p{i}": 1 for i in range(51)}},
    {"token_timeouts": -1}, {"token_timeouts": True}, {"token_timeouts": 1001},
    {"token_timeout_ms": 60_001}, {"token_timeout_ms": 1.5},
])
async def test_fault_controls_are_validated(simc: Sim, body: dict[str, Any]) -> None:
    await simc.register("oa", OA_ID)
    r = await simc.http.post(f"/_sim/apps/{OA_ID}/faults", json=body)
    assert r.status_code == 400 and next(iter(body)) in r.json()["error"]
    app = await simc.get(f"/_sim/apps/{OA_ID}")
    assert app["endpoint_latency_ms"] == {} and app["token_timeouts"] == 0  # nothing half-applied


async def test_endpoints_check_the_account_kind_and_method(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    answer = await simc.call(MP_ID, "cgi-bin/message/template/send", {"touser": "o", "template_id": "t"})
    assert answer["errcode"] == 48001  # template messages are an OA API
    r = await simc.http.get("/wechat-api/cgi-bin/message/custom/send",
                            params={"access_token": await simc.token(MP_ID)})
    assert r.json()["errcode"] == 43002
    r = await simc.http.post("/wechat-api/cgi-bin/message/custom/send",
                             params={"access_token": await simc.token(MP_ID)}, content=b"{not json")
    assert r.json()["errcode"] == 47001
    r = await simc.http.get("/wechat-api/cgi-bin/no/such/api")
    assert r.status_code == 404 and r.json()["errcode"] == 40066


async def test_clock_moves_forward_and_resets(simc: Sim) -> None:
    before = (await simc.get("/_sim/clock"))["now"]
    await simc.advance(3600)
    clock = await simc.get("/_sim/clock")
    assert clock["offset_seconds"] == 3600 and clock["now"] - before >= 3600
    assert (await simc.http.post("/_sim/clock", json={"advance_seconds": -1})).status_code == 400
    await simc.http.post("/_sim/reset")
    assert (await simc.get("/_sim/clock"))["offset_seconds"] == 0


async def test_registration_is_validated(simc: Sim) -> None:
    bad = [{"kind": "oa", "app_id": OA_ID},
           {"kind": "bank", "app_id": OA_ID, "secret": "s"},
           {"kind": "oa", "app_id": OA_ID, "secret": "s", "aes_key": "short"},
           {"kind": "oa", "app_id": OA_ID, "secret": "s", "message_mode": "safe"},
           {"kind": "oa", "app_id": OA_ID, "secret": "s", "push_format": "json"},
           {"kind": "oa", "app_id": OA_ID, "secret": "s", "callback_url": "http://10.0.0.8/wechat/a/oa"},
           {"kind": "oa", "app_id": OA_ID, "secret": "s", "callback_url": "http://example.com/cb"}]
    for body in bad:
        r = await simc.http.post("/_sim/apps", json=body)
        assert r.status_code == 400, body
    app = await simc.register("wecom", CORP_ID)
    assert app["message_mode"] == "safe" and app["agent_id"] == "1000002"
    assert app["open_kfids"][0].startswith("wk") and len(app["open_kfids"][0]) == 32
    oa = await simc.register("oa", OA_ID, message_mode="compatible")
    assert oa["original_id"].startswith("gh_") and oa["message_mode"] == "compatible"
