"""Purchases in a real browser: a simulated customer buys in the Mini Program (reported by the simulated backend,
notified by simulated WeChat Pay, processed by the worker); the brand's admin finds the order on the purchases
page and on the customer's timeline, then imports the shop's order history from a CSV file and watches it
go through, with the line that has a problem named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import MP, TenantFixture, WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.commerce.test_simulated_pay import link
from tests.integration.simulator.test_simulate_cli import siyu

pytestmark = pytest.mark.e2e
APP = MP["app_id"]
HISTORY = ("order_id,paid_at,amount_fen,sku,name,quantity,unit_price_fen,openid,app_id\n"
           f"H-1,2024-01-02 10:00:00,5000,HIST-CANDLE,Old candle,1,5000,oHistBuyer0001,{APP}\n"
           f"H-2,2024-01-03 10:00:00,free,HIST-CANDLE,Old candle,1,5000,oHistBuyer0002,{APP}\n")


async def test_a_customer_buys_the_admin_sees_it_and_imports_the_shops_history(
        page: Any, web_server: WebServer, acme: TenantFixture, simulator_base: str, worker: Any,
        subprocess_env: dict[str, str], tmp_path: Path) -> None:
    await link(acme, simulator_base, web_server)
    code, out, err = await siyu(subprocess_env, "simulate", "scenario", "--app", APP, "--simulator", simulator_base,
                                "--prefix", "e2ebuyer", "1 customers buy")
    assert code == 0 and "1 buy: 1 delivered" in out, out + err

    await sign_in(page, acme.admin_email)
    row = page.locator("#purchase-rows tr.purchase-row")
    # The backend's report shows at once, WeChat Pay's once the worker has processed its notification (the page
    # does not refresh itself): the admin reloads it until both are there.
    deadline = time.monotonic() + 30
    while True:
        await page.goto("/purchases")
        if "WeChat Pay" in " ".join(await row.all_inner_texts()) or time.monotonic() > deadline:
            break
        await page.wait_for_timeout(500)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("WeChat Pay")
    await expect(row).to_contain_text("Mini Program backend")
    order_id = (await row.locator("code").first.inner_text()).strip()

    await row.get_by_role("link").click()  # the customer
    await expect(page.locator("#contact-purchases")).to_contain_text(order_id)
    await expect(page.locator("body")).to_contain_text("×")  # the purchase's items on the timeline

    await page.goto("/purchases")
    await page.get_by_role("link", name="Import history").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Import purchases")
    csv_file = tmp_path / "history.csv"
    csv_file.write_text(HISTORY, encoding="utf-8")
    await page.locator("#f-file").set_input_files(str(csv_file))
    await page.get_by_role("button", name="Upload and import").click()
    await expect(page.locator("#import-percent")).to_have_text("100 %", timeout=30_000)  # polled while it runs
    await expect(page.locator("#import-created")).to_have_text("1")
    await expect(page.locator("#import-failed")).to_have_text("1")
    problem = page.locator("#import-problems tbody tr")
    await expect(problem).to_have_count(1)
    await expect(problem).to_contain_text("3")
    await expect(problem).to_contain_text("amount_fen")

    await page.goto("/purchases?q=H-1")
    await expect(page.locator("#purchase-rows tr.purchase-row")).to_have_count(1)
    await expect(page.locator("#purchase-rows")).to_contain_text("Import")
    await expect(page.locator("#purchase-rows")).to_contain_text("Old candle")
