"""The contact pages: list with active search, filters and "load more"; one contact with identities, tags,
merges and its timeline; the tag, merge, undo and note actions; tenant scope; query counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.contacts.search import PAGE_SIZE
from siyu.core import db
from siyu.tenants.services import Actor
from siyu.timeline import services as timeline
from tests.conftest import Client, TenantFixture
from tests.integration.contacts.rows import live_contacts, owned_by, table

AGENT = Actor(None, "agent@acme.test")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def person(tenant_id: int, channel: str, external_id: str, unionid: str | None = None, name: str = "",
                 remark: str = "", phone: str = "", minutes: int = 0) -> int:
    """A contact as inbound traffic leaves it: resolved, profile fields known, one message at T0 + minutes."""
    contact_id = await contacts.resolve_identity(tenant_id, channel, external_id, unionid, at=T0,
                                                 profile={"nickname": name} if name else None)
    await db.execute("UPDATE contact SET display_name = $3, remark = $4, phone = $5 WHERE tenant = $1 AND id = $2",
                     tenant_id, contact_id, name, remark, phone)
    await timeline.append(tenant_id, None, "message_in", channel, T0 + timedelta(minutes=minutes),
                          {"Content": f"hello from {external_id}"}, f"test:{external_id}:{minutes}",
                          identity_id=await identity_of(tenant_id, channel, external_id))
    return contact_id


async def identity_of(tenant_id: int, channel: str, external_id: str) -> int:
    row = await db.fetchrow("SELECT id FROM identity WHERE tenant = $1 AND channel = $2 AND external_id = $3",
                            tenant_id, channel, external_id)
    return int(row["id"])


def is_full_page(text: str) -> bool:
    return text.lstrip().lower().startswith("<!doctype html>")


def contact_links(text: str) -> list[int]:
    return [int(m) for m in re.findall(r'href="/contacts/(\d+)"', text)]


@pytest.fixture
async def people(acme: TenantFixture) -> dict[str, int]:
    return {
        "li": await person(acme.id, "oa", "oLiOpenid0001", "uLiUnion0001", name="李雷", remark="VIP 客户",
                           phone="13800001111", minutes=3),
        "han": await person(acme.id, "mp", "oHanOpenid001", name="Han Meimei", phone="13900002222", minutes=2),
        "wang": await person(acme.id, "wecom", "wmWangExt0001", name="王五", remark="上海门店", minutes=1),
    }


# --- the list ------------------------------------------------------------------------------------------

async def test_list_full_page_and_search_fragment(acme_admin: Client, people: dict[str, int]) -> None:
    page = await acme_admin.get("/contacts")
    assert page.status_code == 200 and is_full_page(page.text)
    # Newest interaction first.
    assert contact_links(page.text) == [people["li"], people["han"], people["wang"]]
    assert 'hx-trigger="search, keyup delay:200ms changed"' in page.text

    fragment = await acme_admin.hx_get("/contacts?q=han")
    assert fragment.status_code == 200 and not is_full_page(fragment.text)
    assert fragment.text.lstrip().startswith('<div id="results">')
    assert contact_links(fragment.text) == [people["han"]]


@pytest.mark.parametrize(("q", "who"), [
    ("李雷", "li"), ("meimei", "han"), ("VIP", "li"), ("上海", "wang"), ("13900002222", "han"),
    ("oLiOpenid0001", "li"), ("oLiOpen", "li"), ("uLiUnion0001", "li"), ("oHanOpenid001", "han"),
    ("wmWangExt0001", "wang"),
])
async def test_search_by_name_remark_phone_and_ids(acme_admin: Client, people: dict[str, int], q: str,
                                                   who: str) -> None:
    r = await acme_admin.hx_get("/contacts", params={"q": q})
    assert r.status_code == 200
    assert contact_links(r.text) == [people[who]]


async def test_search_matches_nothing_and_wildcards_are_literal(acme_admin: Client, people: dict[str, int]) -> None:
    for q in ("nobody", "%", "_", "LiOpenid"):  # ids match by prefix, not inside
        r = await acme_admin.hx_get("/contacts", params={"q": q})
        assert contact_links(r.text) == [], q
        assert "No contacts match." in r.text


async def test_filters_by_channel_and_tag(acme_admin: Client, acme: TenantFixture, people: dict[str, int]) -> None:
    vip = await contacts.do_tag(acme.id, people["wang"], "VIP", AGENT)
    await contacts.do_tag(acme.id, people["han"], "VIP", AGENT)
    await contacts.do_tag(acme.id, people["li"], "Other", AGENT)
    for params, expected in (({"channel": "oa"}, ["li"]), ({"channel": "mp"}, ["han"]),
                             ({"channel": "wecom"}, ["wang"]), ({"tag": str(vip)}, ["han", "wang"]),
                             ({"tag": str(vip), "channel": "mp"}, ["han"]),
                             ({"tag": str(vip), "q": "王"}, ["wang"])):
        r = await acme_admin.hx_get("/contacts", params=params)
        assert r.status_code == 200
        assert contact_links(r.text) == [people[w] for w in expected], params
    bad = await acme_admin.hx_get("/contacts", params={"channel": "sms"})
    assert bad.status_code == 400


async def test_merged_away_contacts_are_not_listed(acme_admin: Client, acme: TenantFixture,
                                                   people: dict[str, int]) -> None:
    await contacts.do_merge(acme.id, people["li"], people["han"], "manual", AGENT)
    r = await acme_admin.get("/contacts")
    assert contact_links(r.text) == [people["li"], people["wang"]]
    # Its identities now belong to the survivor, so searching for them finds the survivor.
    found = await acme_admin.hx_get("/contacts", params={"q": "oHanOpenid001"})
    assert contact_links(found.text) == [people["li"]]


async def test_load_more_pages_through_everyone_once(acme_admin: Client, acme: TenantFixture) -> None:
    ids = [await person(acme.id, "oa", f"oPage{n:08d}", name=f"Person {n}", minutes=n) for n in range(PAGE_SIZE + 7)]
    first = await acme_admin.get("/contacts")
    assert contact_links(first.text) == ids[::-1][:PAGE_SIZE]
    more = re.search(r'<tr class="load-more" hx-get="([^"]+)" hx-trigger="revealed"', first.text)
    assert more is not None
    second = await acme_admin.hx_get(more.group(1).replace("&amp;", "&"))
    assert second.status_code == 200 and not is_full_page(second.text)
    assert second.text.lstrip().startswith("<tr")  # rows to append, not a new table
    assert contact_links(second.text) == ids[::-1][PAGE_SIZE:]
    assert "load-more" not in second.text
    # Without JavaScript the link opens the next page in full.
    plain = await acme_admin.get(more.group(1).replace("&amp;", "&"))
    assert is_full_page(plain.text) and contact_links(plain.text) == ids[::-1][PAGE_SIZE:]


async def test_filters_carry_into_load_more(acme_admin: Client, acme: TenantFixture) -> None:
    mp = [await person(acme.id, "mp", f"oMp{n:08d}", minutes=n) for n in range(PAGE_SIZE + 2)]
    for n in range(3):
        await person(acme.id, "oa", f"oOa{n:08d}", minutes=100 + n)
    first = await acme_admin.hx_get("/contacts", params={"channel": "mp"})
    more = re.search(r'hx-get="([^"]+)" hx-trigger="revealed"', first.text)
    assert more is not None and "channel=mp" in more.group(1)
    second = await acme_admin.hx_get(more.group(1).replace("&amp;", "&"))
    assert contact_links(first.text) + contact_links(second.text) == mp[::-1]


# --- query counts ----------------------------------------------------------------------------------------

@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement sent through siyu.core.db (what the contacts services use)."""
    seen: list[str] = []
    real_fetch, real_execute = db.fetch, db.execute

    async def fetch(sql: str, *args: Any) -> list[Any]:
        seen.append(sql)
        return await real_fetch(sql, *args)

    async def execute(sql: str, *args: Any) -> str:
        seen.append(sql)
        return await real_execute(sql, *args)

    monkeypatch.setattr(db, "fetch", fetch)
    monkeypatch.setattr(db, "execute", execute)
    yield seen


