"""Simulated customers buy in the Mini Program against a live Siyu (granian, as in production): the simulated
backend reports each order through the purchases API and simulated WeChat Pay notifies it, signed and
encrypted with the simulator's own key (linked as Siyu's admin would link WeChat Pay's), in either order;
one purchase per order. WeChat Pay's retries carry a notification Siyu refused once the admin fixes the key."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from siyu.commerce import merchants
from siyu.core import db
from siyu.tenants import services as tenants
from tests.conftest import MP, TenantFixture, WebServer
from tests.integration.commerce.conftest import ACTOR, run_jobs
from tests.integration.simulator.test_simulate_cli import siyu

MCHID = "1900000109"
APIV3 = "SimPayApiV3Key0123456789abcdefgh"
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
CATALOG = [{"sku": "CANDLE-FIG", "name": "Figue candle", "unit_price_fen": 32000},
           {"sku": "DIFF-CEDAR", "name": "Cedar diffuser", "unit_price_fen": 45000}]


async def link(acme: TenantFixture, simulator_base: str, web: WebServer, apiv3_in_siyu: str = APIV3,
               **merchant: Any) -> dict[str, Any]:
    """The simulator's Mini Program (with its backend reporting to the live server) and WeChat Pay merchant,
    and the same linked in Siyu with the simulator's public key."""
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    _, api_key = await tenants.do_create_api_key(ACTOR, acme.id, "Mini Program backend")
    async with httpx.AsyncClient(base_url=simulator_base, timeout=30) as http:
        r = await http.post("/_sim/apps", json={
            "kind": "mp", "app_id": MP["app_id"], "secret": MP["app_secret"], "token": MP["token"],
            "aes_key": MP["aes_key"], "push_format": "json",
            "backend": {"purchases_url": f"{web.base_url}/api/v1/purchases", "api_key": api_key}})
        r.raise_for_status()
        r = await http.post("/_sim/pay/merchants", json={
            "mchid": MCHID, "app_id": MP["app_id"], "apiv3_key": APIV3, "notify_url": f"{web.base_url}/wechat/acme/pay",
            "catalog": CATALOG, **merchant})
        r.raise_for_status()
        key = (await http.get("/_sim/pay/key")).json()
    await merchants.do_link_pay(ACTOR, acme.id, {"mch_id": MCHID, "app_id": MP["app_id"], "api_v3_key": apiv3_in_siyu,
                                                 "public_key": key["public_key"], "public_key_id": key["public_key_id"]})
    return dict(key)


async def purchases(tenant_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(
        "SELECT order_id, contact, amount_fen, api_amount_fen, pay_amount_fen, sources, flags, refunded_fen, items "
        "FROM commerce_purchase WHERE tenant = $1 ORDER BY order_id", tenant_id)]


