"""A reply whose answer never came, in a real browser with the real worker behind it: WeChat (the
simulator) takes 11 s to answer `message/custom/send`, the worker gives up after its default 10 s, and the
open thread turns from "Sending…" to "May not have been delivered" live, with a "Send again" button. The
customer has one copy. The rep chooses to send it again (confirming), and the new message goes out."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from siyu.core import db
from siyu.inbox import actions
from siyu.inbox.config import do_update_settings
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

SCREENSHOT = Path("/tmp/siyu-send-unknown.png")
SEND = "cgi-bin/message/custom/send"
LATE = 25_000  # ms: the worker waits 10 s for WeChat, then the thread updates live


async def test_a_reply_without_an_answer_may_not_have_arrived_and_the_rep_sends_it_again(
        page: Any, web_server: WebServer, worker: Any, acme: TenantFixture, sim: Simulator) -> None:
    actor = tenants.Actor.cli()
    await tenants.do_link_channel(actor, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    rep = await staff_svc.do_create_staff(actor, acme.id, "li.na@acme.test", "agent", PASSWORD, name="Li Na")
    await actions.do_set_presence(acme.id, rep.id, "online", actor)
    await do_update_settings(acme.id, {"handoff_keywords": "人工", "unanswered_limit": "0", "sla_minutes": "60",
                                       "recent_days": "30"}, actor)
    await asyncio.to_thread(sim.push, oa, "alice", "follow")
    await asyncio.to_thread(sim.push, oa, "alice", "text", text="我要转人工")
    for _ in range(200):
        conv = await db.fetchrow("SELECT id, assignee FROM inbox_conversation")
        if conv is not None and conv["assignee"] == rep.id:
            break
        await asyncio.sleep(0.1)
    assert conv is not None and conv["assignee"] == rep.id

    await sign_in(page, rep.email)
    await page.goto(f"/inbox/conversations/{conv['id']}")
    await expect(page.locator("#live-state")).to_have_text("Live")
    sim.faults(oa, endpoint_latency_ms={SEND: 11_000})
    reply = "您的包裹今天下午送到"
    await page.locator("#composer-text").fill(reply)
    await page.locator("#composer-send").click()
    sent = page.locator("#thread-messages .msg-out", has_text=reply)
    await expect(sent.locator(".msg-state")).to_have_text("Sending…")
    await expect(sent.locator(".msg-state")).to_have_text("May not have been delivered", timeout=LATE)
    await expect(sent).to_contain_text("WeChat did not answer in time")
    sent = page.locator(f"#{await sent.get_attribute('id')}")  # this one, whatever follows it
    again = sent.locator("button.send-again")
    await expect(again).to_have_text("Send again")
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    messages = await asyncio.to_thread(sim.messages, app_id=oa, endpoint=SEND)
    assert [m["payload"]["text"]["content"] for m in messages].count(reply) == 1

    # She chooses to send it again; the browser asks first.
    sim.faults(oa, clear=True)
    dialogs: list[str] = []

    async def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
    await again.click()
    await expect(sent).to_contain_text("Sent again as a new message.")
    assert dialogs == ["The customer may already have this message. Send it again?"]
    resent = page.locator("#thread-messages .msg-out", has_text=reply).nth(1)
    await expect(resent.locator(".msg-state")).to_have_text("Sent", timeout=LATE)
    messages = await asyncio.to_thread(sim.messages, app_id=oa, endpoint=SEND)
    assert [m["payload"]["text"]["content"] for m in messages].count(reply) == 2
    rows = await db.fetch("SELECT status FROM inbox_message WHERE body = $1 ORDER BY id", reply)
    assert [r["status"] for r in rows] == ["unknown", "sent"]
    await expect(page.locator("#thread-messages button.send-again")).to_have_count(0)
    assert re.search(r"/inbox/conversations/\d+", page.url)