async def test_the_list_costs_the_same_queries_for_5_or_25_contacts(acme_admin: Client, acme: TenantFixture,
                                                                    queries: list[str]) -> None:
    async def add(n: int) -> None:
        c = await person(acme.id, "oa", f"oCount{n:06d}", f"uCount{n:06d}", name=f"N{n}", minutes=n)
        await contacts.resolve_identity(acme.id, "mp", f"oCountMp{n:06d}", f"uCount{n:06d}")  # joins c
        await contacts.do_tag(acme.id, c, f"t{n % 3}", AGENT)

    async def count(htmx: bool = False) -> int:
        queries.clear()
        r = await (acme_admin.hx_get("/contacts?q=N") if htmx else acme_admin.get("/contacts"))
        assert r.status_code == 200
        return len(queries)

    for n in range(5):
        await add(n)
    small, small_search = await count(), await count(htmx=True)
    for n in range(5, 25):
        await add(n)
    large, large_search = await count(), await count(htmx=True)
    assert small == large, f"{small} queries for 5 contacts, {large} for 25: one per contact somewhere"
    assert small_search == large_search
    assert large <= 5  # contacts, their identities, their tags, the tag and rep filters' options
    assert large_search <= 4  # a keystroke: its plan setting, the rows, identities, tags (no filter options)


