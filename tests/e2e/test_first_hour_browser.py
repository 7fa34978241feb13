"""A rep's first hour in a real browser (issue 10), with the real pipeline behind it (simulator → web server →
worker → live updates): a follow-up after Resolve comes back to her live, with a chime, a desktop
notification and the unread count in the tab title; a conversation whose deadline both reps missed still
reaches her; the thread shows what the customer saw (welcome, keyword and menu replies) in order; canned
replies are picked with the keyboard and never sent as "/shortcut"; the service notice counts its
characters; "Transfer to" starts at a choice.

The browser's Notification and AudioContext are replaced by recorders (an init script): a headless browser
shows no notification and plays no sound, and the test needs to see that the page asked for them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from siyu.core import db
from siyu.inbox import actions, canned
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_update_settings
from siyu.inbox.conversations import viewer_for
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from siyu.wechat import windows
from siyu.wechat.services import do_create_rule
from tests.conftest import OA, PASSWORD, Simulator, TenantFixture
from tests.e2e.conftest import WebServer
from tests.e2e.test_onboarding_browser import sign_in
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")]

SHOTS = Path("/tmp/siyu-first-hour")
LIVE = 20_000  # ms: callback → worker jobs → SSE → the browser
ACTOR = tenants.Actor.cli()
SETTINGS = {"handoff_keywords": "人工, 转人工", "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30",
            "notify_customer": ""}

RECORDERS = """
window.__notes = [];
window.__chimes = 0;
function FakeNotification(title, options) {
  window.__notes.push({ title: title, body: (options && options.body) || "", tag: (options && options.tag) || "" });
  this.close = function () {};
}
FakeNotification.permission = "granted";
FakeNotification.requestPermission = function () { return Promise.resolve("granted"); };
window.Notification = FakeNotification;
window.AudioContext = function () {
  this.state = "running"; this.currentTime = 0; this.destination = {};
  this.resume = function () { return Promise.resolve(); };
  this.createOscillator = function () {
    return { frequency: {}, connect: function () {}, start: function () { window.__chimes++; }, stop: function () {} };
  };
  this.createGain = function () {
    return { gain: { setValueAtTime: function () {}, exponentialRampToValueAtTime: function () {} },
             connect: function () {} };
  };
};
"""


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def rep(tenant_id: int, email: str, name: str) -> int:
    staff = await staff_svc.do_create_staff(ACTOR, tenant_id, email, "agent", PASSWORD, name=name)
    return int(staff.id)


async def notes(page: Any) -> list[dict[str, str]]:
    return list(await page.evaluate("window.__notes"))


async def notes_reach(page: Any, n: int) -> None:
    """Wait for the n-th recorded notification (the page's CSP allows no `wait_for_function`)."""
    for _ in range(LIVE // 100):
        if len(await notes(page)) >= n:
            return
        await page.wait_for_timeout(100)
    raise AssertionError(f"no notification number {n}: {await notes(page)}")


async def test_a_follow_up_after_resolve_comes_back_to_her_live_and_she_is_told(
        page: Any, app: Any, web_server: WebServer, worker: Any, acme: TenantFixture, sim: Simulator) -> None:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    li_na = await rep(acme.id, "li.na@acme.test", "Li Na")
    await page.add_init_script(script=RECORDERS)

    await sign_in(page, "li.na@acme.test")
    await expect(page).to_have_url(f"{web_server.base_url}/inbox")  # a rep lands where her work is
    await expect(page.locator("#live-state")).to_have_text("Live")
    await page.locator("#presence button[value='online']").click()
    await expect(page.locator("#presence button[value='online']")).to_have_attribute("aria-pressed", "true")
    await expect(page).to_have_title("Inbox · Siyu")

    # A customer asks for a person: it is hers, and she is told (chime, notification, title).
    assert (await asyncio.to_thread(sim.push, oa, "alice", "follow"))["delivered"]
    assert (await asyncio.to_thread(sim.push, oa, "alice", "text", text="转人工"))["delivered"]
    row = page.locator("#conv-list .conv-row")
    await expect(row).to_have_count(1, timeout=LIVE)
    await expect(page).to_have_title("(1) Inbox · Siyu", timeout=LIVE)
    await notes_reach(page, 1)
    assert [n["body"] for n in await notes(page)] == ["A conversation was given to you"]
    assert await page.evaluate("window.__chimes") == 2
    await shot(page, "1-assigned-alert")

    # She opens it (read: the title drops the count) and resolves it.
    await row.locator(".conv-link").click()
    await expect(page.locator("#conv-status")).to_have_text("Assigned")
    await expect(page).to_have_title("Inbox · Siyu", timeout=LIVE)
    await page.locator("#btn-resolve").click()
    await expect(page.locator("#thread-messages")).to_contain_text("Resolved by Li Na", timeout=LIVE)
    await expect(page.locator("#conv-list .conv-row")).to_have_count(0, timeout=LIVE)

    # She switches the sound off (kept for her), and looks at her list.
    await page.locator("#alert-sound").click()
    await expect(page.locator("#alert-sound")).to_have_attribute("aria-pressed", "false")
    agent = await db.fetchrow("SELECT alert_sound, alert_desktop FROM inbox_agent WHERE staff = $1", li_na)
    assert (agent["alert_sound"], agent["alert_desktop"]) == (False, True)
    await page.goto("/inbox")
    await expect(page.locator("#live-state")).to_have_text("Live")
    await page.evaluate("window.__sameDocument = true")

    # The customer writes again: back to her, live in Mine; a notification, no sound now.
    assert (await asyncio.to_thread(sim.push, oa, "alice", "text", text="还在吗？"))["delivered"]
    back = page.locator("#conv-list .conv-row")
    await expect(back).to_have_count(1, timeout=LIVE)
    await expect(back).to_contain_text("还在吗？")
    await expect(back.locator(".status-badge")).to_have_text("Assigned")
    await expect(page).to_have_title("(1) Inbox · Siyu", timeout=LIVE)
    await notes_reach(page, 1)  # (the recorders started again with the page)
    assert [n["body"] for n in await notes(page)] == ["A conversation was given to you"]
    assert await page.evaluate("window.__chimes") == 0  # the sound is off
    assert await page.evaluate("window.__sameDocument === true")
    await back.locator(".conv-link").click()
    thread = page.locator("#thread-messages")
    await expect(thread).to_contain_text("Assigned to Li Na (the customer wrote again after it was resolved)")
    await shot(page, "1-follow-up-back")


async def test_a_conversation_both_reps_missed_still_reaches_her(
        page: Any, app: Any, web_server: WebServer, acme: TenantFixture) -> None:
    """Two reps online at 0/10 and 1/10, each of whom missed the first-reply deadline once: the waiting
    conversation still goes to one of them (live in her list), instead of waiting for nobody."""
    from siyu.contacts import services as contacts
    from siyu.inbox.handoff import do_handoff

    await do_update_settings(acme.id, SETTINGS, ACTOR)
    li_na = await rep(acme.id, "li.na@acme.test", "Li Na")
    wang = await rep(acme.id, "wang@acme.test", "Wang Fang")
    for who in (li_na, wang):
        await actions.do_set_presence(acme.id, who, "online", ACTOR)
    await sign_in(page, "li.na@acme.test")
    await expect(page.locator("#live-state")).to_have_text("Live")

    async def person(n: int) -> int:
        from datetime import UTC, datetime
        return (await contacts.resolve(acme.id, "oa", f"oStall{n:08d}", at=datetime.now(UTC))).identity_id

    held = await do_handoff(acme.id, await person(1))  # Li Na 1/10 …
    conv = await do_handoff(acme.id, await person(2))  # … so Wang Fang (0/10) gets this one
    assert (held["assignee"], conv["assignee"]) == (li_na, wang)
    rows = page.locator("#conv-list .conv-row")
    await expect(rows).to_have_count(1, timeout=LIVE)

    async def miss() -> str:
        a = await db.fetchrow("SELECT id FROM inbox_assignment WHERE conversation = $1 AND ended_at IS NULL",
                              conv["id"])
        await db.execute("UPDATE inbox_assignment SET assigned_at = assigned_at - interval '6 minutes' "
                         "WHERE id = $1", a["id"])
        await db.execute("UPDATE inbox_conversation SET assigned_at = assigned_at - interval '6 minutes', "
                         "queued_at = queued_at - interval '20 minutes' WHERE id = $1", conv["id"])
        return await inbox_jobs.sla_check({}, acme.id, a["id"])

    assert await miss() == "reassigned"  # Wang Fang missed it: Li Na's now
    await expect(rows).to_have_count(2, timeout=LIVE)
    assert await miss() == "reassigned"  # Li Na missed it too: both have, so it goes back to Wang Fang
    await expect(rows).to_have_count(1, timeout=LIVE)
    assert await miss() == "reassigned"  # and Wang Fang again: to Li Na, not into a queue nobody serves
    await expect(page.locator(f"#conv-row-{conv['id']}")).to_have_count(1, timeout=LIVE)
    status = await db.fetchrow("SELECT status, assignee FROM inbox_conversation WHERE id = $1", conv["id"])
    assert (status["status"], status["assignee"]) == ("assigned", li_na)
    await shot(page, "2-missed-deadlines")

    # Her workspace page shows the same work, with links into the inbox.
    await page.get_by_role("link", name="Workspace").click()
    await expect(page.locator("#work-now")).to_contain_text("Mine: 2 open")
    await shot(page, "6-workspace")
    await page.locator("#work-now a[href='/inbox?box=mine']").click()
    await expect(page.locator("#conv-list .conv-row")).to_have_count(2)


async def test_the_thread_shows_what_the_customer_saw_in_order(
        page: Any, app: Any, web_server: WebServer, worker: Any, acme: TenantFixture, sim: Simulator) -> None:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    for rule in ({"trigger": "welcome", "reply": "欢迎关注！回复“价格”查看价格表"},
                 {"trigger": "keyword", "match_type": "contains", "keyword": "价格", "reply": "价格表：经典款 ¥1299"},
                 {"trigger": "click", "menu_key": "MENU_STORES", "reply": "门店：上海静安寺店"}):
        await do_create_rule(ACTOR, acme.id, rule)
    li_na = await rep(acme.id, "li.na@acme.test", "Li Na")
    await actions.do_set_presence(acme.id, li_na, "online", ACTOR)

    # One after the other, as a customer does them (each handled before the next arrives).
    for action, fields, lines_then in (("follow", {}, 2), ("text", {"text": "价格"}, 4),
                                       ("click", {"key": "MENU_STORES"}, 6), ("text", {"text": "我要转人工"}, 9)):
        assert (await asyncio.to_thread(sim.push, oa, "dave", action, **fields))["delivered"]
        for _ in range(200):
            if (await db.fetchrow("SELECT count(*) AS n FROM inbox_message"))["n"] >= lines_then:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{action} was not handled in time")
    await sign_in(page, "li.na@acme.test")
    row = page.locator("#conv-list .conv-row")
    await expect(row).to_have_count(1, timeout=LIVE)
    await row.locator(".conv-link").click()
    lines = page.locator("#thread-messages > li.msg")
    await expect(lines).to_have_count(9, timeout=LIVE)
    texts = [re.sub(r"\s+", " ", t).strip() for t in await lines.all_inner_texts()]
    expected = ["The customer followed the Official Account", "欢迎关注！回复“价格”查看价格表", "价格", "价格表：经典款 ¥1299",
                "The customer tapped the menu button MENU_STORES", "门店：上海静安寺店", "我要转人工",
                "Waiting for a rep", "Assigned to Li Na"]
    assert len(texts) == len(expected) and all(e in t for e, t in zip(expected, texts, strict=True)), texts
    bot = page.locator("#thread-messages .msg-out", has_text="价格表：经典款 ¥1299")
    await expect(bot.locator(".msg-meta")).to_contain_text("Bot")
    await expect(bot.locator(".msg-state")).to_have_text("Sent")
    await shot(page, "4-thread-in-order")


async def test_canned_replies_are_picked_never_sent_raw_and_the_notice_counts(
        page: Any, app: Any, web_server: WebServer, acme: TenantFixture, sim: Simulator) -> None:
    from datetime import UTC, datetime, timedelta

    from siyu.contacts import services as contacts
    from siyu.inbox.handoff import do_handoff

    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    await do_update_settings(acme.id, {**SETTINGS, "notice_template_id": "TPL_NOTICE", "notice_text_key": "thing1"},
                             ACTOR)
    li_na = await rep(acme.id, "li.na@acme.test", "Li Na")
    wang = await rep(acme.id, "wang@acme.test", "Wang Fang")  # offline
    zhao = await rep(acme.id, "zhao@acme.test", "Zhao Lei")
    for who in (li_na, zhao):
        await actions.do_set_presence(acme.id, who, "online", ACTOR)
    me = await viewer_for(acme.id, li_na)
    for shortcut, body in (("price", "经典款 ¥1299，限时九折"), ("promo", "本周会员日：满 500 减 50")):
        await canned.do_create_canned(acme.id, me, {"shortcut": shortcut, "body": body}, ACTOR)
    resolved = await contacts.resolve(acme.id, "oa", "oCanned000000001", at=datetime.now(UTC))
    await windows.note_inbound(acme.id, "oa", "oCanned000000001", "message", datetime.now(UTC) - timedelta(hours=1))
    await actions.do_set_presence(acme.id, zhao, "away", ACTOR)
    conv = await do_handoff(acme.id, resolved.identity_id)
    assert conv["assignee"] == li_na
    await actions.do_set_presence(acme.id, zhao, "online", ACTOR)

    await sign_in(page, "li.na@acme.test")
    await page.goto(f"/inbox/conversations/{conv['id']}")
    composer = page.locator("#composer-text")
    suggestions = page.locator("#canned-suggest li")
    # Arrow keys choose, Enter picks.
    await composer.click()
    await composer.press_sequentially("/p")
    await expect(suggestions).to_have_count(2)
    await expect(suggestions.nth(0)).to_have_class(re.compile(r"\bactive\b"))
    await composer.press("ArrowDown")
    await expect(suggestions.nth(1)).to_have_class(re.compile(r"\bactive\b"))
    await shot(page, "5-suggestions")
    await composer.press("Enter")
    await expect(composer).to_have_value("本周会员日：满 500 减 50")
    await expect(page.locator("#canned-suggest")).to_be_hidden()
    # Tab picks too (and stays in the box).
    await composer.fill("")
    await composer.press_sequentially("/pri")
    await composer.press("Tab")
    await expect(composer).to_have_value("经典款 ¥1299，限时九折")
    await expect(composer).to_be_focused()
    # Ctrl+Enter right after "/price" picks, and never sends "/price"; the next Ctrl+Enter sends the text.
    await composer.fill("")
    await composer.press_sequentially("/price")
    await composer.press("Escape")  # the list closed: Ctrl+Enter still expands first
    await composer.press("Control+Enter")
    await expect(composer).to_have_value("经典款 ¥1299，限时九折")
    await composer.press("Control+Enter")
    sent = page.locator("#thread-messages .msg-out", has_text="经典款 ¥1299，限时九折")
    await expect(sent).to_have_count(1, timeout=LIVE)
    bodies = [r["body"] for r in await db.fetch("SELECT body FROM inbox_message WHERE conversation = $1 "
                                                "AND direction = 'out'", conv["id"])]
    assert bodies == ["经典款 ¥1299，限时九折"]

    # "Transfer to" starts at a choice, online reps first; nobody offline is picked by default.
    transfer = page.locator("#transfer-to")
    await expect(transfer).to_have_value("")
    groups = await transfer.locator("optgroup").evaluate_all("gs => gs.map(g => [g.label, g.innerText])")
    assert groups[0][0] == "Reps online" and "Zhao Lei" in groups[0][1] and "Wang Fang" not in groups[0][1]
    assert "Wang Fang" in groups[1][1]
    assert wang

    # The window closes: the service notice takes the reply box's text, counted against the template's 20.
    await db.execute("UPDATE wechat_reply_window SET user_msg_at = now() - interval '49 hours', event_at = NULL")
    await page.goto(f"/inbox/conversations/{conv['id']}")
    notice = page.locator("#notice-send")
    await expect(notice).to_contain_text("Send the text in the reply box below as a service notice")
    await expect(notice).to_be_disabled()
    await page.locator("#composer-text").fill("您好，您预约的到店试穿时间已确认，期待您的光临，有任何问题请随时联系我们")
    await expect(page.locator("#notice-count")).to_have_text(re.compile(r"^\d+ / 20$"))
    await expect(page.locator("#notice-count")).to_have_class(re.compile(r"\bover\b"))
    await expect(notice).to_be_disabled()
    await shot(page, "18-notice-too-long")
    await page.locator("#composer-text").fill("您的试穿时间已确认")
    await expect(page.locator("#notice-count")).to_have_text("9 / 20")
    await expect(notice).to_be_enabled()
    await notice.click()
    await expect(page.locator("#thread-messages .msg-out", has_text="您的试穿时间已确认")).to_have_count(1, timeout=LIVE)
    assert await page.locator("#flash .error, .flash-error").count() == 0
