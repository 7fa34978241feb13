"""The simulator's customers buy again (simulator/buying.py): a round of buying pays an order (`pay.buy`, the
brand's Mini Program backend reporting it to Siyu's purchases API) for each person who draws one, and a message
WeChat accepted for them raises their chance (here from 0 to 1, so the draw is certain); a purchase after the
message spends it. Rounds can run by themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from siyu.core import db
from siyu.simulator import rules as sim_rules
from siyu.tenants import services as tenants
from tests.conftest import MP, Simulator, TenantFixture, WebServer
from tests.integration.wechat.test_end_to_end import link_both

ACTOR = tenants.Actor.cli()


def shop(sim: Simulator, web: WebServer, key: str) -> str:
    return link_both(sim, web, "mp", MP, push_format="json", backend={
        "login_url": f"{web.base_url}/api/v1/mp/login", "api_key": key,
        "purchases_url": f"{web.base_url}/api/v1/purchases"})


def custom_send(sim: Simulator, app_id: str, person: str) -> None:
    """A message WeChat accepts for the person (as Siyu's sender would make it)."""
    token = httpx.post(f"{sim.base}/wechat-api/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": app_id, "secret": MP["app_secret"]}).json()["access_token"]
    r = httpx.post(f"{sim.base}/wechat-api/cgi-bin/message/custom/send", params={"access_token": token},
                   json={"touser": sim_rules.openid(app_id, person), "msgtype": "text", "text": {"content": "回购提醒"}})
    assert r.json().get("errcode", 0) == 0, r.text


async def orders(tenant_id: int) -> list[Any]:
    return await db.fetch("SELECT order_id, amount_fen, contact FROM commerce_purchase WHERE tenant = $1 "
                          "ORDER BY id", tenant_id)


async def test_customers_buy_through_the_backend_and_a_message_raises_their_chance(
        acme: TenantFixture, sim: Simulator, web_server: WebServer) -> None:
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    _, key = await tenants.do_create_api_key(ACTOR, acme.id, "mp backend")
    app = shop(sim, web_server, key)

    # Nobody messaged, chance 0: a round buys nothing.
    await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying", {"base": 0, "after_message": 1})
    nothing = await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying/round", {})
    assert (nothing["bought"], nothing["errors"]) == ([], [])

    # Two more people; only hong is messaged. Chance 0 without a message, 1 with one: hong alone buys.
    for person in ("hong", "li"):
        assert (await asyncio.to_thread(sim.push, app, person, "text", text="有货吗"))["delivered"]
    await asyncio.to_thread(custom_send, sim, app, "hong")
    settings = await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying",
                                       {"base": 0, "after_message": 1, "amount_fen": 5000, "sku": "REFILL"})
    assert settings["after_message"] == 1.0
    first = await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying/round", {})
    assert (first["messaged"], [b["person"] for b in first["bought"]], first["errors"]) == (1, ["hong"], [])
    [row] = await orders(acme.id)
    assert (row["order_id"], row["amount_fen"]) == (first["bought"][0]["order_id"], 5000) and row["contact"]

    # hong bought after the message: it no longer raises anything; nobody buys.
    second = await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying/round", {})
    assert (second["messaged"], second["bought"]) == (0, [])
    assert len(await orders(acme.id)) == 1

    # Rounds by themselves, every second, until set again without `every_seconds`.
    played = second["round"]
    await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying", {"base": 0, "every_seconds": 1})
    await asyncio.sleep(3.5)
    after = await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying", {"base": 0})
    assert after["rounds"] >= played + 2 and after["every_seconds"] is None
    await asyncio.sleep(1.5)
    assert (await asyncio.to_thread(sim._post, f"/_sim/apps/{app}/buying", {"base": 0}))["rounds"] == after["rounds"]


async def test_buying_names_bad_settings_and_a_shop_with_nobody_to_tell(acme: TenantFixture, sim: Simulator,
                                                                       web_server: WebServer) -> None:
    app = link_both(sim, web_server, "mp", MP, push_format="json")  # no backend, no merchant: nobody to tell
    r = httpx.post(f"{sim.base}/_sim/apps/{app}/buying", json={"base": 2})
    assert r.status_code == 400 and "base" in r.json()["error"]
    await asyncio.to_thread(sim.push, app, "wu", "text", text="在吗")  # a Mini Program user (Siyu need not know)
    r = httpx.post(f"{sim.base}/_sim/apps/{app}/buying", json={"base": 1})
    assert r.status_code == 200
    played = httpx.post(f"{sim.base}/_sim/apps/{app}/buying/round").json()
    assert played["bought"] == [] and [e["person"] for e in played["errors"]] == ["wu"]
    assert "purchases_url" in played["errors"][0]["error"]