# --- one contact ----------------------------------------------------------------------------------------

async def test_contact_page_shows_identities_owners_tags_and_timeline(acme_admin: Client, acme: TenantFixture,
                                                                     people: dict[str, int]) -> None:
    li = people["li"]
    await contacts.resolve_identity(acme.id, "wecom", "wmLiExt000001", "uLiUnion0001")
    await contacts.record_owner_added(acme.id, await identity_of(acme.id, "wecom", "wmLiExt000001"),
                                      "rep.zhang", T0, state="spring_fair")
    await contacts.do_tag(acme.id, li, "金卡", AGENT)
    r = await acme_admin.get(f"/contacts/{li}")
    assert r.status_code == 200 and is_full_page(r.text)
    for shown in ("李雷", "oLiOpenid0001", "wmLiExt000001", "uLiUnion0001", "Official Account", "WeCom",
                  "rep.zhang", "spring_fair", "金卡", "hello from oLiOpenid0001", "Message received"):
        assert shown in r.text, shown


async def test_contact_page_in_chinese(acme_admin: Client, people: dict[str, int]) -> None:
    r = await acme_admin.get(f"/contacts/{people['li']}", headers={"Accept-Language": "zh-CN"})
    assert "时间线" in r.text and "收到消息" in r.text and "联系人" in r.text
    assert "Timeline" not in r.text and "Message received" not in r.text


async def test_timeline_fragment_infinite_scroll_and_filters(acme_admin: Client, acme: TenantFixture,
                                                             people: dict[str, int]) -> None:
    li = people["li"]
    for n in range(40):
        await timeline.append(acme.id, li, "purchase" if n % 2 else "message_out", "oa",
                              T0 + timedelta(hours=1, minutes=n), {"Content": f"event {n:02d}"}, f"t:{n}")
    full = await acme_admin.get(f"/contacts/{li}")
    assert full.text.index("event 39") < full.text.index("event 38")  # newest first
    fragment = await acme_admin.hx_get(f"/contacts/{li}")
    assert not is_full_page(fragment.text) and fragment.text.lstrip().startswith('<div id="timeline">')
    more = re.search(r'hx-get="([^"]+)" hx-trigger="revealed"', fragment.text)
    assert more is not None
    rest = await acme_admin.hx_get(more.group(1).replace("&amp;", "&"))
    assert rest.status_code == 200 and rest.text.lstrip().startswith("<li")
    shown = re.findall(r"event (\d\d)", fragment.text) + re.findall(r"event (\d\d)", rest.text)
    assert shown == [f"{n:02d}" for n in range(39, -1, -1)]
    assert "hello from oLiOpenid0001" in rest.text and "load-more" not in rest.text

    purchases = await acme_admin.hx_get(f"/contacts/{li}", params={"kind": "purchase"})
    assert re.findall(r"event (\d\d)", purchases.text) == [f"{n:02d}" for n in range(39, 0, -2)]
    by_channel = await acme_admin.hx_get(f"/contacts/{li}", params=[("channel", "siyu"), ("channel", "mp")])
    assert re.findall(r"event (\d\d)", by_channel.text) == [] and "Nothing on the timeline yet." in by_channel.text
    assert (await acme_admin.hx_get(f"/contacts/{li}", params={"kind": "nope"})).status_code == 400


