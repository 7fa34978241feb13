"""Under the Content-Security-Policy (scripts and styles from Siyu only) every page still works in a real
browser, and the browser refuses nothing: each page of an admin, an agent and the platform admin is opened,
the htmx parts are used (active search, a live preview, a fragment form, the live inbox, a copy button), and
the console carries no CSP refusal (the `page` fixture fails the test on one). The control at the end shows
the policy is enforced and that a refusal would be seen."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.web.test_cross_tenant import Seeded, acme_seeded  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]


async def visit(page: Any, path: str) -> None:
    response = await page.goto(path)
    assert response is not None and response.status == 200, f"{path}: {response and response.status}"
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    # htmx was told not to inject its indicator styles (a <style> element the policy would refuse).
    assert await page.locator("head style").count() == 0
    assert await page.evaluate("() => typeof htmx === 'object' && htmx.config.includeIndicatorStyles === false")


async def test_every_page_works_without_a_policy_refusal(page: Any, web_server: WebServer, app: Any,
                                                         acme_seeded: Seeded) -> None:  # noqa: F811
    """(`app` installs the after-commit effects the seeding uses.)"""
    s = acme_seeded
    await sign_in(page, s.tenant.admin_email)
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    for path in ("/settings/channels", "/settings/channels?step=mp", "/settings/general", "/settings/staff",
                 f"/settings/staff/{s.tenant.agent_id}", "/settings/api-keys", "/settings/audit",
                 "/settings/auto-replies", "/settings/wechat-events", "/settings/inbox/", "/workspace",
                 "/contacts", f"/contacts/{s.contact_id}", "/segments", f"/segments/{s.segment_id}",
                 "/inbox/manager", "/inbox/canned", f"/inbox/canned/{s.canned_id}", "/account/password"):
        await visit(page, path)

    # A copy button (app.js) on the channels page.
    await visit(page, "/settings/channels?step=oa")
    copy = page.locator("button[data-copy]").first
    await copy.click()
    await expect(copy).to_have_text("Copied")

    # Active search (htmx keyup → fragment swap).
    await visit(page, "/contacts")
    await page.locator("#f-q").fill("nobody-by-this-name")
    await expect(page.locator("#results")).not_to_contain_text("oSeed")

    # A fragment form (htmx POST → swap) and an error shown in the flash area.
    await visit(page, "/settings/auto-replies")
    await page.locator("#f-text").fill("Acme price")  # typing, debounced
    await expect(page.locator("#try-result")).to_contain_text("Acme prices")

    # The live preview of the segment editor (htmx, debounced).
    await visit(page, "/segments/new")
    await expect(page.locator("#preview .seg-big-count strong")).to_have_text(re.compile(r"^[1-9][0-9]*$"))

    # The live inbox: the event stream connects, a conversation opens in the thread pane.
    await visit(page, "/inbox?box=all")
    await expect(page.locator("#live-state")).to_have_text("Live")
    await page.locator(f"#conv-row-{s.conversation_id} a").first.click()
    await expect(page.locator("#composer-text")).to_be_visible()


async def test_the_platform_pages_and_error_pages_work_too(page: Any, web_server: WebServer,
                                                          acme: TenantFixture, platform_admin_email: str) -> None:
    await visit(page, "/login")
    missing = await page.goto("/no/such/page")
    assert missing is not None and missing.status == 404
    assert missing.headers["x-frame-options"] == "DENY"
    await sign_in(page, platform_admin_email)
    await expect(page).to_have_url(f"{web_server.base_url}/platform/tenants")
    await visit(page, f"/platform/tenants/{acme.id}")
    # Switching the language is a plain form post: allowed by form-action 'self'.
    await page.get_by_role("button", name="简体中文").click()
    await expect(page.get_by_role("button", name="English")).to_be_visible()


async def test_the_policy_is_enforced_and_a_refusal_would_be_seen(page: Any, web_server: WebServer,
                                                                  acme: TenantFixture) -> None:
    await sign_in(page, acme.agent_email)
    await visit(page, "/workspace")
    page.csp_refusals_expected = True
    ran = await page.evaluate("""() => {
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true';
        document.body.appendChild(s);
        const d = document.createElement('div');
        d.setAttribute('style', 'color: red');
        document.body.appendChild(d);
        return window.__inlineRan === true;
    }""")
    assert ran is False
    for _ in range(50):
        if len(page.csp_refusals) >= 2:
            break
        await asyncio.sleep(0.1)
    assert any("script" in m for m in page.csp_refusals), page.csp_refusals
    assert any("style" in m for m in page.csp_refusals), page.csp_refusals
