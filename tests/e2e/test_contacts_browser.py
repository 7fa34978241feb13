"""The contact list's bulk actions in a real browser (issue 10, point 16): tick contacts, add a tag to them
(the ticked boxes belong to the bulk form through `form=`; htmx posts them and reloads the list), then tag
every contact a filter selects: a confirmation, the progress page, the job through the real worker, and the
progress page ending by itself. The filters and the one-time key travel with the form."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.contacts.test_pages import person

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]


async def test_tag_the_ticked_contacts_then_all_that_match(page: Any, web_server: WebServer, app: Any,
                                                           acme: TenantFixture,
                                                           worker: subprocess.Popen[Any]) -> None:
    oa = [await person(acme.id, "oa", f"oE2eOa{n:06d}", name=f"OA fan {n}", minutes=n) for n in range(3)]
    mp = [await person(acme.id, "mp", f"oE2eMp{n:06d}", name=f"MP user {n}", minutes=10 + n) for n in range(2)]
    await sign_in(page, acme.admin_email)
    await page.goto("/contacts")
    for contact_id in (oa[0], mp[1]):
        await page.locator(f"input[type=checkbox][name=contact][value='{contact_id}']").check()
    await page.locator("#bulk-form input[name=name]").fill("Trade fair")
    await page.get_by_role("button", name="Apply to the ticked contacts").click()
    await expect(page.locator(".toast")).to_contain_text("Tag added (contacts: 2).")
    for contact_id in oa + mp:
        row = page.locator("tr", has=page.locator(f"input[name=contact][value='{contact_id}']"))
        if contact_id in (oa[0], mp[1]):
            await expect(row).to_contain_text("Trade fair")
        else:
            await expect(row).not_to_contain_text("Trade fair")

    # The new tag can be removed at once (the bulk form's choices came back with the list), from one of them.
    await page.locator("#bulk-action").select_option("untag")
    await page.locator("#bulk-form select[name=tag_id]").select_option(label="Trade fair")
    await page.locator(f"input[type=checkbox][name=contact][value='{mp[1]}']").check()
    await page.get_by_role("button", name="Apply to the ticked contacts").click()
    await expect(page.locator(".toast").last).to_contain_text("Tag removed (contacts: 1).")
    await expect(page.locator("tr", has=page.locator(f"input[name=contact][value='{mp[1]}']"))) \
        .not_to_contain_text("Trade fair")
    await expect(page.locator("tr", has=page.locator(f"input[name=contact][value='{oa[0]}']"))) \
        .to_contain_text("Trade fair")
    await page.locator("#bulk-action").select_option("tag")

    # Every Official Account follower: the filter, then the action on all that match, confirmed.
    await page.locator("#contact-filters select[name=channel]").select_option("oa")
    await expect(page.locator("#contact-rows tr")).to_have_count(3)
    await page.locator("#bulk-form input[name=name]").fill("OA fans")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Apply to all that match").click()
    await expect(page.locator("h1")).to_contain_text("Adding the tag “OA fans”")
    await expect(page.locator("#bulk-progress")).to_have_attribute("data-state", "done", timeout=15_000)
    await expect(page.locator(".bulk-state")).to_contain_text("Done: 3 contacts reached, 3 newly tagged.")
    await page.get_by_role("link", name="Back to the contacts").click()
    await expect(page).to_have_url(f"{web_server.base_url}/contacts?channel=oa")
    await expect(page.locator("#contact-rows")).to_contain_text("OA fans")
    for contact_id in oa:
        row = page.locator("tr", has=page.locator(f"input[name=contact][value='{contact_id}']"))
        await expect(row).to_contain_text("OA fans")
