"""The reps' inbox pages: boxes, counts, search and status filter with keyset pages and a fixed number of
queries; the thread (messages, notes, system lines in the reader's language, sending → sent / failed in
words); the contact panel; the composer (window state, blocked replies with the legal alternative, notes);
take / transfer / snooze / resolve / reopen; presence; canned replies; data scope through the pages; and
customer-supplied text rendered inert."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.core import clock, db
from siyu.inbox import boxes
from siyu.inbox.config import do_set_team_route
from siyu.tenants import staff as staff_svc
from siyu.wechat import windows
from tests.conftest import Client, TenantFixture, signed_in
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep, assignee_of, email_of, status_of

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "<script>alert('x')</script>"


async def conversation(tenant_id: int, identity_id: int, status: str, *, assignee: int | None = None,
                       teams: list[int] | None = None, at: datetime | None = None, unread: int = 0,
                       preview: str = "") -> int:
    row = await db.fetchrow(
        "INSERT INTO inbox_conversation (tenant, identity, channel, status, assignee, teams, vip, handoff_reason, "
        "unanswered, unread, preview, queued_at, assigned_at, last_message_at, created_at, updated_at) "
        "SELECT $1, $2, i.channel, $3, $4, $5, false, 'keyword', 0, $6, $7, $8, "
        "CASE WHEN $4::int IS NOT NULL THEN $8::timestamptz END, $8, now(), now() FROM identity i WHERE i.id = $2 "
        "RETURNING id", tenant_id, identity_id, status, assignee, teams or [], unread, preview, at or T0)
    return int(row["id"])


async def message(tenant_id: int, conversation_id: int, direction: str, body: str, status: str = "received",
                  error: str = "", author_label: str = "", seconds: int = 0) -> int:
    row = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, error, "
        "source_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'test:' || gen_random_uuid()::text, $9) "
        "RETURNING id", tenant_id, conversation_id, direction, author_label,
        "event" if direction == "system" else "text", body, status, error, T0 + timedelta(seconds=seconds))
    return int(row["id"])


def row_ids(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<li id="conv-row-(\d+)"', html)]


def is_full_page(text: str) -> bool:
    return text.lstrip().lower().startswith("<!doctype html>")


async def external_id(identity_id: int) -> str:
    return str((await db.fetchrow("SELECT external_id FROM identity WHERE id = $1", identity_id))["external_id"])


async def open_window(tenant_id: int, identity_id: int, hours_ago: float = 1, used: int = 0) -> None:
    await windows.note_inbound(tenant_id, "oa", await external_id(identity_id), "message",
                               clock.now() - timedelta(hours=hours_ago))
    if used:
        await db.execute("UPDATE wechat_reply_window SET user_sent = $2 WHERE tenant = $1", tenant_id, used)


# --- data scope ------------------------------------------------------------------------------------------

class Scene:
    """Two teams; reps A and B in team 1, C in team 2; M manages team 1; five conversations."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.staff: dict[str, int] = {}


