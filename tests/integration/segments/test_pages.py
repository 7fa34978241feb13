"""The segment pages: the list with lazily loaded counts, the editor with its live preview (full page and
htmx fragment), saving with errors shown at their fields, members in pages, deleting after a confirmation;
tenant scope, roles and the Chinese interface."""

from __future__ import annotations

import re
from typing import Any

import pytest

from siyu.core import db
from siyu.segments import services as svc
from siyu.segments.views import MEMBERS_PAGE
from siyu.tenants.services import Actor
from tests.conftest import Client, TenantFixture
from tests.integration.contacts.rows import table
from tests.integration.segments.people import Person, crowd, person, tag

ACTOR = Actor(None, "admin@acme.test")


def is_full_page(text: str) -> bool:
    return text.lstrip().lower().startswith("<!doctype html>")


def contact_links(text: str) -> list[int]:
    return [int(m) for m in re.findall(r'href="/contacts/(\d+)"', text)]


def big_count(text: str) -> int:
    m = re.search(r'class="seg-big-count"><strong>([\d,]+)</strong>', text)
    assert m is not None, text
    return int(m.group(1).replace(",", ""))


def bar_widths(text: str) -> list[float]:
    """The coloured bars of the per-channel breakdown (OA, MP, WeCom), in percent."""
    return [float(w) for w in re.findall(r'<rect width="([\d.]+)" height="10" rx="2" fill="#(?!eef0f3)', text)]


@pytest.fixture
async def shop(acme: TenantFixture) -> dict[str, Any]:
    """Acme with four VIPs (3 on OA, 1 on MP) and two others, and a saved "VIPs" segment."""
    vip = await tag(acme.id, "VIP")
    ids = await crowd(acme.id, 3, "vip-oa", channels={"oa": False}, tags=[vip], interacted=1)
    ids += await crowd(acme.id, 1, "vip-mp", channels={"mp": False, "wecom": False}, tags=[vip],
                       owners={"rep1": False})
    await crowd(acme.id, 2, "plain", channels={"oa": False})
    sid = await svc.do_create_segment(acme.id, "VIPs", {"tags": {"ids": [vip], "match": "any"}}, ACTOR,
                                      description="Everyone tagged VIP")
    return {"vip": vip, "vips": ids, "segment": sid}


# --- the list -----------------------------------------------------------------------------------------------

async def test_list_shows_segments_and_loads_each_count_lazily(acme_agent: Client, shop: dict[str, Any]) -> None:
    sid = shop["segment"]
    page = await acme_agent.get("/segments")
    assert page.status_code == 200 and is_full_page(page.text)
    assert f'href="/segments/{sid}"' in page.text and "Everyone tagged VIP" in page.text
    assert "Has any of:" in page.text and "VIP" in page.text  # the filters in words
    assert f'hx-get="/segments/{sid}/count" hx-trigger="revealed"' in page.text
    assert 'href="/segments" aria-current="page"' in page.text  # the nav link
    count = await acme_agent.hx_get(f"/segments/{sid}/count")
    assert count.status_code == 200 and not is_full_page(count.text)
    assert re.search(r'<span class="seg-count"[^>]*>4</span>', count.text)


async def test_empty_list_invites_the_first_segment(acme_admin: Client) -> None:
    page = await acme_admin.get("/segments")
    assert "No segments yet." in page.text and 'href="/segments/new"' in page.text


async def test_contacts_page_links_to_segments(acme_agent: Client) -> None:
    page = await acme_agent.get("/contacts")
    assert 'href="/segments"' in page.text


# --- the editor and its preview -------------------------------------------------------------------------------

async def test_new_segment_page_previews_everyone(acme_admin: Client, shop: dict[str, Any]) -> None:
    page = await acme_admin.get("/segments/new")
    assert page.status_code == 200 and is_full_page(page.text)
    assert big_count(page.text) == 6
    assert bar_widths(page.text) == [pytest.approx(500 / 6, abs=0.01), pytest.approx(100 / 6, abs=0.01),
                                     pytest.approx(100 / 6, abs=0.01)]
    assert re.search(r'hx-post="/segments/preview"\s+hx-trigger="change delay:300ms', page.text)
    assert 'formaction="/segments/preview"' in page.text  # the same preview without JavaScript
    assert '<option value="rep1">' in page.text  # known reps offered for the owner filter


