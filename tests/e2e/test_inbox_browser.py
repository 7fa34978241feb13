"""A sales rep works the live inbox in a real browser, with the real pipeline behind it: the simulator pushes
a customer's 转人工 to the web server, the worker (gateway batch → contacts → inbox) hands the conversation
to the online rep, and it appears in her open inbox without a reload; she opens it with `j`, inserts a canned
reply with `/shortcut`, sends it (sending → sent, live), the simulator records the customer-service message,
customer text that looks like HTML stays text, and `e` resolves."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from siyu.core import db
from siyu.inbox import canned
from siyu.inbox.conversations import viewer_for
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

SCREENSHOT = Path("/tmp/siyu-inbox.png")
LIVE = 20_000  # ms: callback → worker jobs → SSE → the browser
XSS = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"


async def test_a_customer_reaches_an_online_rep_live(page: Any, web_server: WebServer, worker: Any,
                                                     acme: TenantFixture, sim: Simulator) -> None:
    actor = tenants.Actor.cli()
    await tenants.do_link_channel(actor, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    rep = await staff_svc.do_create_staff(actor, acme.id, "li.na@acme.test", "agent", PASSWORD, name="Li Na")
    await canned.do_create_canned(acme.id, await viewer_for(acme.id, rep.id),
                                  {"shortcut": "thanks", "body": "谢谢您的耐心，马上为您处理。"}, actor)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))

    await sign_in(page, rep.email)
    await page.get_by_role("link", name="Inbox", exact=True).click()
    await expect(page).to_have_url(f"{web_server.base_url}/inbox")
    await expect(page.locator("#live-state")).to_have_text("Live")
    await expect(page.locator("#conv-list .conv-row")).to_have_count(0)
    # She goes online in the inbox header.
    online = page.locator("#presence button[value='online']")
    await online.click()
    await expect(page.locator("#presence button[value='online']")).to_have_attribute("aria-pressed", "true")
    await page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # The customer follows the Official Account, then asks for a human.
    assert (await asyncio.to_thread(sim.push, oa, "alice", "follow"))["delivered"]
    pushed = await asyncio.to_thread(sim.push, oa, "alice", "text", text="你好，我要转人工")
    assert pushed["delivered"], pushed
    row = page.locator("#conv-list .conv-row")
    await expect(row).to_have_count(1, timeout=LIVE)
    await expect(row).to_contain_text("你好，我要转人工")
    await expect(page.locator("#inbox-boxes a[data-box='mine'] .box-total")).to_have_text("1")  # counts, live too
    assert await page.evaluate("window.__sameDocument === true")  # arrived live, no reload

    # `j` opens it.
    await page.locator("body").press("j")
    thread = page.locator("#thread-messages")
    await expect(thread).to_contain_text("你好，我要转人工")
    await expect(page.locator("#conv-status")).to_have_text("Assigned")
    await expect(thread).to_contain_text("Assigned to Li Na")
    await expect(page).to_have_url(re.compile(r"/inbox/conversations/\d+"))
    # The window: 5 replies within 48 h, one used by the notice telling the customer who answers.
    await expect(page.locator("#window-state")).to_contain_text(re.compile(r"of 5 left · closes in 4[78] h"),
                                                                 timeout=LIVE)

    # `r` focuses the reply; `/thanks` and a space insert the canned reply.
    await page.locator("body").press("r")
    composer = page.locator("#composer-text")
    await expect(composer).to_be_focused()
    await composer.press_sequentially("/thanks ")
    await expect(composer).to_have_value("谢谢您的耐心，马上为您处理。")
    await composer.press("End")
    await composer.press_sequentially(" 请问需要什么帮助？")
    await page.locator("#composer-send").click()
    reply = "谢谢您的耐心，马上为您处理。 请问需要什么帮助？"
    sent = page.locator("#thread-messages .msg-out", has_text=reply)
    await expect(sent).to_have_count(1)
    await expect(composer).to_have_value("")
    await expect(sent.locator(".msg-state")).to_have_text("Sent", timeout=LIVE)  # sending → sent, live
    messages = await asyncio.to_thread(sim.messages, app_id=oa, endpoint="cgi-bin/message/custom/send")
    assert reply in [m["payload"]["text"]["content"] for m in messages]
    assert messages[-1]["to"] == pushed["openid"]

    # Whatever the customer writes is text: no element, no script, no dialog.
    await asyncio.to_thread(sim.push, oa, "alice", "text", text=XSS)
    incoming = page.locator("#thread-messages .msg-in", has_text="onerror")
    await expect(incoming).to_have_count(1, timeout=LIVE)
    await expect(incoming.locator(".msg-body")).to_have_text(XSS)
    await expect(page.locator("#conv-list .conv-row")).to_contain_text("<img src=x")
    assert await page.locator("#thread-messages img, #conv-list img, #thread-messages script").count() == 0
    await page.wait_for_timeout(300)
    assert dialogs == []
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # `e` resolves: the conversation leaves her open inbox, and stays hers to look at (and reopen).
    await composer.press("Escape")
    await page.locator("body").press("e")
    await expect(page.locator("#conv-list .conv-row")).to_have_count(0, timeout=LIVE)
    await expect(page.locator("#thread-messages")).to_contain_text("Resolved by Li Na", timeout=LIVE)
    status = await db.fetchrow("SELECT status FROM inbox_conversation")
    assert status["status"] == "resolved"
    assert await page.evaluate("window.__sameDocument === true")
