"""Re-engagement in a real browser, with the real pipeline behind it (issue 12): the brand's admin builds a
post-purchase journey in the editor and starts it; a customer who follows the Official Account and writes to
it buys (the shop's backend reports the order to the purchases API); the worker sends the thank-you through the
open reply window; the simulator receives it for that customer; the journey's results page counts it.

Screenshots of the editor and the results go to /tmp/siyu-engagement-*.png."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from siyu.core import db
from siyu.engagement import rules
from siyu.simulator import rules as sim_rules
from siyu.tenants import services as tenants
from tests.conftest import OA, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

SHOTS = Path("/tmp")
LIVE = 30_000  # ms: purchase → on_purchase job → ledger row → send → simulator
ACTOR = tenants.Actor.cli()
THANKS = "感谢您的订单！茶叶已在路上。"


async def until(check: Any, seconds: float = LIVE / 1000) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_admin_builds_a_post_purchase_journey_a_customer_buys_and_the_results_count_it(
        page: Any, web_server: WebServer, worker: Any, acme: TenantFixture, sim: Simulator) -> None:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    # Quiet hours off: the test must not depend on the hour it runs at (they have tests of their own).
    await rules.do_update_settings(acme.id, {"cap_count": "2", "cap_days": "7", "quiet_start": "00:00",
                                             "quiet_end": "00:00", "conversion_days": "7"}, ACTOR)
    _, api_key = await tenants.do_create_api_key(ACTOR, acme.id, "shop backend")

    # The admin builds the journey in the editor: a purchase of tea starts it, the thank-you goes at once.
    await sign_in(page, acme.admin_email)
    await page.get_by_role("link", name="Re-engagement").first.click()
    await expect(page).to_have_url(f"{web_server.base_url}/engagement/journeys")
    await page.goto("/engagement/journeys/new")
    await page.locator("#f-name").fill("Thanks for the tea")
    # Only the chosen start's filters show (CSS :has(), no script): a win-back asks for days, a purchase not.
    days, skus = page.locator("input[name='trigger.days']"), page.locator("input[name='trigger.skus']")
    await page.locator("select[name='trigger.kind']").select_option("inactivity")
    await expect(days).to_be_visible()
    await expect(skus).to_be_hidden()
    await page.locator("select[name='trigger.kind']").select_option("purchase")
    await expect(days).to_be_hidden()
    await expect(page.get_by_label("WeChat Pay")).to_be_visible()
    await page.locator("input[name='trigger.skus']").fill("TEA-01")
    await page.locator("select[name='steps[0].kind']").select_option("send")
    await page.locator("select[name='steps[0].purpose']").select_option("service")
    await page.locator("textarea[name='steps[0].text']").fill(THANKS)
    await page.locator("input[name='steps[0].channels'][value='window']").check()
    await page.locator("#f-holdout_percent").fill("0")  # one customer: none may be held out
    preview = page.locator("#preview")
    await expect(preview).to_contain_text("People enter one by one")
    await expect(preview).to_contain_text("No contacts yet: nobody to reach.")  # not an empty table of 0
    await page.screenshot(path=str(SHOTS / "siyu-engagement-editor.png"), full_page=True)
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Thanks for the tea")
    await expect(page.locator(".eng-status")).to_have_text("Draft")
    await page.get_by_role("button", name="Start").click()
    await expect(page.locator(".eng-status")).to_have_text("Active")
    journey_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

    # A customer follows and writes (the reply window opens), then buys in the shop.
    assert (await asyncio.to_thread(sim.push, oa, "chen", "follow"))["delivered"]
    assert (await asyncio.to_thread(sim.push, oa, "chen", "text", text="有乌龙茶吗？"))["delivered"]
    openid = sim_rules.openid(oa, "chen")

    async def known() -> Any:
        row = await db.fetchrow("SELECT contact FROM identity WHERE tenant = $1 AND external_id = $2",
                                acme.id, openid)
        return row["contact"] if row else None

    contact_id = await until(known)
    assert contact_id, "the follow never reached the contacts"
    order = {"order_id": f"SO-{uuid.uuid4().hex[:10]}", "paid_at": datetime.now(UTC).isoformat(),
             "amount_fen": 12900, "currency": "CNY",
             "items": [{"sku": "TEA-01", "name": "乌龙茶 250 g", "quantity": 1, "unit_price_fen": 12900}],
             "buyer": {"openid": openid, "app_id": oa}}
    async with httpx.AsyncClient(base_url=web_server.base_url, trust_env=False, timeout=30) as http:
        r = await http.post("/api/v1/purchases", json=order, headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 201, r.text
    assert r.json()["contact_id"] == contact_id

    # The worker sends; the simulator received the thank-you for this customer, once.
    async def received() -> list[dict[str, Any]]:
        msgs = await asyncio.to_thread(sim.messages, app_id=oa, to=openid)
        return [m for m in msgs if THANKS in str(m.get("payload"))]

    got = await until(received)
    assert len(got) == 1, (got, await db.fetch("SELECT state, reason, skips FROM engagement_delivery"))
    assert got[0]["endpoint"].endswith("message/custom/send")

    # The results page counts it: one person entered, one sent through the reply window.
    await page.reload()
    figures = page.locator(".eng-result .eng-figures tr").nth(1).locator("td")
    await expect(figures.nth(0)).to_have_text("1", timeout=LIVE)  # targeted
    await expect(figures.nth(1)).to_have_text("1", timeout=LIVE)  # sent
    await expect(page.locator("#results")).to_contain_text("1 person entered")
    latest = page.locator("#results > section.card").last.locator("tbody tr")
    await expect(latest).to_have_count(1)
    await expect(latest).to_contain_text("Sent")
    await expect(latest).to_contain_text("Official Account reply window")
    name = (await db.fetchrow("SELECT display_name FROM contact WHERE id = $1", contact_id))["display_name"]
    await expect(latest.locator("a")).to_have_text(name or "Unnamed contact")  # the person, not their id
    await page.screenshot(path=str(SHOTS / "siyu-engagement-results.png"), full_page=True)
    row = await db.fetchrow("SELECT state, channel, contact FROM engagement_delivery WHERE source_id = $1",
                            journey_id)
    assert (row["state"], row["contact"]) == ("sent", contact_id)
