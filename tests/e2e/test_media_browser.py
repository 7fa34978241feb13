"""Pictures and voice in a real browser, with the real worker and the simulator behind them: a simulated
customer sends a picture and a voice message; the rep sees the picture and a voice player with WeChat's
transcription in the thread (fetched by the worker from WeChat's media API, live); the rep sends a picture from
the composer and the simulator records the image message with the media id it issued on upload."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from siyu.core import db
from siyu.inbox import actions
from siyu.inbox.config import do_update_settings
from siyu.simulator.media import sample
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

SCREENSHOT = Path("/tmp/siyu-media-thread.png")


async def eventually(probe: Any, check: Any, seconds: float = 10) -> Any:
    """What `probe()` answers once `check` holds of it (the page loads media by itself, in its own time)."""
    value = None
    for _ in range(int(seconds * 10)):
        value = await probe()
        if check(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {value!r} after {seconds} s")
SEND = "cgi-bin/message/custom/send"


async def test_a_customers_picture_and_voice_show_and_the_rep_sends_a_picture(
        page: Any, web_server: WebServer, worker: Any, acme: TenantFixture, sim: Simulator, tmp_path: Path) -> None:
    actor = tenants.Actor.cli()
    await tenants.do_link_channel(actor, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    rep = await staff_svc.do_create_staff(actor, acme.id, "li.na@acme.test", "agent", PASSWORD, name="Li Na")
    await actions.do_set_presence(acme.id, rep.id, "online", actor)
    await do_update_settings(acme.id, {"handoff_keywords": "人工", "unanswered_limit": "0", "sla_minutes": "60",
                                       "recent_days": "30", "notify_customer": ""}, actor)
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

    # The customer sends a picture and a voice message: they appear live once the worker fetched them.
    await asyncio.to_thread(sim.push, oa, "alice", "image")
    await asyncio.to_thread(sim.push, oa, "alice", "voice", recognition="这件有黑色的吗")
    picture = page.locator("#thread-messages .msg-in img.msg-image")
    await expect(picture).to_be_visible(timeout=20_000)
    await eventually(lambda: picture.evaluate("img => img.complete && img.naturalWidth"), lambda w: w == 320)
    voice = page.locator("#thread-messages .msg-in audio.msg-voice")
    await expect(voice).to_be_visible(timeout=20_000)
    await expect(page.locator("#thread-messages .recognition")).to_contain_text("这件有黑色的吗")
    # The browser can play it: the MP3 Siyu made of WeChat's AMR has a duration.
    await eventually(lambda: voice.evaluate(
        "a => new Promise(ok => { if (a.readyState >= 1) ok(a.duration); "
        "a.addEventListener('loadedmetadata', () => ok(a.duration)); a.load(); })"), lambda d: d and d > 1)

    # The rep sends a picture from the composer.
    chosen = tmp_path / "新品.png"
    chosen.write_bytes(sample("photo.png"))
    await page.locator("#image-file").set_input_files(str(chosen))
    await page.locator("#image-send").click()
    mine = page.locator("#thread-messages .msg-out img.msg-image")
    await expect(mine).to_be_visible()
    sent = page.locator("#thread-messages .msg-out", has=page.locator("img.msg-image"))
    await expect(sent.locator(".msg-state")).to_have_text("Sent", timeout=20_000)
    await eventually(lambda: mine.evaluate("img => img.complete && img.naturalWidth"), lambda w: w == 320)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    await picture.scroll_into_view_if_needed()
    await page.screenshot(path=str(SCREENSHOT.with_name("siyu-media-customer.png")))

    # The contact's timeline shows them too.
    contact = await db.fetchrow("SELECT contact FROM identity WHERE channel = 'oa'")
    await page.goto(f"/contacts/{contact['contact']}")
    await expect(page.locator(".event-media img")).to_have_count(2)
    await eventually(lambda: page.locator(".event-media img").first.evaluate("img => img.complete && img.naturalWidth"),
                     lambda w: w == 320)
    await expect(page.locator(".event-media audio")).to_have_count(1)
    await page.screenshot(path=str(SCREENSHOT.with_name("siyu-media-timeline.png")), full_page=True)

    images = [m for m in await asyncio.to_thread(sim.messages, app_id=oa, endpoint=SEND)
              if m["payload"]["msgtype"] == "image"]
    assert len(images) == 1
    info = await asyncio.to_thread(sim._get, f"/_sim/media/{images[0]['payload']['image']['media_id']}/info",
                                   app_id=oa)
    assert (info["origin"], info["sha256"]) == ("upload", hashlib.sha256(sample("photo.png")).hexdigest())