async def test_tags_are_added_and_removed_on_the_page(acme_admin: Client, acme: TenantFixture,
                                                      people: dict[str, int]) -> None:
    li = people["li"]
    r = await acme_admin.form(f"/contacts/{li}/tags", {"name": "  金卡 会员 "}, htmx=True)
    assert r.status_code == 200 and not is_full_page(r.text) and r.text.lstrip().startswith('<div id="tags">')
    assert "金卡 会员" in r.text and "HX-Trigger" in r.headers
    [tag] = await contacts.tags_of(acme.id, li)
    assert f"/contacts/{li}/tags/{tag['id']}/delete" in r.text
    bad = await acme_admin.form(f"/contacts/{li}/tags", {"name": "x" * 41}, htmx=True)
    assert bad.status_code == 400 and "Use 1 to 40 characters." in bad.text
    gone = await acme_admin.form(f"/contacts/{li}/tags/{tag['id']}/delete", htmx=True)
    assert gone.status_code == 200 and '<span class="badge">金卡 会员</span>' not in gone.text
    assert await contacts.tags_of(acme.id, li) == []
    # Without JavaScript the same forms answer the whole page.
    plain = await acme_admin.form(f"/contacts/{li}/tags", {"name": "VIP"})
    assert plain.status_code == 200 and is_full_page(plain.text)
    assert [t["name"] for t in await contacts.tags_of(acme.id, li)] == ["VIP"]


async def test_manual_merge_and_undo_through_the_pages(acme_agent: Client, acme: TenantFixture,
                                                       people: dict[str, int]) -> None:
    li, han = people["li"], people["han"]
    await owned_by(acme.id, acme.agent_id, li, han)
    picked = await acme_agent.hx_get("/contacts/pick", params={"q": "Han", "exclude": str(li)})
    assert f'name="other" value="{han}"' in picked.text
    excluded = await acme_agent.hx_get("/contacts/pick", params={"q": "李", "exclude": str(li)})
    assert f'value="{li}"' not in excluded.text

    r = await acme_agent.form(f"/contacts/{li}/merge", {"other": str(han)}, htmx=True)
    assert r.status_code == 200 and r.headers["HX-Redirect"] == f"/contacts/{li}"
    assert [c["id"] for c in await live_contacts(acme.id)] == sorted([li, people["wang"]])
    # The merged-away contact's page leads to its survivor.
    away = await acme_agent.get(f"/contacts/{han}")
    assert away.status_code in (301, 302, 303, 307) and away.headers["location"] == f"/contacts/{li}"
    page = await acme_agent.get(f"/contacts/{li}")
    assert "oHanOpenid001" in page.text and "hello from oHanOpenid001" in page.text
    [merge] = await contacts.list_merges(acme.id, li)
    assert merge["reason"] == "manual" and merge["actor_label"] == acme.agent_email
    assert f"/contacts/merges/{merge['id']}/undo" in page.text

    undo = await acme_agent.form(f"/contacts/merges/{merge['id']}/undo", {"back": str(li)}, htmx=True)
    assert undo.status_code == 200 and undo.headers["HX-Redirect"] == f"/contacts/{li}"
    assert [c["id"] for c in await live_contacts(acme.id)] == sorted(people.values())
    after = await acme_agent.get(f"/contacts/{li}")
    assert "oHanOpenid001" not in after.text and "undone" in after.text
    assert f"/contacts/merges/{merge['id']}/undo" not in after.text

    again = await acme_agent.form(f"/contacts/merges/{merge['id']}/undo", {"back": str(li)}, htmx=True)
    assert again.status_code == 409
    assert "This merge is already undone." in again.text and not is_full_page(again.text)
    plain = await acme_agent.form(f"/contacts/merges/{merge['id']}/undo", {"back": str(li)})
    assert plain.status_code == 409 and is_full_page(plain.text) and "This merge is already undone." in plain.text


async def test_merge_by_openid_without_javascript_and_refusals(acme_admin: Client, acme: TenantFixture,
                                                               people: dict[str, int]) -> None:
    li = people["li"]
    r = await acme_admin.form(f"/contacts/{li}/merge", {"other": "wmWangExt0001"})
    assert r.status_code == 303 and r.headers["location"] == f"/contacts/{li}"
    assert [c["id"] for c in await live_contacts(acme.id)] == sorted([li, people["han"]])
    for other, message in ((str(li), "A contact cannot be merged with itself."),
                           ("oNobody00001", "No contact matches"), ("", "No contact matches"),
                           (str(people["wang"]), "No contact matches")):  # merged away already
        bad = await acme_admin.form(f"/contacts/{li}/merge", {"other": other}, htmx=True)
        assert bad.status_code == 400 and message in bad.text, other
        assert bad.text.lstrip().startswith('<div id="merge">')
    assert len(await table("contact_merge", acme.id)) == 1