async def test_preview_follows_the_filters(acme_admin: Client, shop: dict[str, Any]) -> None:
    form = {"name": "draft", "tags": [str(shop["vip"])], "tags.match": "any", "channels": ["oa"]}
    fragment = await acme_admin.form("/segments/preview", form, htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment.text)
    assert fragment.text.lstrip().startswith('<div id="preview"')
    assert big_count(fragment.text) == 3
    assert bar_widths(fragment.text) == [100.0, 0.0, 0.0]
    assert sorted(contact_links(fragment.text)) == shop["vips"][:3]  # a few of them, linked
    mp = await acme_admin.form("/segments/preview", {**form, "channels": ["mp"]}, htmx=True)
    assert big_count(mp.text) == 1
    # Without JavaScript the same post answers the whole editor, fields kept.
    full = await acme_admin.form("/segments/preview", form)
    assert full.status_code == 200 and is_full_page(full.text)
    assert big_count(full.text) == 3 and 'value="draft"' in full.text
    assert re.search(r'name="channels" value="oa" checked', full.text)


async def test_preview_names_what_to_fix(acme_admin: Client, shop: dict[str, Any]) -> None:
    r = await acme_admin.form("/segments/preview", {"last_purchase": "within", "last_purchase.days": "soon",
                                                    "owner": "is", "owner.userid": ""}, htmx=True)
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="preview"')
    assert "<strong>Last purchase</strong>: Enter a whole number of days from 1 to 3650." in r.text
    assert "<strong>Sales rep</strong>: Enter the sales rep&#39;s WeCom UserID." in r.text
    assert "seg-big-count" not in r.text


async def test_create_from_the_form(acme_agent: Client, acme: TenantFixture, shop: dict[str, Any]) -> None:
    form = {"name": "OA VIPs active this month", "description": "for the launch", "tags": [str(shop["vip"])],
            "tags.match": "all", "channels": ["oa"], "owner": "", "last_interaction": "within",
            "last_interaction.days": "30", "last_purchase": "", "last_purchase.days": "12"}
    r = await acme_agent.form("/segments", form)
    assert r.status_code == 303
    sid = int(r.headers["location"].rsplit("/", 1)[1])
    segment = await svc.get_segment(acme.id, sid)
    assert segment.definition.as_json() == {
        "tags": {"ids": [shop["vip"]], "match": "all"}, "exclude_tags": [], "channels": ["oa"], "owner": None,
        "last_interaction": {"op": "within", "days": 30}, "last_purchase": None, "include_erased": False,
        "spent": None, "orders": None, "bought": None, "not_bought": [], "first_purchase": None}
    assert segment.created_by == "agent@acme.test"
    page = await acme_agent.get(r.headers["location"])
    assert big_count(page.text) == 3
    assert 'value="30"' in page.text and "for the launch" in page.text
    # htmx submissions are redirected by header.
    again = await acme_agent.form("/segments", {**form, "name": "second"}, htmx=True)
    assert again.status_code == 200 and again.headers["hx-redirect"].startswith("/segments/")


async def test_create_errors_are_shown_at_their_fields(acme_admin: Client, acme: TenantFixture,
                                                       shop: dict[str, Any]) -> None:
    r = await acme_admin.form("/segments", {"name": "VIPS", "last_interaction": "more_than",
                                            "last_interaction.days": "0", "channels": ["oa"]})
    assert r.status_code == 400 and is_full_page(r.text)
    # Every mistake at once, each at its field.
    assert re.search(r'id="msg-name">A segment with this name already exists.<', r.text)
    assert re.search(r'id="msg-last_interaction">Enter a whole number of days from 1 to 3650.<', r.text)
    assert 'value="VIPS"' in r.text and re.search(r'name="channels" value="oa" checked', r.text)
    assert len(await svc.list_segments(acme.id)) == 1


