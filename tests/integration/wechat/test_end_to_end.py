"""The WeChat simulator, an independent implementation of WeChat's side, pushes real callbacks to a live
Siyu server (granian, as in production): URL verification, safe / compatible / plain modes, MP JSON,
WeCom, passive replies decrypted by the simulator, and every event stored once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from siyu.tenants import services as tenants
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, PASSWORD, WECOM, Simulator, TenantFixture, WebServer


async def stored(wait_for: int, seconds: float = 10) -> list[dict[str, Any]]:
    """The live server's rows (it writes them before answering, so this is only for clarity)."""
    deadline = asyncio.get_running_loop().time() + seconds
    rows: list[dict[str, Any]] = []
    while asyncio.get_running_loop().time() < deadline:
        rows = await InboundEvent.select().order_by(InboundEvent.id).output(load_json=True)
        if len(rows) >= wait_for:
            break
        await asyncio.sleep(0.05)
    return rows


def link_both(sim: Simulator, web: WebServer, kind: str, creds: dict[str, str], **extra: Any) -> str:
    app_id = creds.get("corp_id") or creds["app_id"]
    sim.register(kind, app_id, creds.get("secret") or creds["app_secret"], token=creds["token"],
                 aes_key=creds["aes_key"], callback_url=f"{web.base_url}/wechat/acme/{kind}", **extra)
    return app_id


def admin_session(web: WebServer, email: str) -> httpx.Client:
    c = httpx.Client(base_url=web.base_url, headers={"Accept-Language": "en"})
    c.get("/login")
    token = c.cookies["siyu_csrf"]
    r = c.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token})
    assert r.status_code == 302, r.text
    c.headers["x-csrftoken"] = token
    return c


@pytest.mark.parametrize("mode", ["safe", "compatible", "plain"])
async def test_official_account_traffic_in_each_mode(acme: TenantFixture, sim: Simulator, web_server: WebServer,
                                                     mode: str) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", {**OA, "mode": mode})
    app_id = link_both(sim, web_server, "oa", OA, message_mode=mode)
    assert sim._post("/_sim/verify", {"app_id": app_id})["passed"]

    admin = admin_session(web_server, acme.admin_email)
    try:
        r = admin.post("/settings/auto-replies", data={"trigger": "welcome", "reply": "欢迎！Welcome!"})
        assert r.status_code == 200
        admin.post("/settings/auto-replies", data={"trigger": "keyword", "match_type": "contains",
                                                   "keyword": "价格", "reply": "价格表已发送"})
    finally:
        admin.close()

    follow = sim.push(app_id, "alice", "follow", scene="spring_fair")
    assert follow["delivered"] and follow["attempts"] == 1
    assert follow["reply"]["Content"] == "欢迎！Welcome!" and not follow["reply_error"]
    asked = sim.push(app_id, "alice", "text", text="请问价格？")
    assert asked["reply"]["Content"] == "价格表已发送"
    plain = sim.push(app_id, "alice", "text", text="谢谢")
    assert plain["answer"] == "success" and plain["reply"] is None
    for action, fields in [("click", {"key": "MENU_1"}), ("image", {}), ("location", {"label": "上海"})]:
        assert sim.push(app_id, "alice", action, **fields)["delivered"]

    rows = await stored(6)
    assert [r["kind"] for r in rows] == ["follow", "message", "message", "menu_click", "message", "message"]
    assert rows[0]["payload"]["details"]["scene"] == "spring_fair"
    assert {r["external_id"] for r in rows} == {follow["openid"]}
    assert all(r["deliveries"] == 1 for r in rows)
    replies = sim.messages(app_id=app_id, endpoint="passive_reply")
    assert [m["payload"]["Content"] for m in replies] == ["欢迎！Welcome!", "价格表已发送"]


async def test_mini_program_json_and_wecom_traffic(acme: TenantFixture, sim: Simulator, web_server: WebServer) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "mp", MP)
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "wecom", WECOM)
    mp = link_both(sim, web_server, "mp", MP, message_mode="safe", push_format="json")
    wc = link_both(sim, web_server, "wecom", WECOM, open_kfids=["wkShop"])
    assert sim._post("/_sim/verify", {"app_id": mp})["passed"]
    assert sim._post("/_sim/verify", {"app_id": wc})["passed"]  # WeCom: encrypted echostr, plaintext back

    assert sim.push(mp, "bob", "enter_tempsession", session_from="product_88")["answer"] == "success"
    assert sim.push(mp, "bob", "text", text="有货吗")["answer"] == "success"
    added = sim.push(wc, "bob", "add_contact", user_id="zhangsan", state="spring_fair")
    assert added["delivered"] and added["answer"] == ""
    kf = sim.push(wc, "bob", "kf_text", text="你好", open_kfid="wkShop")
    assert kf["delivered"]

    rows = await stored(4)
    kinds = {(r["channel"], r["kind"]) for r in rows}
    assert kinds == {("mp", "session_enter"), ("mp", "message"), ("wecom", "wecom_contact_added"),
                     ("wecom", "kf_notification")}
    contact = next(r for r in rows if r["kind"] == "wecom_contact_added")
    assert contact["external_id"] == added["external_userid"]
    assert contact["payload"]["details"]["welcome_code"] == added["welcome_code"]
    assert contact["payload"]["details"]["state"] == "spring_fair"


async def test_a_burst_of_customers_is_stored_once_each(acme: TenantFixture, sim: Simulator,
                                                        web_server: WebServer) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", OA)
    app_id = link_both(sim, web_server, "oa", OA, message_mode="safe")

    async def customer(i: int) -> None:
        await asyncio.to_thread(sim.push, app_id, f"c{i}", "follow")
        await asyncio.to_thread(sim.push, app_id, f"c{i}", "text", text=f"第{i}条")

    await asyncio.gather(*[customer(i) for i in range(30)])
    rows = await stored(60)
    assert len(rows) == 60
    assert len({r["dedup_key"] for r in rows}) == 60
    assert sum(r["kind"] == "follow" for r in rows) == 30


async def test_a_wrong_token_in_siyu_is_refused_and_wechat_retries_three_times(
        acme: TenantFixture, sim: Simulator, web_server: WebServer) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", {**OA, "token": "TypoInTheToken"})
    app_id = link_both(sim, web_server, "oa", OA, message_mode="safe")  # the console has the right one
    assert not sim._post("/_sim/verify", {"app_id": app_id})["passed"]
    sim.push(app_id, "carol", "follow")
    r = sim.push(app_id, "carol", "text", text="hello")
    assert not r["delivered"] and r["status_codes"] == [403]  # refused, not retried (only timeouts/5xx are)
    assert await InboundEvent.count() == 0
