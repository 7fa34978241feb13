"""The API's interactive reference at /schema works in a real browser under the Content-Security-Policy:
Swagger UI comes from Siyu's own static files (fetched from npm by `make install`), renders the OpenAPI
document (the operations, their parameters and typed bodies, the models), asks no other site for anything,
and the browser refuses nothing (the `page` fixture fails the test on a CSP refusal or a JavaScript error).
On the old code /schema answered 404."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import TenantFixture
from tests.e2e.conftest import WebServer

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]


async def test_the_api_viewer_renders_the_schema_under_the_policy(page: Any, web_server: WebServer,
                                                                   acme: TenantFixture) -> None:
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((web_server.base_url, "data:")) else elsewhere.append(r.url))
    response = await page.goto("/schema")
    assert response is not None and response.status == 200, response and response.status
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert "'unsafe" not in response.headers["content-security-policy"]

    # The document, rendered: its title and description, and the operations grouped by tag.
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Siyu API")
    await expect(page.locator(".swagger-ui .info")).to_contain_text("Authorization: Bearer <API key>")
    for tag in ("contacts", "segments", "inbox", "purchases", "tenant", "health"):
        await expect(page.locator(f".opblock-tag-section h3[data-tag='{tag}']")).to_be_visible()

    # An operation opened: the contact list's keyset parameters and its typed response.
    summary = page.locator(".opblock-get .opblock-summary-path[data-path='/api/v1/contacts']")
    await summary.click()
    block = page.locator(".opblock-get.is-open")
    for name in ("identity", "cursor", "limit", "updated_since", "tag", "segment"):
        await expect(block.locator(f"tr[data-param-name='{name}']")).to_be_visible()
    await expect(block.locator(".responses-wrapper")).to_contain_text("next_cursor")
    await block.locator(".responses-wrapper button[data-name='model']").first.click()
    await expect(block.locator(".responses-wrapper .model-box").first).to_contain_text("ContactPage")

    # A request body (POST): its model, not a free-form object.
    await page.locator(".opblock-post .opblock-summary-path[data-path='/api/v1/purchases']").click()
    post = page.locator(".opblock-post.is-open")
    await expect(post.locator(".opblock-section-request-body")).to_contain_text("order_id")

    # The models section lists the API's named models.
    models = page.locator("section.models")
    await expect(models).to_be_visible()
    for name in ("ContactPage", "PurchaseIn", "Readiness"):
        await expect(models.locator(".json-schema-2020-12__title", has_text=re.compile(f"^{name}$"))).to_have_count(1)

    # Tried out with an API key: the Authorize dialog, then a call from the page to this origin with the key.
    from siyu.tenants import services as svc

    _, key = await svc.do_create_api_key(svc.Actor.cli(), acme.id, "viewer")
    await page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await dialog.locator("input[type='text'], input[type='password']").first.fill(key)
    await dialog.locator("button.authorize").click()
    await dialog.locator("button.btn-done").click()
    await page.locator(".opblock-get .opblock-summary-path[data-path='/api/v1/tenant']").click()
    tenant_op = page.locator(".opblock-get.is-open", has=page.locator("[data-path='/api/v1/tenant']"))
    await tenant_op.locator("button.try-out__btn").click()
    await tenant_op.locator("button.execute").click()
    live = tenant_op.locator(".live-responses-table")
    await expect(live.locator("tbody .response-col_status")).to_contain_text("200")
    await expect(live).to_contain_text(f'"slug": "{acme.slug}"')

    # Swagger UI styles through the DOM's style properties (allowed), never through a <style> element.
    assert await page.locator("style").count() == 0
    assert elsewhere == [], f"the viewer asked other sites: {elsewhere}"
    assert page.csp_refusals == []