async def test_a_note_appears_on_the_timeline(acme_agent: Client, acme: TenantFixture,
                                              people: dict[str, int]) -> None:
    li = people["li"]
    await owned_by(acme.id, acme.agent_id, li)
    r = await acme_agent.form(f"/contacts/{li}/notes", {"text": "客户想要 38 码的红色款"}, htmx=True)
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="timeline">')
    assert r.text.index("客户想要 38 码的红色款") < r.text.index("hello from oLiOpenid0001")  # newest first
    await acme_agent.form(f"/contacts/{li}/notes", {"text": "客户想要 38 码的红色款"}, htmx=True)
    notes = [e for e in await table("timeline_event", acme.id) if e["kind"] == "note"]
    assert len(notes) == 2 and all(n["source_key"].startswith("note:") for n in notes)
    assert notes[0]["payload"] == {"text": "客户想要 38 码的红色款", "by": acme.agent_email}
    empty = await acme_agent.form(f"/contacts/{li}/notes", {"text": "   "}, htmx=True)
    assert empty.status_code == 400
    plain = await acme_agent.form(f"/contacts/{li}/notes", {"text": "plain form"})
    assert plain.status_code == 303
    assert "plain form" in (await acme_agent.get(f"/contacts/{li}")).text


async def test_agents_see_their_contacts_and_the_nav_links_them(acme_agent: Client, acme: TenantFixture,
                                                                people: dict[str, int]) -> None:
    await owned_by(acme.id, acme.agent_id, *people.values())
    r = await acme_agent.get("/contacts")
    assert r.status_code == 200 and len(contact_links(r.text)) == 3
    assert 'href="/contacts" aria-current="page"' in r.text
    assert (await acme_agent.get(f"/contacts/{people['han']}")).status_code == 200


async def test_signed_out_and_platform_admins_are_kept_out(client: Client, root: Client,
                                                           people: dict[str, int]) -> None:
    r = await client.get("/contacts")
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")
    assert (await root.get("/contacts")).status_code == 403


# --- tenant scope ----------------------------------------------------------------------------------------

async def test_another_tenants_contacts_are_not_listed_or_found(acme_admin: Client, acme: TenantFixture,
                                                                globex: TenantFixture,
                                                                people: dict[str, int]) -> None:
    g = await person(globex.id, "oa", "oGlobexOnly01", name="Globex Person", minutes=9)
    r = await acme_admin.get("/contacts", params={"q": "Globex"})
    assert contact_links(r.text) == []
    assert "oGlobexOnly01" not in (await acme_admin.hx_get("/contacts/pick", params={"q": "oGlobex"})).text
    assert (await acme_admin.get(f"/contacts/{g}")).status_code == 404
    # Naming globex's contact in the merge form finds nothing.
    bad = await acme_admin.form(f"/contacts/{people['li']}/merge", {"other": str(g)}, htmx=True)
    assert bad.status_code == 400
    bad = await acme_admin.form(f"/contacts/{people['li']}/merge", {"other": "oGlobexOnly01"}, htmx=True)
    assert bad.status_code == 400
    assert len(await live_contacts(globex.id)) == 1


async def test_tag_delete_needs_both_ids_of_the_tenant(acme_admin: Client, acme: TenantFixture,
                                                       globex: TenantFixture, people: dict[str, int]) -> None:
    """The route with two ids (tests/integration/web/test_cross_tenant.py lists it here)."""
    li = people["li"]
    own_tag = await contacts.do_tag(acme.id, li, "VIP", AGENT)
    g = await person(globex.id, "oa", "oGlobexOnly01", minutes=1)
    globex_tag = await contacts.do_tag(globex.id, g, "VIP", AGENT)
    for url in (f"/contacts/{g}/tags/{globex_tag}/delete", f"/contacts/{g}/tags/{own_tag}/delete",
                f"/contacts/{li}/tags/{globex_tag}/delete", f"/contacts/987654321/tags/{own_tag}/delete",
                f"/contacts/{li}/tags/987654321/delete"):
        for htmx in (False, True):
            r = await acme_admin.form(url, htmx=htmx)
            assert r.status_code == 404, url
            assert "oGlobexOnly01" not in r.text
    assert [t["id"] for t in await contacts.tags_of(globex.id, g)] == [globex_tag]
    assert [t["id"] for t in await contacts.tags_of(acme.id, li)] == [own_tag]
    ok = await acme_admin.form(f"/contacts/{li}/tags/{own_tag}/delete", htmx=True)
    assert ok.status_code == 200