async def test_foreign_tag_in_the_form_is_an_unknown_tag(acme_admin: Client, acme: TenantFixture,
                                                         globex: TenantFixture) -> None:
    theirs = await tag(globex.id, "Globex VIP")
    r = await acme_admin.form("/segments", {"name": "steal", "tags": [str(theirs)]})
    assert r.status_code == 400 and "unknown tag" in r.text
    assert "Globex VIP" not in r.text
    assert await svc.list_segments(acme.id) == []


# --- one segment -------------------------------------------------------------------------------------------

async def test_segment_page_pages_through_its_members(acme_admin: Client, acme: TenantFixture) -> None:
    members = await crowd(acme.id, MEMBERS_PAGE + 7, "m", channels={"mp": False})
    await crowd(acme.id, 3, "x", channels={"oa": False})
    sid = await svc.do_create_segment(acme.id, "MP", {"channels": ["mp"]}, ACTOR)
    page = await acme_admin.get(f"/segments/{sid}")
    assert page.status_code == 200 and is_full_page(page.text)
    assert big_count(page.text) == MEMBERS_PAGE + 7
    listed = contact_links(page.text.split('id="member-rows"', 1)[1])
    assert listed == members[:MEMBERS_PAGE]
    more = re.search(r'<tr class="load-more" hx-get="([^"]+)" hx-trigger="revealed"', page.text)
    assert more is not None and more.group(1) == f"/segments/{sid}?after={members[MEMBERS_PAGE - 1]}"
    rows = await acme_admin.hx_get(more.group(1))
    assert rows.status_code == 200 and rows.text.lstrip().startswith("<tr")
    assert contact_links(rows.text) == members[MEMBERS_PAGE:]
    assert "load-more" not in rows.text
    # Without JavaScript the link opens the next page in full.
    plain = await acme_admin.get(more.group(1))
    assert is_full_page(plain.text)
    assert contact_links(plain.text.split('id="member-rows"', 1)[1]) == members[MEMBERS_PAGE:]
    bad = await acme_admin.get(f"/segments/{sid}?after=abc")
    assert bad.status_code == 400


async def test_update_from_the_form(acme_admin: Client, acme: TenantFixture, shop: dict[str, Any]) -> None:
    sid = shop["segment"]
    r = await acme_admin.form(f"/segments/{sid}", {"name": "VIPs with a rep", "tags": [str(shop["vip"])],
                                                   "owner": "is", "owner.userid": "rep1"}, htmx=True)
    assert r.status_code == 200 and r.headers["hx-redirect"] == f"/segments/{sid}"
    segment = await svc.get_segment(acme.id, sid)
    assert segment.name == "VIPs with a rep" and segment.description == ""
    assert segment.definition.owner is not None and segment.definition.owner.userid == "rep1"
    page = await acme_admin.get(f"/segments/{sid}")
    assert big_count(page.text) == 1
    assert contact_links(page.text.split('id="member-rows"', 1)[1]) == [shop["vips"][3]]
    bad = await acme_admin.form(f"/segments/{sid}", {"name": "", "owner": "is", "owner.userid": "bad id"})
    assert bad.status_code == 400 and 'id="msg-name">Use 1 to 80 characters.<' in bad.text
    assert (await svc.get_segment(acme.id, sid)).name == "VIPs with a rep"


async def test_delete_after_a_confirmation(acme_agent: Client, acme: TenantFixture, shop: dict[str, Any]) -> None:
    sid = shop["segment"]
    confirm = await acme_agent.get(f"/segments/{sid}/delete")
    assert confirm.status_code == 200
    assert "It selects 4 contacts now." in confirm.text
    assert f'action="/segments/{sid}/delete"' in confirm.text
    assert await svc.list_segments(acme.id) != []  # looking at the confirmation deletes nothing
    r = await acme_agent.form(f"/segments/{sid}/delete")
    assert r.status_code == 303 and r.headers["location"] == "/segments"
    assert await svc.list_segments(acme.id) == []
    assert (await acme_agent.get(f"/segments/{sid}")).status_code == 404
    assert [a["action"] for a in await table("audit_log", acme.id)][-1] == "segment.deleted"


