"""A marketer builds a segment in a real browser: the preview's count and channel bars follow the filters as
they change (htmx, debounced), the segment is saved, its members listed, and the list loads its count lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.segments.people import crowd, tag

pytestmark = pytest.mark.e2e

SCREENSHOT = Path("/tmp/siyu-segment-editor.png")


async def test_preview_follows_the_filters_and_the_segment_is_saved(page: Any, web_server: WebServer,
                                                                   acme: TenantFixture) -> None:
    vip = await tag(acme.id, "VIP")
    await crowd(acme.id, 3, "vip-oa", channels={"oa": False}, tags=[vip], purchased=5)
    await crowd(acme.id, 2, "vip-mp", channels={"mp": False}, tags=[vip], purchased=200)
    await crowd(acme.id, 4, "other", channels={"oa": False, "wecom": False})
    await sign_in(page, acme.admin_email)  # the brand's admin: a rep would see only their own people listed

    await page.get_by_role("link", name="Segments", exact=True).click()
    await page.get_by_role("link", name="New segment").first.click()
    preview = page.locator("#preview")
    count = preview.locator(".seg-big-count strong")
    await expect(count).to_have_text("9")

    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    await page.get_by_label("VIP").first.check()
    await expect(count).to_have_text("5")
    await page.locator("#f-last_purchase").select_option("within")
    await page.locator("[name='last_purchase.days']").fill("30")  # typing, debounced: no need to leave the field
    await expect(count).to_have_text("3")
    await expect(preview.get_by_role("link")).to_have_count(3)  # a few members, linked
    assert posts and all(u.endswith("/segments/preview") for u in posts), posts
    await expect(page).to_have_url(f"{web_server.base_url}/segments/new")  # nothing saved, nothing navigated

    await page.locator("#f-name").fill("Recent VIP buyers")
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    await page.get_by_role("button", name="Save segment").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Recent VIP buyers")
    await expect(page.locator("#member-rows tr")).to_have_count(3)

    await page.get_by_role("link", name="Segments", exact=True).click()
    row = page.locator("#segments tbody tr").first
    await expect(row.locator(".seg-count")).to_have_text("3")  # fetched after the page was shown
    await expect(row).to_contain_text("Purchased in the last 30 days")
