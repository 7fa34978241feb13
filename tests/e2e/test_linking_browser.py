"""Linking an Official Account in a real browser, in the order that works: the page warns that WeChat cannot
reach this server's address; the suggested Token and EncodingAESKey stay the same across reloads until
saved; saved in Siyu first; then WeChat's URL check (played by the simulator, signed as WeChat signs it)
shows on the open page as it arrives, failed and then passed; and the saved Token and EncodingAESKey are
shown again only after the admin enters their password."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp")


def wechat_checks_the_url(sim: Simulator, callback: str, token: str, aes_key: str) -> dict[str, Any]:
    """What the console's "Submit" makes WeChat do: a signed GET with `echostr` to the callback URL, signed
    with the Token the console holds (`token`)."""
    sim.register("oa", OA["app_id"], OA["app_secret"], token=token, aes_key=aes_key, message_mode="safe",
                 callback_url=callback)
    r = httpx.post(f"{sim.base}/_sim/verify", json={"app_id": OA["app_id"]}, timeout=30)
    r.raise_for_status()
    return dict(r.json())


async def test_an_admin_links_the_official_account_in_the_order_that_works(
        page: Any, web_server: WebServer, acme: TenantFixture, sim: Simulator) -> None:
    await sign_in(page, acme.admin_email)
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")
    callback = f"{web_server.base_url}/wechat/{acme.slug}/oa"

    # The browser tests' server is told it is at http://127.0.0.1:…: WeChat could never call that, and the
    # page says so in words, with what to set.
    warning = page.locator("#reach-warning")
    await expect(warning).to_be_visible()
    await expect(warning).to_contain_text(f"WeChat is told to call this server at {web_server.base_url}")
    await expect(warning).to_contain_text("127.0.0.1 is this computer's own (loopback) address")
    await expect(warning).to_contain_text("The address starts with http://, not https://")
    await expect(warning).to_contain_text("Set SIYU_PUBLIC_BASE_URL to the https address")

    # Nothing saved yet: step 1 is Siyu, and the console values wait for it.
    headings = page.locator("#channels-steps h2")
    await expect(headings).to_have_text(["1. Save the account in Siyu", "2. Paste into the WeChat console and submit"])
    await expect(page.locator("#save-first")).to_contain_text("Save step 1 first.")
    await expect(page.locator("#console-values code").first).to_have_text(callback)
    form = page.locator("#form-oa")
    token, aes_key = await form.locator("#f-token").input_value(), await form.locator("#f-aes_key").input_value()
    assert re.fullmatch(r"[A-Za-z0-9]{3,32}", token) and re.fullmatch(r"[A-Za-z0-9]{43}", aes_key), (token, aes_key)
    await page.screenshot(path=str(SHOTS / "siyu-linking-1-unsaved.png"), full_page=True)
    # At 1280 px nothing sticks out sideways (the top bar wraps instead).
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1280

    # The suggestions are the same after a reload (and after signing in again): what the admin may have
    # copied already stays right.
    for _ in range(2):
        await page.reload()
        await expect(form.locator("#f-token")).to_have_value(token)
        await expect(form.locator("#f-aes_key")).to_have_value(aes_key)

    await form.locator("#f-app_id").fill(OA["app_id"])
    await form.locator("#f-app_secret").fill(OA["app_secret"])
    await form.get_by_role("button", name="Save").click()

    # Saved: the steps in their order, and the page waits for WeChat's check.
    await expect(headings).to_have_text(["1. Save the account in Siyu", "2. Paste into the WeChat console and submit",
                                         "3. WeChat checks the URL", "4. Check the connection"])
    check = page.locator("#url-check-oa")
    await expect(check).to_contain_text("Waiting for WeChat's check of the URL…")
    await expect(page.locator("#save-first")).to_have_count(0)
    # Just saved: the values to paste into the console are shown once, beside the URL.
    console = page.locator("#console-values")
    await expect(console.locator("code", has_text=token)).to_have_text(token)
    await expect(console.locator("code", has_text=aes_key)).to_have_text(aes_key)
    await page.screenshot(path=str(SHOTS / "siyu-linking-2-waiting.png"), full_page=True)
    # Later visits hide them.
    await page.reload()
    await expect(console.locator("code.masked")).to_have_count(2)
    await expect(console).not_to_contain_text(token)
    await expect(check).to_contain_text("Waiting for WeChat's check of the URL…")

    # The admin pastes a Token with a typo into the console and submits: WeChat's check arrives, is refused,
    # and the open page shows why, without a reload.
    refused = wechat_checks_the_url(sim, callback, token[:-1] + ("x" if token[-1] != "x" else "y"), aes_key)
    assert refused["status"] == 403 and not refused["passed"], refused
    await expect(check).to_contain_text("WeChat's check of the URL arrived, and failed.", timeout=8000)
    await expect(check).to_contain_text("Its signature does not match the Token saved in Siyu")
    await expect(check.locator(".alert-error")).to_be_visible()
    await page.screenshot(path=str(SHOTS / "siyu-linking-3-refused.png"), full_page=True)

    # Corrected in the console and submitted again: WeChat gets its echostr back, and the page says so.
    passed = wechat_checks_the_url(sim, callback, token, aes_key)
    assert passed["passed"], passed
    await expect(check).to_contain_text("✔ WeChat checked the URL, and Siyu answered it correctly.", timeout=8000)
    await expect(check.locator(".alert-ok")).to_be_visible()

    # The saved Token and EncodingAESKey, again: only after the password.
    password = console.locator("#f-password")
    await password.fill("not my password")
    await console.get_by_role("button", name="Show the Token and EncodingAESKey").click()
    await expect(console.locator("#msg-password")).to_have_text("This is not your password.")
    await expect(console).not_to_contain_text(token)
    await console.locator("#f-password").fill(PASSWORD)
    await console.get_by_role("button", name="Show the Token and EncodingAESKey").click()
    await expect(console.locator("code", has_text=token)).to_have_text(token)
    await expect(console.locator("code", has_text=aes_key)).to_have_text(aes_key)
    await expect(console.locator("code.masked")).to_have_count(0)
    await expect(console.locator("#f-password")).to_have_count(0)
    await page.screenshot(path=str(SHOTS / "siyu-linking-4-revealed.png"), full_page=True)

    # The account works now: a reload moves on to the next one to link; back on it, the Token and key are
    # hidden again and the check that passed stays shown.
    await page.reload()
    await expect(page.get_by_role("tab", name=re.compile("Mini Program"))).to_have_attribute("aria-selected", "true")
    await page.get_by_role("tab", name=re.compile("Official Account")).click()
    await expect(page.locator("#console-values code.masked")).to_have_count(2)
    await expect(page.locator("#url-check-oa")).to_contain_text("Siyu answered it correctly")