@pytest.fixture
async def scene(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> Scene:
    s = Scene()
    t1 = await staff_svc.do_create_team(ACTOR, acme.id, "Team one")
    t2 = await staff_svc.do_create_team(ACTOR, acme.id, "Team two")
    s.staff = {"a": await make_rep("Rep A", teams=(t1,)), "b": await make_rep("Rep B", teams=(t1,)),
               "c": await make_rep("Rep C", teams=(t2,)), "m": await make_rep("Manager M", teams=(t1,))}
    await do_set_team_route(acme.id, t1, [], [], [], [s.staff["m"]], ACTOR)
    plan = [("a_own", "assigned", "a", [t1]), ("b_own", "assigned", "b", [t1]), ("t1_wait", "queued", None, [t1]),
            ("t2_wait", "queued", None, [t2]), ("c_own", "assigned", "c", [t2]), ("any_wait", "queued", None, [])]
    for k, (name, status, who, teams) in enumerate(plan):
        identity, _ = await make_person()
        s.ids[name] = await conversation(acme.id, identity, status, assignee=s.staff[who] if who else None,
                                         teams=teams, at=T0 + timedelta(minutes=k), preview=f"preview of {name}")
    return s


EXPECTED = {
    # who: {box: conversations}; "all" missing = the box is refused
    "a": {"mine": ["a_own"], "unassigned": ["any_wait", "t1_wait"]},
    "c": {"mine": ["c_own"], "unassigned": ["any_wait", "t2_wait"]},
    "m": {"mine": [], "unassigned": ["any_wait", "t1_wait"], "all": ["any_wait", "t1_wait", "b_own", "a_own"]},
    "admin": {"mine": [], "unassigned": ["any_wait", "t2_wait", "t1_wait"],
              "all": ["any_wait", "c_own", "t2_wait", "t1_wait", "b_own", "a_own"]},
}


@pytest.mark.parametrize("who", list(EXPECTED))
async def test_each_person_sees_their_scope_through_the_pages(client_factory: Any, acme: TenantFixture,
                                                              scene: Scene, who: str) -> None:
    email = acme.admin_email if who == "admin" else await email_of(scene.staff[who])
    c = await signed_in(client_factory, email)
    name_of = {v: k for k, v in scene.ids.items()}
    for box in ("mine", "unassigned", "all"):
        r = await c.hx_get("/inbox", params={"box": box})
        if box not in EXPECTED[who]:
            assert r.status_code == 400, r.text  # a rep has no "all" box
            continue
        assert r.status_code == 200, r.text
        assert [name_of[i] for i in row_ids(r.text)] == EXPECTED[who][box], box
    visible = set().union(*EXPECTED[who].values())
    for name, cid in scene.ids.items():
        page = await c.get(f"/inbox/conversations/{cid}")
        row = await c.hx_get(f"/inbox/conversations/{cid}/row", params={"box": "mine"})
        if name in visible:
            assert page.status_code == 200 and f'id="thread-pane" data-conv="{cid}"' in page.text, name
            assert row.status_code == 200
        else:
            assert page.status_code == 404 and row.status_code == 404, name
            assert f"preview of {name}" not in page.text
    # The full page never lists what the person may not see, whatever the box.
    full = await c.get("/inbox", params={"box": "all" if "all" in EXPECTED[who] else "unassigned", "status": "any"})
    assert {name_of[i] for i in row_ids(full.text)} <= visible


async def test_counts_per_box(client_factory: Any, acme: TenantFixture, scene: Scene) -> None:
    await db.execute("UPDATE inbox_conversation SET unread = 2 WHERE id = $1", scene.ids["a_own"])
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    r = await a.hx_get("/inbox/counts")
    assert r.status_code == 200 and r.text.lstrip().startswith('<nav id="inbox-boxes"')
    assert "data-box=\"all\"" not in r.text
    assert await boxes.counts(acme.id, await _viewer(acme.id, scene.staff["a"])) == {
        "mine": {"total": 1, "unread": 1}, "unassigned": {"total": 2, "unread": 2}}
    m = await boxes.counts(acme.id, await _viewer(acme.id, scene.staff["m"]))
    assert m["all"] == {"total": 4, "unread": 3}  # two waiting + a_own with unread; b_own read
    admin = await boxes.counts(acme.id, await _viewer(acme.id, acme.admin_id))
    assert admin["all"]["total"] == 6 and admin["unassigned"]["total"] == 3


async def _viewer(tenant_id: int, staff_id: int) -> Any:
    from siyu.inbox.conversations import viewer_for

    return await viewer_for(tenant_id, staff_id)


# --- the list: page, fragments, search, filter, pages, queries ---------------------------------------------

async def test_page_and_fragments(client_factory: Any, acme: TenantFixture, scene: Scene) -> None:
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    page = await a.get("/inbox")
    assert page.status_code == 200 and is_full_page(page.text)
    assert '<script src="/static/inbox.js" defer></script>' in page.text
    assert 'data-stream="/inbox/stream"' in page.text and 'id="presence"' in page.text
    assert row_ids(page.text) == [scene.ids["a_own"]]
    fragment = await a.hx_get("/inbox", params={"box": "unassigned"})
    assert fragment.text.lstrip().startswith('<div id="list-pane"') and not is_full_page(fragment.text)
    assert fragment.headers["hx-push-url"] == "/inbox?box=unassigned&status=open"
    conv = await a.hx_get(f"/inbox/conversations/{scene.ids['a_own']}")
    assert conv.status_code == 200 and not is_full_page(conv.text)
    assert 'id="thread-pane"' in conv.text and 'id="composer"' in conv.text and 'id="contact-panel"' in conv.text
    live = await a.hx_get(f"/inbox/conversations/{scene.ids['a_own']}/live")
    assert live.text.lstrip().startswith('<div id="conv-live"')
    # Other pages do not load the inbox script.
    assert "inbox.js" not in (await a.get("/contacts")).text


async def test_search_and_status_filter(acme_admin: Client, acme: TenantFixture, make_person: MakePerson) -> None:
    li, li_contact = await make_person()
    han, _ = await make_person()
    wang, wang_contact = await make_person()
    await db.execute("UPDATE contact SET display_name = '李雷' WHERE id = $1", li_contact)
    await db.execute("UPDATE contact SET remark = '上海门店 100%' WHERE id = $1", wang_contact)
    ids = {"li": await conversation(acme.id, li, "queued", preview="你好"),
           "han": await conversation(acme.id, han, "resolved", preview="想问 price_list"),
           "wang": await conversation(acme.id, wang, "queued", preview="在吗")}
    for q, status, expected in (("李", "open", ["li"]), ("上海", "open", ["wang"]), ("price_list", "any", ["han"]),
                                ("price", "open", []), ("100%", "any", ["wang"]), ("%", "any", ["wang"]), ("%%", "any", []), ("_", "any", ["han"]),
                                ("", "resolved", ["han"]), ("", "queued", ["wang", "li"])):
        r = await acme_admin.hx_get("/inbox", params={"box": "all", "status": status, "q": q})
        assert r.status_code == 200, r.text
        assert row_ids(r.text) == [ids[n] for n in expected], (q, status)
    for bad in ({"status": "nope"}, {"box": "everything"}, {"q": "x" * 101}, {"cursor": "%%%"}):
        assert (await acme_admin.hx_get("/inbox", params=bad)).status_code == 400, bad


async def test_keyset_pages_carry_the_filter(acme_admin: Client, acme: TenantFixture, make_person: MakePerson) -> None:
    made = []
    for k in range(boxes.PAGE_SIZE + 5):
        identity, _ = await make_person()
        made.append(await conversation(acme.id, identity, "queued", at=T0 + timedelta(minutes=k)))
    identity, _ = await make_person()
    no_message = await conversation(acme.id, identity, "queued")
    await db.execute("UPDATE inbox_conversation SET last_message_at = NULL WHERE id = $1", no_message)
    first = await acme_admin.hx_get("/inbox", params={"box": "all"})
    more = re.search(r'<li class="load-more" hx-get="([^"]+)"', first.text)
    assert more is not None and "box=all" in more.group(1)
    second = await acme_admin.hx_get(more.group(1).replace("&amp;", "&"))
    assert second.text.lstrip().startswith("<li") and "list-pane" not in second.text
    expected = [no_message, *made[::-1]]  # the index's order: without a message yet first
    assert row_ids(first.text) + row_ids(second.text) == expected
    assert "load-more" not in second.text


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    real_fetch = db.fetch

    async def fetch(sql: str, *args: Any) -> list[Any]:
        seen.append(sql)
        return await real_fetch(sql, *args)

    monkeypatch.setattr(db, "fetch", fetch)
    yield seen


async def test_a_list_page_costs_one_list_and_one_counts_query(acme_admin: Client, acme: TenantFixture,
                                                               make_person: MakePerson, queries: list[str]) -> None:
    async def cost(n: int) -> list[str]:
        for _ in range(n):
            identity, _ = await make_person()
            cid = await conversation(acme.id, identity, "queued", unread=1)
            await message(acme.id, cid, "in", "hello")
        queries.clear()
        r = await acme_admin.hx_get("/inbox", params={"box": "all"})
        assert r.status_code == 200
        return [q for q in queries if "inbox_conversation" in q]

    small = await cost(3)
    large = await cost(27)
    assert len(small) == len(large) == 2, large  # the rows, the counts: nothing per row
    queries.clear()
    await acme_admin.hx_get("/inbox", params={"box": "all"})
    total = len(queries)
    assert total <= 8, queries  # the viewer (staff, teams, managed teams), the rows, the counts


# --- the thread ------------------------------------------------------------------------------------------

@pytest.fixture
async def thread(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> dict[str, int]:
    rep = await make_rep("Li Na")
    identity, contact = await make_person()
    cid = await conversation(acme.id, identity, "assigned", assignee=rep)
    await message(acme.id, cid, "system", '{"event": "queued", "reason": "keyword", "by": "bot"}', "noted", seconds=1)
    await message(acme.id, cid, "system", '{"event": "assigned", "to": "Li Na", "rule": "owner", "by": "routing"}',
                  "noted", seconds=2)
    await message(acme.id, cid, "in", "请问有货吗？", seconds=3)
    await message(acme.id, cid, "out", "有的", "sent", author_label="Li Na", seconds=4)
    await message(acme.id, cid, "out", "马上发货", "sending", author_label="Li Na", seconds=5)
    await message(acme.id, cid, "out", "还在吗", "failed", error="45015", author_label="Li Na", seconds=6)
    await message(acme.id, cid, "out", "?", "failed", error="40003", author_label="Li Na", seconds=7)
    await message(acme.id, cid, "note", "VIP, be nice", "noted", author_label="Li Na", seconds=8)
    return {"rep": rep, "conversation": cid, "identity": identity, "contact": contact}


async def test_thread_in_english_and_chinese(client_factory: Any, acme: TenantFixture, thread: dict[str, int]) -> None:
    rep = await signed_in(client_factory, await email_of(thread["rep"]))
    r = await rep.hx_get(f"/inbox/conversations/{thread['conversation']}")
    text = r.text
    assert "Waiting for a rep: the customer asked for a human" in text
    assert "Assigned to Li Na (the customer&#39;s own rep) by routing" in text
    assert "请问有货吗？" in text and "Internal note" in text and "VIP, be nice" in text
    assert "Sending…" in text and "Sent" in text
    assert "Not sent</span>" not in text
    assert "Not sent: The reply window is closed: the customer has not written in the last 48 hours." in text
    # Every errcode in words, with what to do (the one table of WeChat's errors), never a bare "error 40003".
    assert "Not sent: WeChat does not know this customer on this account (the openid is not valid)." in text
    assert "error 40003" not in text
    assert '{"event"' not in text  # system lines are words, not JSON

    await rep.form("/language", {"locale": "zh_CN"})
    zh = (await rep.hx_get(f"/inbox/conversations/{thread['conversation']}")).text
    from siyu.core import i18n

    catalog = i18n.catalog("zh_CN")
    for msgid in ("Internal note", "Sending…", "Sent", "the customer asked for a human"):
        assert catalog.get(msgid) and catalog[msgid] in zh, msgid
    assert "Waiting for a rep" not in zh and "Internal note" not in zh


async def test_earlier_messages_page_backwards(client_factory: Any, acme: TenantFixture,
                                               thread: dict[str, int]) -> None:
    cid = thread["conversation"]
    for k in range(boxes.THREAD_PAGE):
        await message(acme.id, cid, "in", f"m{k:03d}", seconds=100 + k)
    rep = await signed_in(client_factory, await email_of(thread["rep"]))
    page = (await rep.hx_get(f"/inbox/conversations/{cid}")).text
    assert "m000" in page and "请问有货吗？" not in page
    more = re.search(r'hx-get="(/inbox/conversations/\d+/messages\?before=\d+)"', page)
    assert more is not None
    earlier = (await rep.hx_get(more.group(1))).text
    assert "请问有货吗？" in earlier and "m000" not in earlier and "Load earlier" not in earlier
    assert (await rep.hx_get(f"/inbox/conversations/{cid}/messages?before=abc")).status_code == 400


async def test_contact_panel(client_factory: Any, acme: TenantFixture, thread: dict[str, int]) -> None:
    await contacts.do_tag(acme.id, thread["contact"], "金卡", ACTOR)
    rep = await signed_in(client_factory, await email_of(thread["rep"]))
    text = (await rep.hx_get(f"/inbox/conversations/{thread['conversation']}")).text
    panel = text[text.index('id="contact-panel"'):]
    assert f'href="/contacts/{thread["contact"]}"' in panel
    assert await external_id(thread["identity"]) in panel and "金卡" in panel


async def test_customer_text_renders_inert(client_factory: Any, acme: TenantFixture, thread: dict[str, int]) -> None:
    cid = thread["conversation"]
    await db.execute("UPDATE contact SET display_name = $2, remark = $3 WHERE id = $1", thread["contact"],
                     XSS_SCRIPT, XSS_IMG)
    await db.execute("UPDATE inbox_conversation SET preview = $2 WHERE id = $1", cid, XSS_IMG)
    await message(acme.id, cid, "in", f"{XSS_IMG} and {XSS_SCRIPT}", seconds=50)
    await contacts.do_tag(acme.id, thread["contact"], "<b>bold</b>", ACTOR)
    rep = await signed_in(client_factory, await email_of(thread["rep"]))
    for r in (await rep.get(f"/inbox/conversations/{cid}"), await rep.hx_get(f"/inbox/conversations/{cid}/row"),
              await rep.hx_get(f"/inbox/conversations/{cid}/live")):
        assert r.status_code == 200
        assert "<img src=x" not in r.text and "<script>alert" not in r.text and "<b>bold" not in r.text
    page = (await rep.get(f"/inbox/conversations/{cid}")).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page


# --- the composer ---------------------------------------------------------------------------------------------

async def test_window_state_and_blocked_replies(client_factory: Any, acme: TenantFixture, thread: dict[str, int],
                                                make_rep: MakeRep) -> None:
    cid, rep_id = thread["conversation"], thread["rep"]
    rep = await signed_in(client_factory, await email_of(rep_id))
    # No window: replies are blocked, the button too, and the page says what to do instead.
    closed = (await rep.hx_get(f"/inbox/conversations/{cid}")).text
    assert "Replies are blocked" in closed and "has not written in the last 48 hours" in closed
    assert re.search(r'<button type="submit" class="primary" id="composer-send" data-blocked="1" disabled', closed)
    assert "Send a template message" in closed and "Write to them 1:1 on WeCom" not in closed
    refused = await rep.form(f"/inbox/conversations/{cid}/reply", {"text": "hello"}, htmx=True)
    assert refused.status_code == 409 and "has not written in the last 48 hours" in refused.text
    assert await db.fetchrow("SELECT 1 FROM inbox_message WHERE body = 'hello'") is None
    # A note is never sent, so it goes in whatever the window.
    noted = await rep.form(f"/inbox/conversations/{cid}/reply", {"text": "call her tomorrow", "note": "1"}, htmx=True)
    assert noted.status_code == 200 and "call her tomorrow" in noted.text
    assert (await db.fetchrow("SELECT direction FROM inbox_message WHERE body = 'call her tomorrow'"))["direction"] == "note"

    # The customer's own rep on WeCom is the other legal way to reach them.
    owner = await make_rep("Zhang Wei", wecom_userid="zhang.wei")
    wecom = await contacts.resolve(acme.id, "wecom", "wmOwnerCust001", at=datetime.now(UTC))
    await contacts.do_merge(acme.id, thread["contact"], wecom.contact_id, "manual", ACTOR)
    await contacts.record_owner_added(acme.id, wecom.identity_id, "zhang.wei", datetime.now(UTC))
    with_owner = (await rep.hx_get(f"/inbox/conversations/{cid}/live")).text
    # The owner's WeCom is offered as an action (the words would only repeat it).
    assert "Send the text in the reply box below through Zhang Wei's WeCom" in with_owner
    assert "Write to them 1:1 on WeCom" not in with_owner
    assert owner

    # The customer wrote 17 h ago and two replies went: 3 left, 31 h to go.
    await open_window(acme.id, thread["identity"], hours_ago=17, used=2)
    live = (await rep.hx_get(f"/inbox/conversations/{cid}/live")).text
    assert "3 of 5 left · closes in 31 h" in live and 'data-can-send="1"' in live
    full = (await rep.hx_get(f"/inbox/conversations/{cid}")).text
    assert re.search(r'id="composer-send" data-blocked="0"\s', full)
    # Quota used: blocked with the other reason.
    await db.execute("UPDATE wechat_reply_window SET user_sent = 5")
    used = (await rep.hx_get(f"/inbox/conversations/{cid}/live")).text
    assert "WeChat allows 5 replies per customer message" in used and "Wait for the customer to write again" in used


async def test_reply_goes_out_as_sending_and_is_queued(client_factory: Any, acme: TenantFixture,
                                                       thread: dict[str, int], redis: Any) -> None:
    cid = thread["conversation"]
    await open_window(acme.id, thread["identity"])
    rep = await signed_in(client_factory, await email_of(thread["rep"]))
    r = await rep.form(f"/inbox/conversations/{cid}/reply", {"text": "  Hello <there>  "}, htmx=True)
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith('<div id="conv-live"') and "inbox:sent" in r.headers["hx-trigger"]
    sent = await db.fetchrow("SELECT id, status, body FROM inbox_message WHERE direction = 'out' ORDER BY id DESC")
    assert sent["status"] == "sending" and sent["body"] == "Hello <there>"
    assert "Hello &lt;there&gt;" in r.text
    assert await redis.exists(f"arq:job:inbox.send:{sent['id']}")
    plain = await rep.form(f"/inbox/conversations/{cid}/reply", {"text": "again"})
    assert plain.status_code == 303 and plain.headers["location"] == f"/inbox/conversations/{cid}"
    empty = await rep.form(f"/inbox/conversations/{cid}/reply", {"text": "   "}, htmx=True)
    assert empty.status_code == 400


# --- actions ------------------------------------------------------------------------------------------------

async def test_take_snooze_resolve_and_reopen(client_factory: Any, acme: TenantFixture, scene: Scene,
                                              acme_admin: Client) -> None:
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    waiting = scene.ids["t1_wait"]
    taken = await a.form(f"/inbox/conversations/{waiting}/take?box=unassigned", htmx=True)
    assert taken.status_code == 200 and 'id="thread-pane"' in taken.text
    assert "The conversation is yours." in taken.headers["hx-trigger"].encode().decode("unicode_escape")
    assert await assignee_of(waiting) == scene.staff["a"] and await status_of(waiting) == "assigned"

    snoozed = await a.form(f"/inbox/conversations/{waiting}/snooze", {"until": "4h"}, htmx=True)
    assert snoozed.status_code == 200 and await status_of(waiting) == "snoozed"
    assert (await a.form(f"/inbox/conversations/{waiting}/snooze", {"until": "5y"}, htmx=True)).status_code == 400

    # Resolved, it stays the rep's to look at (and reopen); another rep still cannot see it.
    done = await a.form(f"/inbox/conversations/{waiting}/resolve?box=mine", htmx=True)
    assert done.status_code == 200 and await status_of(waiting) == "resolved"
    assert (await a.get(f"/inbox/conversations/{waiting}")).status_code == 200
    b = await signed_in(client_factory, await email_of(scene.staff["b"]))
    assert (await b.get(f"/inbox/conversations/{waiting}")).status_code == 404

    # The admin still sees it and reopens it: it is theirs.
    again = await acme_admin.form(f"/inbox/conversations/{waiting}/reopen", htmx=True)
    assert again.status_code == 200 and 'id="btn-resolve"' in again.text
    assert await assignee_of(waiting) == acme.admin_id
    assert (await acme_admin.form(f"/inbox/conversations/{waiting}/reopen", htmx=True)).status_code == 409
    # Without JavaScript the forms redirect.
    plain = await acme_admin.form(f"/inbox/conversations/{waiting}/resolve?box=all")
    assert plain.status_code == 303 and plain.headers["location"] == f"/inbox/conversations/{waiting}?box=all"


async def test_transfer_to_a_rep_or_a_team(client_factory: Any, acme: TenantFixture, scene: Scene) -> None:
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    own = scene.ids["a_own"]
    page = (await a.hx_get(f"/inbox/conversations/{own}")).text
    assert f'value="staff:{scene.staff["b"]}"' in page and 'value="team:' in page
    moved = await a.form(f"/inbox/conversations/{own}/transfer", {"to": f"staff:{scene.staff['b']}"}, htmx=True)
    assert moved.status_code == 200 and 'id="thread-gone"' in moved.text  # B's now, out of A's scope
    assert await assignee_of(own) == scene.staff["b"]
    # B sends it to team two's queue.
    b = await signed_in(client_factory, await email_of(scene.staff["b"]))
    team_two = (await db.fetchrow("SELECT id FROM team WHERE name = 'Team two'"))["id"]
    r = await b.form(f"/inbox/conversations/{own}/transfer", {"to": f"team:{team_two}"}, htmx=True)
    assert r.status_code == 200
    row = await db.fetchrow("SELECT teams, assignee, status FROM inbox_conversation WHERE id = $1", own)
    assert row["teams"] == [team_two] and row["assignee"] in (None, scene.staff["c"])
    for bad in ("staff:", "nobody:1", "team:x", ""):
        c = await signed_in(client_factory, await email_of(scene.staff["c"]))
        assert (await c.form(f"/inbox/conversations/{scene.ids['c_own']}/transfer", {"to": bad},
                             htmx=True)).status_code == 400
    # A rep cannot give away a conversation that is not theirs.
    m = await signed_in(client_factory, await email_of(scene.staff["a"]))
    r = await m.form(f"/inbox/conversations/{scene.ids['t1_wait']}/transfer", {"to": f"staff:{scene.staff['b']}"},
                     htmx=True)
    assert r.status_code == 403


async def test_presence_toggle(client_factory: Any, acme: TenantFixture, make_rep: MakeRep) -> None:
    rep_id = await make_rep("Away Rep", online=False)
    rep = await signed_in(client_factory, await email_of(rep_id))
    page = (await rep.get("/inbox")).text
    assert re.search(r'value="offline" class="presence-offline" aria-pressed="true"', page)
    r = await rep.form("/inbox/presence", {"presence": "online"}, htmx=True)
    assert r.status_code == 200 and re.search(r'value="online" class="presence-online" aria-pressed="true"', r.text)
    assert (await db.fetchrow("SELECT presence FROM inbox_agent WHERE staff = $1", rep_id))["presence"] == "online"
    assert re.search(r'value="online" class="presence-online" aria-pressed="true"',
                     (await rep.hx_get("/inbox/presence")).text)
    assert (await rep.form("/inbox/presence", {"presence": "busy"}, htmx=True)).status_code == 400


# --- canned replies ---------------------------------------------------------------------------------------------

async def test_canned_replies_personal_and_shared(client_factory: Any, acme: TenantFixture, scene: Scene,
                                                  acme_admin: Client) -> None:
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    b = await signed_in(client_factory, await email_of(scene.staff["b"]))
    r = await a.form("/inbox/canned", {"shortcut": "/hi", "title": "Greeting", "body": "您好，请问有什么可以帮您？"})
    assert r.status_code == 303, r.text
    mine = await db.fetchrow("SELECT id, owner, shortcut FROM inbox_canned_reply")
    assert mine["owner"] == scene.staff["a"] and mine["shortcut"] == "hi"
    # A rep cannot share with everyone; a manager (and an admin) can.
    assert (await a.form("/inbox/canned", {"shortcut": "all", "body": "x", "scope": "tenant"})).status_code == 403
    m = await signed_in(client_factory, await email_of(scene.staff["m"]))
    assert (await m.form("/inbox/canned", {"shortcut": "price", "body": "Prices: …", "scope": "tenant"})).status_code == 303
    dup = await a.form("/inbox/canned", {"shortcut": "HI", "body": "again"})
    assert dup.status_code == 400 and "This shortcut is taken" in dup.text
    bad = await a.form("/inbox/canned", {"shortcut": "two words", "body": ""})
    assert bad.status_code == 400 and 'id="msg-shortcut"' in bad.text

    a_list, b_list = (await a.get("/inbox/canned")).text, (await b.get("/inbox/canned")).text
    assert "/hi" in a_list and "/price" in a_list
    assert "/hi" not in b_list and "/price" in b_list
    # Someone else's personal reply answers like a missing one; a shared one is read-only to reps.
    assert (await b.get(f"/inbox/canned/{mine['id']}")).status_code == 404
    assert (await b.form(f"/inbox/canned/{mine['id']}/delete")).status_code == 404
    shared = (await db.fetchrow("SELECT id FROM inbox_canned_reply WHERE shortcut = 'price'"))["id"]
    view = await b.get(f"/inbox/canned/{shared}")
    assert view.status_code == 200 and 'id="canned-form"' not in view.text
    assert (await b.form(f"/inbox/canned/{shared}", {"shortcut": "price", "body": "mine now"})).status_code == 403
    assert (await acme_admin.form(f"/inbox/canned/{shared}", {"shortcut": "prices", "body": "New prices"})).status_code == 303
    # The composer knows the shortcuts (as JSON for the /shortcut expansion) and lists them.
    page = (await a.hx_get(f"/inbox/conversations/{scene.ids['a_own']}")).text
    data = re.search(r'<script type="application/json" id="canned-data">(.*?)</script>', page, re.S)
    assert data is not None
    import json

    assert {r["shortcut"]: r["body"] for r in json.loads(data.group(1))} == {
        "hi": "您好，请问有什么可以帮您？", "prices": "New prices"}
    edited = await a.form(f"/inbox/canned/{mine['id']}", {"shortcut": "hello", "title": "", "body": "Hello!"},
                          htmx=True)
    assert edited.status_code == 200 and edited.headers["hx-redirect"] == "/inbox/canned"
    assert (await a.form(f"/inbox/canned/{mine['id']}/delete", htmx=True)).status_code == 200
    assert await db.fetchrow("SELECT 1 FROM inbox_canned_reply WHERE id = $1", mine["id"]) is None
    audit = [r["action"] for r in await db.fetch("SELECT action FROM audit_log WHERE action LIKE 'inbox.canned%' "
                                                 "ORDER BY id")]
    assert audit == ["inbox.canned.created", "inbox.canned.created", "inbox.canned.updated", "inbox.canned.updated",
                     "inbox.canned.deleted"]


async def test_canned_reply_bodies_are_inert_in_the_composer(client_factory: Any, acme: TenantFixture,
                                                             scene: Scene) -> None:
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    await a.form("/inbox/canned", {"shortcut": "x", "body": "</script><script>alert(1)</script>"})
    page = (await a.hx_get(f"/inbox/conversations/{scene.ids['a_own']}")).text
    data = re.search(r'<script type="application/json" id="canned-data">(.*?)</script>', page, re.S)
    assert data is not None and "<" not in data.group(1)


async def test_opening_a_conversation_reads_it_for_its_rep_only(client_factory: Any, acme_admin: Client,
                                                               scene: Scene) -> None:
    own = scene.ids["a_own"]
    await db.execute("UPDATE inbox_conversation SET unread = 3 WHERE id = $1", own)
    assert (await acme_admin.hx_get(f"/inbox/conversations/{own}")).status_code == 200
    assert (await db.fetchrow("SELECT unread FROM inbox_conversation WHERE id = $1", own))["unread"] == 3
    a = await signed_in(client_factory, await email_of(scene.staff["a"]))
    listed = await a.hx_get("/inbox")
    assert 'class="conv-row has-unread' in listed.text
    assert (await a.hx_get(f"/inbox/conversations/{own}/live")).status_code == 200
    assert (await db.fetchrow("SELECT unread FROM inbox_conversation WHERE id = $1", own))["unread"] == 0
    assert 'has-unread' not in (await a.hx_get(f"/inbox/conversations/{own}/row")).text
