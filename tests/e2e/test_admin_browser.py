"""The admin pages in a real browser at 1400 px: the top bar on one row in both languages with the settings
under one menu, the auto-reply form showing only the chosen trigger's fields (and editing a rule), the audit
log's filters, and a platform admin's suspension asking for the tenant's slug."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from siyu.tenants import services as tenants
from siyu.tenants.tables import Tenant
from siyu.wechat import services as wechat
from tests.conftest import TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp")
WIDE = {"width": 1400, "height": 900}


async def rows_of_topbar(page: Any) -> list[float]:
    """The vertical centre of every visible item of the top bar."""
    return await page.evaluate("""() => {
        const items = document.querySelectorAll(
            '.topbar .brand, .mainnav > a, .navmenu > summary, .lang-switch button, .whoami, .topbar-right > a, '
            + '.topbar-right form button');
        return Array.from(items).filter(el => el.offsetParent !== null).map(el => {
            const r = el.getBoundingClientRect(); return r.top + r.height / 2; });
    }""")


@pytest.mark.parametrize("language", ["English", "简体中文"])
async def test_the_admin_menu_fits_on_one_row_at_1400_px(page: Any, web_server: WebServer, acme: TenantFixture,
                                                        language: str) -> None:
    # A long brand name, as real ones are: the bar must still hold on one row.
    await Tenant.update({Tenant.name: "Maison Lumière Shanghai 上海旗舰店 (Demo)"}).where(Tenant.id == acme.id)
    await page.set_viewport_size(WIDE)
    await sign_in(page, acme.admin_email)
    await page.locator("form.lang-switch").get_by_role("button", name=language).click()
    await expect(page.locator("form.lang-switch").get_by_role("button", name=language)).to_have_attribute(
        "aria-pressed", "true")
    for path in ("/settings/audit", "/contacts", "/inbox"):
        await page.goto(path)
        centres = await rows_of_topbar(page)
        assert len(centres) >= 10
        assert max(centres) - min(centres) < 6, (path, centres)
        height = await page.evaluate("() => document.querySelector('.topbar').getBoundingClientRect().height")
        assert height < 64, (path, height)
    await page.goto("/settings/audit")
    await page.screenshot(path=str(SHOTS / f"siyu-menu-{'en' if language == 'English' else 'zh'}.png"))

    # The settings pages open from the one menu, which closes on Escape and on a click elsewhere.
    menu = page.locator("details.navmenu")
    links = menu.locator(".navmenu-list a")
    await expect(links.first).to_be_hidden()
    await menu.locator("summary").click()
    await expect(links).to_have_count(7)
    await expect(links.first).to_be_visible()
    await page.screenshot(path=str(SHOTS / f"siyu-menu-open-{'en' if language == 'English' else 'zh'}.png"))
    await page.keyboard.press("Escape")
    await expect(links.first).to_be_hidden()
    await menu.locator("summary").click()
    await page.mouse.click(1350, 850)  # anywhere outside the menu
    await expect(links.first).to_be_hidden()
    await menu.locator("summary").click()
    await links.nth(1).click()
    await expect(page).to_have_url(f"{web_server.base_url}/settings/auto-replies")


async def test_the_rule_form_shows_only_the_chosen_triggers_fields(page: Any, web_server: WebServer,
                                                                  acme: TenantFixture) -> None:
    keyword_rule = await wechat.do_create_rule(tenants.Actor.cli(), acme.id, {
        "trigger": "keyword", "match_type": "exact", "keyword": "价格", "reply": "旧价目表"})
    await wechat.do_create_rule(tenants.Actor.cli(), acme.id, {"trigger": "click", "menu_key": "MENU_HOURS",
                                                               "reply": "10:00–22:00"})
    await page.set_viewport_size(WIDE)
    await sign_in(page, acme.admin_email)
    await page.goto("/settings/auto-replies")
    form = page.locator("#rule-form")
    trigger = form.locator("#f-trigger")
    keyword, match, scene, menu_key = (form.locator(s) for s in ("#f-keyword", "#f-match_type", "#f-scene",
                                                                 "#f-menu_key"))

    async def shows(*visible: Any) -> None:
        for field in (keyword, match, scene, menu_key):
            if field in visible:
                await expect(field).to_be_visible()
            else:
                await expect(field).to_be_hidden()

    await expect(trigger).to_have_value("keyword")
    await shows(keyword, match)
    await trigger.select_option("welcome")
    await shows(scene)
    await trigger.select_option("click")
    await shows(menu_key)
    await page.screenshot(path=str(SHOTS / "siyu-auto-reply-click.png"), full_page=True)

    # A menu rule, added from the form: only its fields were there to fill.
    await menu_key.fill("MENU_HUMAN")
    await form.locator("#f-reply").fill("A person will answer you shortly.")
    await form.get_by_role("button", name="Add rule").click()
    await expect(page.locator("#rules")).to_contain_text("MENU_HUMAN")
    await expect(page.locator("#toasts")).to_contain_text("Saved.")
    await expect(page.locator("#f-trigger")).to_have_value("keyword")  # a fresh form, for the next rule
    await shows(keyword, match)

    # Editing: the rule comes into the form (htmx), with its trigger's fields only.
    await page.locator(f"a.edit-rule[href='/settings/auto-replies/{keyword_rule}']").click()
    await expect(page.locator("#rule-form-title")).to_have_text("Change the rule")
    await expect(page).to_have_url(f"{web_server.base_url}/settings/auto-replies/{keyword_rule}")
    await expect(keyword).to_have_value("价格")
    await shows(keyword, match)
    await match.select_option("contains")
    await keyword.fill("价格表")
    await form.locator("#f-reply").fill("2026 新价目表")
    await page.screenshot(path=str(SHOTS / "siyu-auto-reply-edit.png"), full_page=True)
    await form.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#rule-form-title")).to_have_text("Add a rule")
    await expect(page).to_have_url(f"{web_server.base_url}/settings/auto-replies")
    await expect(page.locator("#rules")).to_contain_text("2026 新价目表")
    await expect(page.locator("#rules")).not_to_contain_text("旧价目表")
    await page.locator("#f-text").fill("有价格表吗")
    await expect(page.locator("#try-result")).to_contain_text("2026 新价目表")

    # Without JavaScript the form still works: every field is there, with its "… only" help.
    await page.context.route("**/static/ui.js", lambda route: route.abort())
    await page.goto("/settings/auto-replies")
    await shows(keyword, match, scene, menu_key)


async def test_the_audit_log_filters_as_you_choose(page: Any, web_server: WebServer, acme: TenantFixture) -> None:
    await wechat.do_create_rule(tenants.Actor.cli(), acme.id, {"trigger": "welcome", "reply": "Welcome!"})
    await page.set_viewport_size(WIDE)
    await sign_in(page, acme.admin_email)
    await page.goto("/settings/audit")
    rows = page.locator("#audit-rows tr.audit-entry")
    await expect(rows.first).to_contain_text("Acme Admin signed in.")
    await page.locator("select[name='action']").select_option(label="Auto-reply added")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("The command line added the auto-reply welcoming new followers.")
    await expect(page).to_have_url(f"{web_server.base_url}/settings/audit?action=auto_reply.created")
    await expect(page.get_by_role("link", name="Export CSV")).to_have_attribute(
        "href", "/settings/audit/export.csv?action=auto_reply.created")
    await page.screenshot(path=str(SHOTS / "siyu-audit-filtered.png"), full_page=True)
    await page.locator("form.lang-switch").get_by_role("button", name="简体中文").click()
    await expect(rows.first).to_contain_text("命令行 添加了自动回复（关注欢迎语）。")
    await page.screenshot(path=str(SHOTS / "siyu-audit-zh.png"), full_page=True)


async def test_suspending_a_tenant_asks_for_its_slug(page: Any, web_server: WebServer, acme: TenantFixture,
                                                    platform_admin_email: str) -> None:
    await page.set_viewport_size(WIDE)
    await sign_in(page, platform_admin_email)
    await page.goto(f"/platform/tenants/{acme.id}")
    await page.get_by_role("link", name="Suspend tenant…").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Suspend Acme?")
    status = Tenant.select(Tenant.status).where(Tenant.id == acme.id).first()
    assert (await status)["status"] == "active"

    confirm = page.get_by_label("Type the slug acme to confirm")
    button = page.get_by_role("button", name="Suspend tenant")
    await button.click()  # empty: the browser asks for it, nothing is sent
    await expect(page).to_have_url(f"{web_server.base_url}/platform/tenants/{acme.id}/suspend")
    await confirm.fill("acme-typo")
    await button.click()
    await expect(page.locator("#msg-confirm")).to_have_text("Type the slug acme to confirm.")
    assert (await Tenant.select(Tenant.status).where(Tenant.id == acme.id).first())["status"] == "active"
    await page.screenshot(path=str(SHOTS / "siyu-suspend-confirm.png"), full_page=True)

    await page.get_by_label("Type the slug acme to confirm").fill("acme")
    await page.get_by_role("button", name="Suspend tenant").click()
    await expect(page).to_have_url(f"{web_server.base_url}/platform/tenants/{acme.id}")
    await expect(page.get_by_role("button", name="Reactivate tenant")).to_be_visible()
    assert (await Tenant.select(Tenant.status).where(Tenant.id == acme.id).first())["status"] == "suspended"