# --- scope, roles, language -------------------------------------------------------------------------------------

async def test_another_tenants_segment_is_a_404_everywhere(acme_admin: Client, globex: TenantFixture,
                                                         acme: TenantFixture) -> None:
    theirs = await svc.do_create_segment(globex.id, "Globex secret", {}, ACTOR)
    for url in (f"/segments/{theirs}", f"/segments/{theirs}/count", f"/segments/{theirs}/delete"):
        r = await acme_admin.get(url)
        assert r.status_code == 404 and "Globex secret" not in r.text
    preview = await acme_admin.form("/segments/preview", {"segment_id": str(theirs)})
    assert preview.status_code == 404
    listing = await acme_admin.get("/segments")
    assert "Globex secret" not in listing.text
    assert (await svc.get_segment(globex.id, theirs)).name == "Globex secret"


async def test_platform_admins_and_strangers_are_kept_out(root: Client, client: Client) -> None:
    assert (await root.get("/segments")).status_code == 403
    r = await client.get("/segments")
    assert r.status_code in (302, 303) and r.headers["location"].startswith("/login")


async def test_pages_in_chinese(acme_admin: Client, shop: dict[str, Any]) -> None:
    await acme_admin.form("/language", {"locale": "zh_CN"})
    listing = await acme_admin.get("/segments")
    assert "新建分群" in listing.text and "含任一标签：" in listing.text
    editor = await acme_admin.get(f"/segments/{shop['segment']}")
    assert "当前选中" in editor.text and "公众号" in editor.text
    bad = await acme_admin.form("/segments/preview", {"last_purchase": "within"}, htmx=True)
    assert "请输入 1 到 3650 之间的整数天数。" in bad.text


async def test_erased_and_merged_contacts_stay_out_of_the_pages(acme_admin: Client, acme: TenantFixture) -> None:
    live = await person(acme.id, Person(channels={"oa": False}), "live")
    erased = await person(acme.id, Person(channels={"oa": True}, erased=True), "erased")
    merged = await person(acme.id, Person(channels={"oa": False}, merged_into=live), "merged")
    sid = await svc.do_create_segment(acme.id, "All", {}, ACTOR)
    page = await acme_admin.get(f"/segments/{sid}")
    assert contact_links(page.text.split('id="member-rows"', 1)[1]) == [live]
    with_erased = await acme_admin.form("/segments/preview", {"include_erased": "1"}, htmx=True)
    assert big_count(with_erased.text) == 2
    assert sorted(contact_links(with_erased.text)) == [live, erased]
    assert merged not in contact_links(with_erased.text)
    assert await db.fetchrow("SELECT 1 FROM contact WHERE id = $1 AND merged_into = $2", merged, live)


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement sent through siyu.core.db."""
    seen: list[str] = []
    real_fetch = db.fetch

    async def fetch(sql: str, *args: Any) -> list[Any]:
        seen.append(sql)
        return await real_fetch(sql, *args)

    monkeypatch.setattr(db, "fetch", fetch)
    return seen


async def test_the_list_is_fast_whatever_the_number_of_segments(acme_admin: Client, acme: TenantFixture,
                                                                queries: list[str]) -> None:
    """Counting is left to each row's own request, so the list costs the same few queries for 2 or 12."""
    await crowd(acme.id, 5, "p", channels={"oa": False})

    async def cost(n: int) -> list[str]:
        for i in range(len(await svc.list_segments(acme.id)), n):
            await svc.do_create_segment(acme.id, f"segment {i}", {"channels": ["oa"]}, ACTOR)
        queries.clear()
        r = await acme_admin.get("/segments")
        assert r.status_code == 200 and r.text.count('hx-trigger="revealed"') == n
        return list(queries)

    small, large = await cost(2), await cost(12)
    assert len(small) == len(large) <= 3
    assert not any("FROM contact c" in q for q in large)  # no count on the list itself
