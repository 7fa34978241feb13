"""A tenant admin links their Official Account in a real browser: sign in, live field validation,
save, the callback URL to paste into WeChat, "Check connection" against the simulator; and the
language switch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer

pytestmark = pytest.mark.e2e

SCREENSHOT = Path("/tmp/siyu-onboarding.png")
ZH_CATALOG = Path(__file__).resolve().parents[2] / "frontend/locale/zh_CN/LC_MESSAGES/messages.po"


async def sign_in(page: Any, email: str) -> None:
    await page.goto("/login")
    await page.locator("#f-email").fill(email)
    await page.locator("#f-password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def test_admin_links_official_account_and_checks_connection(
    page: Any, web_server: WebServer, acme: TenantFixture, sim: Simulator
) -> None:
    await sign_in(page, acme.admin_email)
    # A tenant admin lands on the onboarding page.
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Link your WeChat accounts")
    await expect(page.locator("html")).to_have_attribute("lang", "en")

    oa_state = page.locator(".stepper li").first.locator(".step-state")
    await expect(oa_state).to_have_text("not linked")
    form = page.locator("#form-oa")
    app_id = form.locator("#f-app_id")
    app_id_msg = form.locator("#msg-app_id")

    # A wrong AppID is pointed out under the field while typing, before anything is submitted.
    await app_id.fill("wx12345")
    await expect(app_id_msg).to_have_text(
        "An AppID is “wx” followed by 16 hexadecimal characters (0–9, a–f).")
    await expect(app_id_msg).to_have_class(re.compile(r"\berror\b"))
    await expect(page.locator("#check-btn-oa")).to_have_count(0)  # nothing saved yet
    assert posts and all(u.endswith("/settings/channels/oa/validate?field=app_id") for u in posts), posts
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")

    # Corrected, the message clears to a tick.
    await app_id.fill(OA["app_id"])
    await expect(app_id_msg).to_have_text("✔")
    await expect(app_id_msg).not_to_have_class(re.compile(r"\berror\b"))

    await form.locator("#f-app_secret").fill(OA["app_secret"])
    await form.locator("#f-token").fill(OA["token"])
    await form.locator("#f-aes_key").fill(OA["aes_key"])
    await expect(form.locator("#msg-aes_key")).to_have_text("✔")
    await form.get_by_role("button", name="Save").click()

    # Saved: the step is linked, the console values show the callback URL of this server, and the
    # connection check appears.
    callback = f"{web_server.base_url}/wechat/{acme.slug}/oa"
    await expect(oa_state).to_have_text("linked")
    await expect(page.locator("#console-values code").first).to_have_text(callback)
    await expect(page.locator("#console-values")).to_contain_text(OA["token"])
    await expect(page.get_by_role("heading", name="3. WeChat checks the URL")).to_be_visible()
    await expect(page.get_by_role("heading", name="4. Check the connection")).to_be_visible()
    await expect(page.locator("#toasts")).to_contain_text("Saved. Now paste the URL, Token and EncodingAESKey")
    await expect(page.get_by_text(callback, exact=True)).to_be_visible()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Not yet known to WeChat: the check explains the failure.
    check = page.get_by_role("button", name="Check connection")
    outcome = page.locator("#check-outcome")
    await check.click()
    await expect(outcome).to_contain_text("The AppID or CorpID is not valid.")
    await expect(outcome).to_have_class(re.compile(r"\balert-error\b"))

    # Registered with (simulated) WeChat, the same credentials connect.
    sim.register("wechat", OA["app_id"], OA["app_secret"])
    await check.click()
    await expect(outcome).to_contain_text("Connected")
    await expect(outcome).to_have_class(re.compile(r"\balert-ok\b"))

    # The outcome is remembered. A reload moves on to the next account to link, the Mini Program;
    # the Official Account's step says it is connected, and its page when it last was.
    await page.reload()
    oa_tab = page.get_by_role("tab", name=re.compile("Official Account"))
    await expect(oa_state).to_have_text("✔ connected")
    await expect(page.get_by_role("tab", name=re.compile("Mini Program"))).to_have_attribute("aria-selected", "true")
    await oa_tab.click()
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels?step=oa")
    await expect(page.locator("#check-oa")).to_contain_text("Last check")
    await expect(page.locator("#check-oa .ok")).to_have_text("connected")


async def test_language_switch_shows_the_page_in_chinese(
    page: Any, web_server: WebServer, acme: TenantFixture
) -> None:
    await sign_in(page, acme.admin_email)
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")
    await expect(page.locator("html")).to_have_attribute("lang", "en")

    switch = page.locator("form.lang-switch")
    await switch.get_by_role("button", name="简体中文").click()

    # Back on the same page, now in Chinese, and the choice is shown as the active one.
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(switch.get_by_role("button", name="简体中文")).to_have_attribute("aria-pressed", "true")

    if ZH_CATALOG.exists():
        from siyu.core import i18n

        i18n.catalog.cache_clear()
        zh = i18n.catalog("zh_CN")
        checks = {
            "h1": ("Link your WeChat accounts", page.get_by_role("heading", level=1)),
            "nav": ("WeChat accounts", page.locator("nav.mainnav a[href='/settings/channels']")),
            "stepper": ("Official Account", page.locator(".stepper li").first),
        }
        translated = {k: (zh[msgid], loc) for k, (msgid, loc) in checks.items() if zh.get(msgid)}
        assert translated, f"{ZH_CATALOG} translates none of {[m for m, _ in checks.values()]}"
        for text, loc in translated.values():
            await expect(loc).to_contain_text(text)

    # The choice sticks to the user: a new sign-in in a fresh browser opens in Chinese.
    await page.context.clear_cookies()
    await sign_in(page, acme.admin_email)
    await expect(page).to_have_url(f"{web_server.base_url}/settings/channels")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