async def test_a_scenario_of_buyers_and_refunds_lands_one_purchase_per_order(
        acme: TenantFixture, simulator_base: str, web_server: WebServer, subprocess_env: dict[str, str]) -> None:
    await link(acme, simulator_base, web_server, probe_rate=0.2)
    code, out, err = await siyu(subprocess_env, "simulate", "scenario", "--app", MP["app_id"], "--simulator",
                                simulator_base, "--prefix", "buyer", "30 customers buy, 5 refund")
    assert code == 0, out + err
    assert "30 buy: 30 delivered" in out and "5 refund: 5 delivered" in out
    await run_jobs()

    rows = await purchases(acme.id)
    assert len(rows) == 30
    assert all(sorted(r["sources"]) == ["api", "pay"] and r["flags"] == [] for r in rows)  # merged, no mismatch
    assert all(r["items"] and r["pay_amount_fen"] == r["api_amount_fen"] == r["amount_fen"] for r in rows)
    assert len({r["contact"] for r in rows}) == 30
    refunded = [r for r in rows if r["refunded_fen"]]
    assert len(refunded) == 5 and all(r["refunded_fen"] == r["amount_fen"] for r in refunded)
    refunds = await db.fetch("SELECT sources, status FROM commerce_refund WHERE tenant = $1", acme.id)
    assert len(refunds) == 5 and all(sorted(r["sources"]) == ["api", "pay"] and r["status"] == "success"
                                     for r in refunds)
    # The probes WeChat Pay sent now and then were refused, and stored nothing.
    async with httpx.AsyncClient(base_url=simulator_base) as http:
        notes = (await http.get("/_sim/pay/notifications")).json()
    assert len(notes) == 35 and all(n["delivered"] for n in notes)
    assert all(p["refused"] and p["status"] == 401 for n in notes for p in n["probes"])
    stored = await db.fetchrow("SELECT count(*) AS n, sum(deliveries) AS d FROM commerce_pay_notification "
                               "WHERE tenant = $1", acme.id)
    assert stored["n"] == 35 and stored["d"] == 35
    figures = await db.fetch("SELECT orders FROM commerce_contact_stats WHERE tenant = $1", acme.id)
    assert sorted(f["orders"] for f in figures) == [0] * 5 + [1] * 25
    events = await db.fetch("SELECT kind, count(*) AS n FROM timeline_event WHERE tenant = $1 GROUP BY kind", acme.id)
    assert {e["kind"]: e["n"] for e in events} == {"purchase": 30, "refund": 5}


@pytest.mark.parametrize("sequence", ["backend_first", "pay_first", "together"])
async def test_backend_and_pay_in_any_order_are_one_purchase(
        acme: TenantFixture, simulator_base: str, web_server: WebServer, sequence: str) -> None:
    await link(acme, simulator_base, web_server, probe_rate=0)
    async with httpx.AsyncClient(base_url=simulator_base, timeout=30) as http:
        done = (await http.post("/_sim/pay/buy", json={"app_id": MP["app_id"], "person": "ann",
                                                       "sequence": sequence})).json()
    assert done["delivered"], done
    assert done["backend"]["status"] == 201  # the backend's first report of the order, whoever came first
    await run_jobs()
    rows = await purchases(acme.id)
    assert len(rows) == 1 and sorted(rows[0]["sources"]) == ["api", "pay"]
    assert rows[0]["order_id"] == done["order"]["out_trade_no"] and rows[0]["amount_fen"] == done["order"]["total"]


async def test_refused_notifications_are_retried_until_the_admin_fixes_the_key(
        acme: TenantFixture, simulator_base: str, web_server: WebServer) -> None:
    key = await link(acme, simulator_base, web_server, apiv3_in_siyu="W" * 32, probe_rate=0, retry_time_factor=0.02)
    async with httpx.AsyncClient(base_url=simulator_base, timeout=30) as http:
        done = (await http.post("/_sim/pay/buy", json={"app_id": MP["app_id"], "person": "ann",
                                                       "report_backend": False})).json()
        assert not done["delivered"] and done["pay"]["attempts"][0]["status"] == 500  # GCM fails: WeChat retries
        status = await merchants.status(acme.id)
        assert status is not None and status.failing and status.last_failure == "decrypt"
        await merchants.do_link_pay(ACTOR, acme.id, {"mch_id": MCHID, "app_id": MP["app_id"], "api_v3_key": APIV3})
        for _ in range(200):
            note = (await http.get("/_sim/pay/notifications")).json()[0]
            if note["delivered"]:
                break
            await asyncio.sleep(0.05)
    assert note["delivered"] and note["attempts"][0]["status"] == 500 and note["attempts"][-1]["status"] == 204
    assert key["public_key_id"] in {k.key_id for k in status.keys}
    await run_jobs()
    rows = await purchases(acme.id)
    assert len(rows) == 1 and rows[0]["sources"] == ["pay"]
    fixed = await merchants.status(acme.id)
    assert fixed is not None and not fixed.failing
