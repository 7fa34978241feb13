"""The audit log: who did what and when, as sentences in the reader's language with links to what they name,
shown to the brand's admins only for their own brand, newest first, fifty at a time, filtered by person,
action and dates, and exported as CSV under the same filters."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from siyu.tenants import audit
from siyu.tenants.tables import AuditLog, Team
from tests.conftest import OA, Client, TenantFixture, signed_in

PAGE = 50
LOADER = re.compile(r'<tr class="load-more" hx-get="(/settings/audit\?[^"]+)" hx-trigger="revealed"')
ZH = {"Accept-Language": "zh-CN"}


def rows_of(html: str) -> list[str]:
    """The entry rows of an audit page or fragment (not the "load more" row)."""
    return re.findall(r'<tr class="audit-entry".*?</tr>', html, re.S)


def codes_of(html: str) -> list[str]:
    return re.findall(r'<tr class="audit-entry" data-code="([^"]+)"', html)


def sentence_of(row: str) -> str:
    cell = re.search(r'<td class="audit-sentence">(.*?)</td>', row, re.S)
    assert cell is not None
    return cell.group(1)


def more_of(html: str) -> str | None:
    m = LOADER.search(html)
    return m.group(1).replace("&amp;", "&") if m else None


def shanghai_second(ts: Any) -> str:
    return ts.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")


async def test_actions_read_as_sentences_with_links(acme_admin: Client, acme: TenantFixture) -> None:
    await acme_admin.form("/settings/teams", {"name": "Shanghai store"}, htmx=True)
    await acme_admin.form("/settings/staff/invite", {"email": "rita@acme.test", "role": "agent"}, htmx=True)
    await acme_admin.form("/settings/channels/oa", OA, htmx=True)

    stored = await AuditLog.select().where(AuditLog.tenant == acme.id).order_by(AuditLog.id, ascending=False)
    assert [r["action"] for r in stored[:3]] == ["channel.oa.linked", "invitation.created", "team.created"]
    for r in stored[:3]:
        assert (r["actor"], r["actor_label"], r["ip"]) == (acme.admin_id, acme.admin_email, "10.9.8.7")

    page = await acme_admin.get("/settings/audit")
    assert page.status_code == 200
    assert page.text.lstrip().lower().startswith("<!doctype html>")
    assert codes_of(page.text) == [r["action"] for r in stored]  # all of them, newest first
    rows = rows_of(page.text)
    team_row, team = rows[2], stored[2]
    assert shanghai_second(team["created_at"]) in team_row  # when
    assert "10.9.8.7" in team_row  # from where
    admin = f'<a href="/settings/staff/{acme.admin_id}">Acme Admin</a>'
    assert sentence_of(team_row) == f'{admin} created the team <a href="/settings/staff">“Shanghai store”</a>.'
    assert sentence_of(rows[1]) == f"{admin} invited rita@acme.test as Sales rep."
    assert sentence_of(rows[0]) == (f'{admin} linked the <a href="/settings/channels?step=oa">Official Account</a> '
                                    f'{OA["app_id"]}.')
    assert "Message encryption</span> safe (encrypted)" in rows[0]  # the rest, in words
    assert "secrets_changed" not in page.text and "channel.oa.linked</" not in page.text
    assert more_of(page.text) is None  # fewer than a page: nothing more to load


async def test_the_log_reads_in_chinese_without_escapes(acme_admin: Client, acme: TenantFixture) -> None:
    await acme_admin.form("/settings/inbox/", {"handoff_keywords": "人工, 客服", "unanswered_limit": "3",
                                               "sla_minutes": "5", "recent_days": "30"}, htmx=True)
    await acme_admin.form("/settings/teams", {"name": "上海门店"}, htmx=True)
    page = await acme_admin.get("/settings/audit", headers=ZH)
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    rows = rows_of(page.text)
    assert sentence_of(rows[0]).endswith("创建了团队 <a href=\"/settings/staff\">“上海门店”</a>。")
    assert "修改了收件箱设置。" in sentence_of(rows[1])
    assert "转人工关键词</span> 人工, 客服" in rows[1]
    assert "\\u" not in page.text  # no JSON escapes of Chinese
    for code in codes_of(page.text):
        assert f">{code}<" not in page.text and f" {code}" not in page.text


async def test_a_platform_admins_actions_on_the_tenant_are_shown_to_its_admins(
        root: Client, client_factory: Any, acme: TenantFixture) -> None:
    r = await root.form(f"/platform/tenants/{acme.id}/status", {"status": "suspended", "confirm": acme.slug})
    assert r.status_code == 302
    assert (await root.form(f"/platform/tenants/{acme.id}/status", {"status": "active"})).status_code == 302
    admin = await signed_in(client_factory, acme.admin_email)
    rows = rows_of((await admin.get("/settings/audit")).text)
    suspended = next(r for r in rows if 'data-code="tenant.suspended"' in r)
    assert sentence_of(suspended) == "root@siyu.test (Siyu platform) suspended the brand&#39;s workspace."
    assert "Status</span> active → suspended" in suspended
    assert any('data-code="tenant.reactivated"' in r for r in rows)


async def test_admins_never_see_another_tenants_entries(acme_admin: Client, globex_admin: Client,
                                                       root: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await globex_admin.form("/settings/teams", {"name": "Globex secret team"}, htmx=True)
    await acme_admin.form("/settings/teams", {"name": "Acme team"}, htmx=True)

    acme_page = (await acme_admin.get("/settings/audit")).text
    assert "Acme team" in acme_page
    assert "Globex secret team" not in acme_page
    assert "globex" not in acme_page.lower()
    assert "root@siyu.test" not in acme_page  # platform-wide entries belong to no tenant
    globex_page = (await globex_admin.get("/settings/audit")).text
    assert "Globex secret team" in globex_page
    assert "Acme team" not in globex_page and "acme" not in globex_page.lower()
    assert len(rows_of(acme_page)) == await AuditLog.count().where(AuditLog.tenant == acme.id)
    # Another tenant's person in the filter lists nothing (and names nobody).
    other = await acme_admin.get(f"/settings/audit?who={globex.admin_id}")
    assert other.status_code == 200 and rows_of(other.text) == []
    exported = await acme_admin.get(f"/settings/audit/export.csv?who={globex.admin_id}")
    assert exported.status_code == 200 and len(list(csv.reader(io.StringIO(exported.text)))) == 1
    whole = (await acme_admin.get("/settings/audit/export.csv")).text
    assert "Globex" not in whole and "Acme team" in whole


# --- filters -------------------------------------------------------------------------------------------

async def add(tenant_id: int, at: datetime, action: str = "staff.signed_in", actor: int | None = None,
              label: str = "bulk@acme.test", changes: dict[str, Any] | None = None) -> None:
    target = ("contact", "5") if action.startswith("contact.") else ("", "")
    await AuditLog.insert(AuditLog(tenant=tenant_id, actor=actor, actor_label=label, action=action,
                                   target_type=target[0], target_id=target[1], changes=changes or {}, created_at=at))


SHANGHAI = ZoneInfo("Asia/Shanghai")


async def test_filters_by_person_action_and_days_in_the_tenants_time_zone(
        acme_admin: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await AuditLog.delete().where(AuditLog.tenant == acme.id)
    # Midnight in Shanghai is 16:00 UTC the day before: the days are the tenant's.
    day1_start = datetime(2026, 3, 1, 0, 0, tzinfo=SHANGHAI)
    await add(acme.id, day1_start - timedelta(seconds=1), actor=acme.admin_id, label=acme.admin_email)  # Feb 28
    await add(acme.id, day1_start, actor=acme.admin_id, label=acme.admin_email)  # Mar 1, first second
    await add(acme.id, day1_start + timedelta(hours=23, minutes=59, seconds=59), "contact.tagged", acme.agent_id,
              acme.agent_email, changes={"tag": "VIP"})  # Mar 1, last second
    await add(acme.id, day1_start + timedelta(days=1), "channel.mp.linked", acme.admin_id, acme.admin_email,
              changes={"app_id": "wxfedcba9876543210"})  # Mar 2
    await add(acme.id, day1_start + timedelta(days=1, hours=1), "channel.oa.unlinked", None, "system")
    await add(acme.id, day1_start + timedelta(days=1, hours=2), "contact.tagged", None, "api-key:77",
              changes={"tag": "API"})
    await add(globex.id, day1_start + timedelta(hours=1), actor=globex.admin_id, label=globex.admin_email)

    async def codes(query: str) -> list[str]:
        r = await acme_admin.get(f"/settings/audit?{query}")
        assert r.status_code == 200, r.text
        return [c for c in codes_of(r.text)]

    assert len(await codes("")) == 6
    assert await codes("from=2026-03-01&to=2026-03-01") == ["contact.tagged", "staff.signed_in"]
    assert await codes("to=2026-02-28") == ["staff.signed_in"]
    assert await codes("from=2026-03-02") == ["contact.tagged", "channel.oa.unlinked", "channel.mp.linked"]
    assert await codes(f"who={acme.agent_id}") == ["contact.tagged"]
    assert await codes(f"who={acme.admin_id}&from=2026-03-01") == ["channel.mp.linked", "staff.signed_in"]
    assert await codes("who=auto") == ["channel.oa.unlinked"]
    assert await codes("who=key:77") == ["contact.tagged"]
    # One action in the filter stands for the same action on every kind of account.
    assert await codes("action=channel.linked") == ["channel.mp.linked"]
    assert await codes("action=channel.unlinked") == ["channel.oa.unlinked"]
    assert await codes("action=contact.tagged&who=auto") == []
    # The page shows what is chosen, and offers the people and the actions to choose from.
    page = (await acme_admin.get(f"/settings/audit?who={acme.agent_id}&action=contact.tagged&from=2026-03-01")).text
    assert f'<option value="{acme.agent_id}" selected>Acme Agent</option>' in page
    assert '<option value="contact.tagged" selected>Contact tagged</option>' in page
    assert 'name="from" value="2026-03-01"' in page
    assert f'href="/settings/audit/export.csv?who={acme.agent_id}&amp;action=contact.tagged&amp;from=2026-03-01"' in page
    empty = await acme_admin.get("/settings/audit?from=2030-01-01")
    assert "Nothing matches these filters." in empty.text


async def test_a_change_of_filters_answers_the_results_block(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.hx_get(f"/settings/audit?who={acme.admin_id}")
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="audit-results">')
    assert "<html" not in r.text and 'id="audit-filters"' not in r.text
    assert r.headers["vary"] == "HX-Request"


@pytest.mark.parametrize(("query", "field", "message"), [
    ("from=2026-13-01", "from", "Enter a date as YYYY-MM-DD."),
    ("to=yesterday", "to", "Enter a date as YYYY-MM-DD."),
    ("from=0001-01-01", "from", "Enter a date between 2000-01-01 and 2999-12-31."),
    ("to=9999-12-31", "to", "Enter a date between 2000-01-01 and 2999-12-31."),
    ("from=2026-03-02&to=2026-03-01", "to", "The last day comes on or after the first day."),
    ("who=somebody", "who", "Choose a person from the list."),
    ("who=99999999999999999999", "who", "Choose a person from the list."),
    ("who=key:x", "who", "Choose a person from the list."),
    ("action=staff.hacked", "action", "Choose an action from the list."),
    ("from=%00", "from", "cannot be stored"),
])
async def test_a_bad_filter_answers_400_naming_it(acme_admin: Client, query: str, field: str, message: str) -> None:
    for url in (f"/settings/audit?{query}", f"/settings/audit/export.csv?{query}"):
        r = await acme_admin.get(url)
        assert r.status_code == 400, (url, r.text[:200])
        assert message in r.text
    hx = await acme_admin.hx_get(f"/settings/audit?{query}")
    assert hx.status_code == 400
    assert hx.headers["HX-Retarget"] == "#flash"


# --- pages ---------------------------------------------------------------------------------------------

TARGET0 = 100_000  # people that do not exist: the sentence says "person #<id>"


async def add_entries(acme: TenantFixture, globex: TenantFixture, n: int, at: datetime | None = None) -> None:
    """n entries for acme, interleaved with as many for globex so the ids of the two mix; with `at`, all at the
    same instant (ties broken by id)."""
    rows = []
    base = datetime(2026, 4, 1, tzinfo=UTC)
    for i in range(n):
        when = at or base + timedelta(minutes=i)
        rows.append(AuditLog(tenant=acme.id, actor_label="bulk@acme.test", action="staff.password_changed",
                             target_type="staff", target_id=str(TARGET0 + i), created_at=when))
        rows.append(AuditLog(tenant=globex.id, actor_label="bulk@globex.test", action="staff.signed_in",
                             created_at=when))
    await AuditLog.insert(*rows)


async def expected_ids(acme: TenantFixture) -> list[int]:
    rows = await AuditLog.select(AuditLog.id, AuditLog.created_at).where(AuditLog.tenant == acme.id)
    return [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)]


def ids_of(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td class="audit-when">.*?</td>\s*<td class="audit-sentence">.*?person #(\d+)',
                                       html, re.S)]


@pytest.mark.parametrize("same_instant", [False, True], ids=["spread", "all-at-once"])
async def test_older_entries_load_fifty_at_a_time(acme_admin: Client, acme: TenantFixture,
                                                 globex: TenantFixture, same_instant: bool) -> None:
    await AuditLog.delete().where(AuditLog.tenant == acme.id)
    await add_entries(acme, globex, 2 * PAGE + 17, datetime(2026, 4, 1, tzinfo=UTC) if same_instant else None)
    expected = await expected_ids(acme)
    targets = {r["id"]: int(r["target_id"]) for r in await AuditLog.select(AuditLog.id, AuditLog.target_id).where(
        AuditLog.tenant == acme.id)}

    first = await acme_admin.get("/settings/audit")
    seen = ids_of(first.text)
    assert len(seen) == PAGE
    more = more_of(first.text)
    assert more is not None
    pages = 1
    while more:
        fragment = await acme_admin.hx_get(more)
        assert fragment.status_code == 200
        assert fragment.text.lstrip().startswith("<tr")  # rows only, for the table's body
        assert "<html" not in fragment.text
        seen += ids_of(fragment.text)
        more = more_of(fragment.text)
        pages += 1
    assert pages == 3
    assert seen == [targets[i] for i in expected]  # every entry once, newest first
    # Without JavaScript the same link opens a page starting there.
    plain = await acme_admin.get(more_of(first.text) or "")
    assert plain.text.lstrip().lower().startswith("<!doctype html>") and ids_of(plain.text) == seen[PAGE:2 * PAGE]


async def test_the_next_page_keeps_the_filters(acme_admin: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await add_entries(acme, globex, PAGE + 5)
    for i in range(PAGE + 5):
        await add(acme.id, datetime(2026, 4, 1, tzinfo=UTC) + timedelta(minutes=i, seconds=30), "contact.tagged",
                  changes={"tag": f"t{i}"})
    first = await acme_admin.get("/settings/audit?action=contact.tagged&from=2026-04-01")
    more = more_of(first.text)
    assert more is not None and "action=contact.tagged" in more and "from=2026-04-01" in more
    second = await acme_admin.hx_get(more)
    assert set(codes_of(first.text) + codes_of(second.text)) == {"contact.tagged"}
    assert len(codes_of(first.text) + codes_of(second.text)) == PAGE + 5


async def test_the_last_page_of_an_exact_multiple_ends_without_an_empty_page(
        acme_admin: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await AuditLog.delete().where(AuditLog.tenant == acme.id)
    await add_entries(acme, globex, 2 * PAGE)
    first = await acme_admin.get("/settings/audit")
    more = more_of(first.text)
    assert more is not None
    second = await acme_admin.hx_get(more)
    assert len(rows_of(second.text)) == PAGE
    assert more_of(second.text) is None, "nothing older is left to load"
    assert "Nothing recorded yet." not in second.text


async def test_paging_past_the_oldest_entry_lists_nothing(acme_admin: Client, acme: TenantFixture) -> None:
    oldest = (await AuditLog.select().where(AuditLog.tenant == acme.id).order_by(AuditLog.created_at).order_by(
        AuditLog.id).first())
    for before in (audit.cursor_of(oldest), "0.0"):
        r = await acme_admin.hx_get(f"/settings/audit?before={before}")
        assert r.status_code == 200
        assert rows_of(r.text) == [], before
        assert "Nothing recorded yet." in r.text


async def test_a_cursor_beyond_every_entry_lists_from_the_newest(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.hx_get("/settings/audit?before=9999999999999999.9999999999")
    assert r.status_code == 200
    assert codes_of(r.text) == [a["action"] for a in await AuditLog.select(AuditLog.action).where(
        AuditLog.tenant == acme.id).order_by(AuditLog.created_at, ascending=False).order_by(AuditLog.id, ascending=False)]


@pytest.mark.parametrize("before", ["abc", "-5", "1.5.2", "", "12abc", "%C2%B2.1", "1." + "9" * 11])
async def test_a_malformed_cursor_answers_400(acme_admin: Client, before: str) -> None:
    r = await acme_admin.get(f"/settings/audit?before={before}")
    assert r.status_code == 400
    assert "This link to older entries is damaged" in r.text
    hx = await acme_admin.hx_get(f"/settings/audit?before={before}")
    assert hx.status_code == 400
    assert hx.headers["HX-Retarget"] == "#flash"


# --- CSV -----------------------------------------------------------------------------------------------

async def test_the_export_streams_every_matching_entry_as_sentences(
        acme_admin: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await AuditLog.delete().where(AuditLog.tenant == acme.id)
    n = audit.CSV_BATCH * 2 + 37  # three reads of the log while the answer is sent
    await add_entries(acme, globex, n)
    await add(acme.id, datetime(2026, 5, 1, tzinfo=UTC), "team.created", acme.admin_id, acme.admin_email,
              changes={"name": "=HYPERLINK(\"http://evil\")"})
    r = await acme_admin.get("/settings/audit/export.csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="audit-log-acme-\d{8}-\d{4}\.csv"', r.headers["content-disposition"])
    assert r.content.startswith("\ufeff".encode())  # spreadsheet programs read it as UTF-8
    rows = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert rows[0] == ["When (Asia/Shanghai)", "Who", "What", "Details", "Action code", "IP address"]
    assert len(rows) == 1 + n + 1
    assert rows[1][1] == "Acme Admin" and rows[1][2].startswith("Acme Admin created the team")
    assert rows[1][2].startswith("Acme Admin created the team “=HYPERLINK")  # inside a sentence: harmless
    assert rows[2][2] == f"bulk@acme.test changed the password of person #{TARGET0 + n - 1}."
    assert rows[2][4] == "staff.password_changed"
    times = [row[0] for row in rows[1:]]
    assert times == sorted(times, reverse=True)
    assert rows[-1][0] == shanghai_second(datetime(2026, 4, 1, tzinfo=UTC))


async def test_the_export_follows_the_filters_and_the_language(acme_admin: Client, acme: TenantFixture) -> None:
    await add(acme.id, datetime(2026, 3, 1, 12, tzinfo=SHANGHAI), "contact.tagged", acme.agent_id, acme.agent_email,
              changes={"tag": "贵宾"})
    await add(acme.id, datetime(2026, 3, 2, 12, tzinfo=SHANGHAI), "contact.tagged", acme.agent_id, acme.agent_email,
              changes={"tag": "later"})
    await add(acme.id, datetime(2026, 3, 1, 13, tzinfo=SHANGHAI), actor=acme.agent_id, label=acme.agent_email)
    r = await acme_admin.get(f"/settings/audit/export.csv?who={acme.agent_id}&action=contact.tagged"
                             "&from=2026-03-01&to=2026-03-01", headers=ZH)
    rows = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert rows[0][:3] == ["时间 (Asia/Shanghai)", "操作人", "操作"]
    assert [row[2] for row in rows[1:]] == ["Acme Agent 为联系人 #5添加了标签“贵宾”。"]
    assert rows[1][0] == "2026-03-01 12:00:00"
    assert "\\u" not in r.text


async def test_a_person_typed_formula_never_starts_a_cell(acme_admin: Client, acme: TenantFixture) -> None:
    await add(acme.id, datetime(2026, 3, 1, tzinfo=UTC), "staff.signed_in", None, "=cmd|' /C calc'!A0")
    r = await acme_admin.get("/settings/audit/export.csv?from=2026-03-01&to=2026-03-01")
    row = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))[1]
    assert row[1] == "'=cmd|' /C calc'!A0" and row[2].startswith("'=cmd")


async def test_the_audit_log_is_for_the_brands_admins(acme_agent: Client, root: Client) -> None:
    for url in ("/settings/audit", "/settings/audit/export.csv"):
        assert (await acme_agent.get(url)).status_code == 403
        assert (await root.get(url)).status_code == 403
    assert (await acme_agent.hx_get("/settings/audit?before=1.10")).status_code == 403
    assert await Team.count() == 0
