"""What a rep meets in their first hour (issue 10): a customer's follow-up after Resolve reaches a person,
the queue never stalls while a rep has room, a reply to a snoozed conversation keeps its first-response
time, and the thread shows everything the customer saw, in the order it happened."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from siyu.core import db, i18n
from siyu.inbox import actions, boxes, canned, routing
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_update_settings
from siyu.inbox.conversations import get_conversation
from siyu.inbox.handoff import do_handoff, handle_inbound
from siyu.inbox.views import system_text
from siyu.tenants import services as tenants
from siyu.wechat.services import do_create_rule
from siyu.wechat.tables import InboundEvent
from tests.conftest import OA, PASSWORD, Simulator, TenantFixture, WebServer
from tests.integration.contacts.test_inbound import run_worker as run_burst
from tests.integration.inbox.conftest import (
    ACTOR,
    MakePerson,
    MakeRep,
    assignee_of,
    email_of,
    signed_in_as,
    status_of,
    viewer,
)
from tests.integration.inbox.test_pages import open_window
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

SETTINGS = {"handoff_keywords": "人工, 转人工", "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30",
            "notify_customer": ""}


@pytest.fixture
async def oa(acme: TenantFixture, sim: Simulator, web_server: WebServer) -> str:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    return link_both(sim, web_server, "oa", OA)


@pytest.fixture(autouse=True)
def english() -> Any:
    token = i18n.set_locale("en")
    yield
    i18n._current.reset(token)


async def run_worker() -> None:
    """The jobs of every stored callback, to the end: the web server hands a batch to the queue a moment
    after it answered WeChat, so a burst worker may start before it is there."""
    for _ in range(100):
        await run_burst()
        waiting = await db.fetchrow("SELECT count(*) AS n FROM wechat_inbound_event WHERE processed_at IS NULL")
        if not waiting["n"]:
            await run_burst()
            return
        await asyncio.sleep(0.05)
    raise AssertionError("stored callbacks were never processed")


async def only_conversation() -> dict[str, Any]:
    [row] = await db.fetch("SELECT * FROM inbox_conversation")
    return dict(row)


async def thread(conversation_id: int) -> list[tuple[str, str, str]]:
    """(direction, who, text) in the order the thread shows them; system lines in words."""
    rows, _ = await boxes.messages((await db.fetchrow("SELECT tenant FROM inbox_conversation WHERE id = $1",
                                                      conversation_id))["tenant"], conversation_id)
    return [(m["direction"], m["author_label"],
             system_text(m["body"]) if m["direction"] == "system" else m["body"]) for m in rows]


# --- 1. a follow-up after Resolve ------------------------------------------------------------------------

async def test_a_follow_up_after_resolve_goes_back_to_the_rep_who_resolved_it(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    li_na = await make_rep("Li Na")
    sim.push(oa, "alice", "follow")
    sim.push(oa, "alice", "text", text="转人工")
    await run_worker()
    conv = await only_conversation()
    assert conv["assignee"] == li_na
    await make_rep("Wang Fang")  # less busy than Li Na now; the customer still goes back to Li Na
    me = await viewer(acme.id, li_na)
    await actions.do_resolve(acme.id, me, conv["id"])

    sim.push(oa, "alice", "text", text="还在吗？")
    await run_worker()
    back = await only_conversation()
    assert back["status"] == "assigned" and back["assignee"] == li_na
    assert (await get_conversation(acme.id, me, conv["id"]))["status"] == "assigned"  # no 404 for her
    mine = await boxes.conversations(acme.id, me, boxes.ListFilter("mine", "open"))
    assert [r["id"] for r in mine.rows] == [conv["id"]]
    lines = await thread(conv["id"])
    assert lines[-2:] == [("in", "", "还在吗？"),
                          ("system", "siyu", "Assigned to Li Na (the customer wrote again after it was resolved) "
                                             "by routing")]
    rule = await db.fetchrow("SELECT rule FROM inbox_assignment WHERE conversation = $1 AND ended_at IS NULL",
                             conv["id"])
    assert rule["rule"] == "follow_up"


async def test_a_follow_up_goes_to_another_rep_when_the_one_who_resolved_it_is_away(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    li_na = await make_rep("Li Na")
    sim.push(oa, "bob", "follow")
    sim.push(oa, "bob", "text", text="人工")
    await run_worker()
    conv = await only_conversation()
    await actions.do_resolve(acme.id, await viewer(acme.id, li_na), conv["id"])
    await actions.do_set_presence(acme.id, li_na, "offline", ACTOR)
    wang = await make_rep("Wang Fang")

    sim.push(oa, "bob", "text", text="还在吗？")
    await run_worker()
    back = await only_conversation()
    assert back["status"] == "assigned" and back["assignee"] == wang and back["handoff_reason"] == "follow_up"
    assert ("system", "siyu", "Waiting for a rep: the customer wrote again after it was resolved") in \
        await thread(conv["id"])
    # Nobody online at all: it waits in the queue (not with the bot), and the next rep to come online gets it.
    await actions.do_resolve(acme.id, await viewer(acme.id, wang), conv["id"])
    await actions.do_set_presence(acme.id, wang, "offline", ACTOR)
    sim.push(oa, "bob", "text", text="？？")
    await run_worker()
    assert (await only_conversation())["status"] == "queued"
    await actions.do_set_presence(acme.id, li_na, "online", ACTOR)
    await run_worker()  # the drain that going online queues
    assert await assignee_of(conv["id"]) == li_na


async def test_a_follow_up_an_auto_reply_answers_stays_with_the_bot_and_says_so(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "价格",
                                        "reply": "价格表：经典款 ¥1299"})
    li_na = await make_rep("Li Na")
    sim.push(oa, "carol", "follow")
    sim.push(oa, "carol", "text", text="转人工")
    await run_worker()
    conv = await only_conversation()
    me = await viewer(acme.id, li_na)
    await actions.do_resolve(acme.id, me, conv["id"])

    sim.push(oa, "carol", "text", text="价格多少")
    await run_worker()
    back = await only_conversation()
    assert back["status"] == "bot" and back["assignee"] is None
    lines = await thread(conv["id"])
    assert lines[-3:] == [
        ("in", "", "价格多少"), ("out", "bot", "价格表：经典款 ¥1299"),
        ("system", "siyu", "The customer wrote again and an auto-reply answered, so the bot has it; their next "
                           "message the bot cannot answer goes to a person at once.")]
    assert (await get_conversation(acme.id, me, conv["id"]))["status"] == "bot"  # she still sees it
    # Their next message the bot cannot answer goes to her at once (not after three).
    sim.push(oa, "carol", "text", text="那有没有优惠？")
    await run_worker()
    again = await only_conversation()
    assert again["status"] == "assigned" and again["assignee"] == li_na


# --- 2. the queue never stalls while a rep has room --------------------------------------------------

async def _miss_the_deadline(conversation_id: int) -> str:
    """The open assignment passes the 5-minute first-reply deadline; the SLA job runs."""
    a = await db.fetchrow("SELECT id FROM inbox_assignment WHERE conversation = $1 AND ended_at IS NULL",
                          conversation_id)
    await db.execute("UPDATE inbox_assignment SET assigned_at = assigned_at - interval '6 minutes' WHERE id = $1",
                     a["id"])
    await db.execute("UPDATE inbox_conversation SET assigned_at = assigned_at - interval '6 minutes', "
                     "queued_at = queued_at - interval '20 minutes' WHERE id = $1", conversation_id)
    tenant = (await db.fetchrow("SELECT tenant FROM inbox_conversation WHERE id = $1", conversation_id))["tenant"]
    return await inbox_jobs.sla_check({}, tenant, a["id"])


async def test_reps_who_each_missed_the_deadline_once_still_get_the_waiting_conversations(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    """The sequence from the issue: two reps online at 1/10 and 0/10, each of whom once missed the
    5-minute first-reply deadline of the two waiting conversations."""
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    a, b = await make_rep("A"), await make_rep("B")
    held = await do_handoff(acme.id, (await make_person())[0])  # A holds one: 1/10, B 0/10
    assert held["assignee"] == a
    x = await do_handoff(acme.id, (await make_person())[0])
    assert x["assignee"] == b
    y = await do_handoff(acme.id, (await make_person())[0])
    assert y["assignee"] == a  # round robin among equals (1 and 1)

    # B lets X pass the deadline: X goes to A; A lets Y pass: Y goes to B.
    assert await _miss_the_deadline(x["id"]) == "reassigned" and await assignee_of(x["id"]) == a
    assert await _miss_the_deadline(y["id"]) == "reassigned" and await assignee_of(y["id"]) == b
    # Now each rep has missed each conversation once. They are the only reps: the conversations go to
    # them again (the one who missed longest ago first) instead of waiting for nobody.
    assert await _miss_the_deadline(x["id"]) == "reassigned" and await assignee_of(x["id"]) == b
    assert await _miss_the_deadline(y["id"]) == "reassigned" and await assignee_of(y["id"]) == a

    # Both away when the deadline passes again: X waits; the next drain tick after B has room routes it.
    await actions.do_set_presence(acme.id, a, "away", ACTOR)
    await actions.do_set_presence(acme.id, b, "away", ACTOR)
    assert await _miss_the_deadline(x["id"]) == "requeued" and await status_of(x["id"]) == "queued"
    assert await routing.drain(acme.id) == 0
    await actions.do_set_presence(acme.id, b, "online", ACTOR)
    assert await routing.drain(acme.id) == 1  # one drain tick (the sweep runs one twice a minute)
    assert await assignee_of(x["id"]) == b
    loads = {int(r["staff"]): int(r["load"]) for r in await db.fetch(
        "SELECT staff, load FROM inbox_agent WHERE tenant = $1", acme.id)}
    assert loads == {a: 2, b: 1}


async def test_the_sweep_routes_a_waiting_conversation_within_one_tick(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    a = await make_rep("A")
    conv = await do_handoff(acme.id, (await make_person())[0])
    await actions.do_set_presence(acme.id, a, "away", ACTOR)
    assert await _miss_the_deadline(conv["id"]) == "requeued"
    await db.execute("UPDATE inbox_agent SET presence = 'online' WHERE staff = $1", a)  # no drain job queued
    swept = await inbox_jobs.sweep({})
    assert swept["assigned"] == 1 and await assignee_of(conv["id"]) == a


# --- 3. a reply to a snoozed conversation --------------------------------------------------------------

async def test_replying_to_a_snoozed_conversation_keeps_its_first_response_time(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    await do_update_settings(acme.id, SETTINGS, ACTOR)
    rep = await make_rep("Li Na")
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    await open_window(acme.id, identity)
    me = await viewer(acme.id, rep)
    await actions.do_reply(acme.id, me, conv["id"], "您好")
    first = (await db.fetchrow("SELECT first_response_at FROM inbox_conversation WHERE id = $1", conv["id"]))[
        "first_response_at"]
    assert first is not None
    await actions.do_snooze(acme.id, me, conv["id"], "1h")
    await actions.do_reply(acme.id, me, conv["id"], "我回来了")
    row = await db.fetchrow("SELECT status, first_response_at, snoozed_until, assignee FROM inbox_conversation "
                            "WHERE id = $1", conv["id"])
    assert (row["status"], row["first_response_at"], row["snoozed_until"], row["assignee"]) == (
        "assigned", first, None, rep)
    a = await db.fetch("SELECT first_response_at, ended_at FROM inbox_assignment WHERE conversation = $1", conv["id"])
    assert [(r["first_response_at"], r["ended_at"]) for r in a] == [(first, None)]  # the same assignment
    late = await inbox_jobs.sweep({})
    assert late["sla"] == 0  # the SLA sweep leaves it alone
    load = await db.fetchrow("SELECT load FROM inbox_agent WHERE staff = $1", rep)
    assert load["load"] == 1


async def test_a_first_reply_to_a_conversation_snoozed_before_it_counts(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    rep = await make_rep("Li Na")
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    await open_window(acme.id, identity)
    me = await viewer(acme.id, rep)
    await actions.do_snooze(acme.id, me, conv["id"], "4h")
    await actions.do_reply(acme.id, me, conv["id"], "您好")
    row = await db.fetchrow("SELECT status, first_response_at FROM inbox_conversation WHERE id = $1", conv["id"])
    assert row["status"] == "assigned" and row["first_response_at"] is not None


# --- 4. the thread shows everything the customer saw, in order --------------------------------------------

async def test_the_thread_shows_the_welcome_keyword_and_menu_replies_in_order(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await do_update_settings(acme.id, {**SETTINGS, "unanswered_limit": "0"}, ACTOR)
    for rule in ({"trigger": "welcome", "reply": "欢迎关注！回复“价格”查看价格表"},
                 {"trigger": "keyword", "match_type": "contains", "keyword": "价格", "reply": "价格表：经典款 ¥1299"},
                 {"trigger": "click", "menu_key": "MENU_STORES", "reply": "门店：上海静安寺店"}):
        await do_create_rule(ACTOR, acme.id, rule)
    sim.push(oa, "dave", "follow")
    sim.push(oa, "dave", "text", text="价格")
    sim.push(oa, "dave", "click", key="MENU_STORES")
    sim.push(oa, "dave", "text", text="谢谢")
    await run_worker()
    conv = await only_conversation()
    assert await thread(conv["id"]) == [
        ("system", "customer", "The customer followed the Official Account"),
        ("out", "bot", "欢迎关注！回复“价格”查看价格表"),
        ("in", "", "价格"),
        ("out", "bot", "价格表：经典款 ¥1299"),
        ("system", "customer", "The customer tapped the menu button MENU_STORES"),
        ("out", "bot", "门店：上海静安寺店"),
        ("in", "", "谢谢"),
    ]
    # What WeChat delivered as passive replies is exactly what the thread shows (nothing sent again).
    assert sim.messages(app_id=oa, endpoint="cgi-bin/message/custom/send") == []
    # Re-running the inbox's part of every callback adds nothing.
    before = await thread(conv["id"])
    await handle_inbound([r["id"] for r in await InboundEvent.select(InboundEvent.id)])
    assert await thread(conv["id"]) == before
    # While a rep has the customer the keyword rules stay quiet, at the gateway and in the thread.
    await make_rep("Li Na")
    sim.push(oa, "dave", "text", text="转人工")
    await run_worker()
    sim.push(oa, "dave", "text", text="价格")
    await run_worker()
    tail = [line for line in await thread(conv["id"]) if line[0] != "system"][-2:]
    assert tail == [("in", "", "转人工"), ("in", "", "价格")]


async def test_the_thread_is_in_the_order_things_happened_not_the_order_they_were_written(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    # Two customer messages written down in the reverse of the order they were sent (two batches whose
    # jobs finished the other way round).
    for key, text, at in (("wechat:later", "第二条", datetime.fromisoformat("2026-01-01T10:00:05+00:00")),
                          ("wechat:earlier", "第一条", datetime.fromisoformat("2026-01-01T10:00:01+00:00"))):
        await db.execute("INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, "
                         "status, source_key, created_at) VALUES ($1, $2, 'in', '', 'text', $3, 'received', $4, $5)", acme.id, conv["id"], text, key, at)
    texts = [body for d, _, body in await thread(conv["id"]) if d == "in"]
    assert texts == ["第一条", "第二条"]
    # "Load earlier" pages in the same order.
    first_page, earlier = await boxes.messages(acme.id, conv["id"], limit=2)
    assert earlier is not None
    rest, _ = await boxes.messages(acme.id, conv["id"], before=earlier)
    assert [m["body"] for m in rest + first_page][:2] == ["第一条", "第二条"]


# --- 6. a rep lands where their work is ----------------------------------------------------------------

async def test_a_rep_lands_in_the_inbox_and_the_workspace_shows_their_real_work(
        client_factory: Any, acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    rep = await make_rep("Li Na")
    for _ in range(2):
        await do_handoff(acme.id, (await make_person())[0])
    client = client_factory()
    r = await client.login(await email_of(rep), PASSWORD)
    assert r.status_code == 302 and r.headers["location"] == "/inbox"
    page = await client.get("/workspace")
    assert page.status_code == 200
    assert "will appear here once the inbox is switched on" not in page.text
    assert 'href="/inbox?box=mine"' in page.text and "2 open" in page.text


# --- 5. canned replies are picked, never sent raw --------------------------------------------------------

async def test_a_message_that_is_exactly_a_shortcut_is_sent_as_its_reply(
        client_factory: Any, acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    rep = await make_rep("Li Na")
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    await open_window(acme.id, identity)
    me = await viewer(acme.id, rep)
    await canned.do_create_canned(acme.id, me, {"shortcut": "price", "body": "经典款 ¥1299，限时九折"}, ACTOR)
    client = await signed_in_as(client_factory, rep)
    for text in (" /PRICE ", "/price please", "/unknown"):
        r = await client.form(f"/inbox/conversations/{conv['id']}/reply", {"text": text})
        assert r.status_code == 303, r.text
    sent = [r["body"] for r in await db.fetch(
        "SELECT body FROM inbox_message WHERE conversation = $1 AND direction = 'out' ORDER BY id", conv["id"])]
    assert sent == ["经典款 ¥1299，限时九折", "/price please", "/unknown"]
