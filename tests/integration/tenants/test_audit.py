"""The audit log: who did what and when, shown to the brand's admins only for their own brand,
newest first, fifty at a time."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from siyu.tenants.tables import AuditLog, Team
from tests.conftest import OA, Client, TenantFixture, signed_in

PAGE = 50
LOADER = re.compile(r'<tr hx-get="/settings/audit\?before=(\d+)" hx-trigger="revealed"')



def rows_of(html: str) -> list[str]:
    """The entry rows of an audit page or fragment (not the "load more" row)."""
    return [r for r in re.findall(r"<tr>.*?</tr>", html, re.S) if "<code>" in r]


def actions_of(html: str) -> list[str]:
    return [re.search(r"<code>([^<]+)</code>", r).group(1) for r in rows_of(html)]  # type: ignore[union-attr]


def shanghai_minute(ts: Any) -> str:
    return ts.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")


async def test_actions_are_listed_with_who_what_and_when(acme_admin: Client, acme: TenantFixture) -> None:
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
    assert actions_of(page.text) == [r["action"] for r in stored]  # all of them, newest first
    team_row = rows_of(page.text)[2]
    team = stored[2]
    assert shanghai_minute(team["created_at"]) in team_row  # when
    assert acme.admin_email in team_row and "10.9.8.7" in team_row  # who, from where
    assert f"team #{team['target_id']}" in team_row  # what
    assert "Shanghai store" in team_row
    assert LOADER.search(page.text) is None  # fewer than a page: nothing more to load


async def test_admins_never_see_another_tenants_entries(acme_admin: Client, globex_admin: Client,
                                                       root: Client, acme: TenantFixture) -> None:
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


async def test_a_platform_admins_actions_on_the_tenant_are_shown_to_its_admins(
        root: Client, client_factory: Any, acme: TenantFixture) -> None:
    assert (await root.form(f"/platform/tenants/{acme.id}/status", {"status": "suspended"})).status_code == 302
    assert (await root.form(f"/platform/tenants/{acme.id}/status", {"status": "active"})).status_code == 302
    admin = await signed_in(client_factory, acme.admin_email)
    rows = rows_of((await admin.get("/settings/audit")).text)
    suspended = next(r for r in rows if "<code>tenant.suspended</code>" in r)
    assert "root@siyu.test" in suspended
    assert "<code>tenant.reactivated</code>" in "".join(rows)


async def add_entries(acme: TenantFixture, globex: TenantFixture, n: int) -> None:
    """n entries for acme, interleaved with as many for globex so the ids of the two mix."""
    rows = []
    for i in range(n):
        rows.append(AuditLog(tenant=acme.id, actor_label="bulk@acme.test", action=f"acme.bulk.{i:03d}"))
        rows.append(AuditLog(tenant=globex.id, actor_label="bulk@globex.test", action=f"globex.bulk.{i:03d}"))
    await AuditLog.insert(*rows)


async def test_older_entries_load_fifty_at_a_time(acme_admin: Client, acme: TenantFixture,
                                                 globex: TenantFixture) -> None:
    await add_entries(acme, globex, 2 * PAGE + 17 - await AuditLog.count().where(AuditLog.tenant == acme.id))
    expected = [r["action"] for r in await AuditLog.select(AuditLog.action).where(
        AuditLog.tenant == acme.id).order_by(AuditLog.id, ascending=False)]
    assert len(expected) == 2 * PAGE + 17

    first = await acme_admin.get("/settings/audit")
    seen = actions_of(first.text)
    assert seen == expected[:PAGE]
    cursor = LOADER.search(first.text)
    assert cursor is not None
    pages = 1
    while cursor:
        fragment = await acme_admin.hx_get(f"/settings/audit?before={cursor.group(1)}")
        assert fragment.status_code == 200
        assert fragment.text.lstrip().startswith("<tr")  # rows only, for the table's body
        assert "<html" not in fragment.text
        seen += actions_of(fragment.text)
        cursor = LOADER.search(fragment.text)
        pages += 1
    assert pages == 3
    assert seen == expected
    assert not any(a.startswith("globex") for a in seen)


async def test_the_last_page_of_an_exact_multiple_ends_without_an_empty_page(
        acme_admin: Client, acme: TenantFixture, globex: TenantFixture) -> None:
    await add_entries(acme, globex, 2 * PAGE - await AuditLog.count().where(AuditLog.tenant == acme.id))
    first = await acme_admin.get("/settings/audit")
    cursor = LOADER.search(first.text)
    assert cursor is not None
    second = await acme_admin.hx_get(f"/settings/audit?before={cursor.group(1)}")
    assert len(rows_of(second.text)) == PAGE
    assert LOADER.search(second.text) is None, "nothing older is left to load"
    assert "Nothing recorded yet." not in second.text


async def test_paging_past_the_oldest_entry_lists_nothing(acme_admin: Client, acme: TenantFixture) -> None:
    oldest = (await AuditLog.select(AuditLog.id).where(AuditLog.tenant == acme.id).order_by(AuditLog.id).first())["id"]
    for before in (str(oldest), "0"):
        r = await acme_admin.hx_get(f"/settings/audit?before={before}")
        assert r.status_code == 200
        assert rows_of(r.text) == [], before
        assert "Nothing recorded yet." in r.text


async def test_a_cursor_beyond_every_id_lists_from_the_newest(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.hx_get("/settings/audit?before=99999999999999999999999")
    assert r.status_code == 200
    stored = await AuditLog.select(AuditLog.action).where(AuditLog.tenant == acme.id).order_by(
        AuditLog.id, ascending=False)
    assert actions_of(r.text) == [s["action"] for s in stored]


@pytest.mark.parametrize("before", ["abc", "-5", "1.5", "", "12abc", "%C2%B2", "%D9%A3"])
async def test_a_malformed_before_answers_400(acme_admin: Client, before: str) -> None:
    r = await acme_admin.get(f"/settings/audit?before={before}")
    assert r.status_code == 400
    assert "Enter a whole number." in r.text
    hx = await acme_admin.hx_get(f"/settings/audit?before={before}")
    assert hx.status_code == 400
    assert hx.headers["HX-Retarget"] == "#flash"


async def test_the_audit_log_is_for_the_brands_admins(acme_agent: Client, root: Client) -> None:
    assert (await acme_agent.get("/settings/audit")).status_code == 403
    assert (await acme_agent.hx_get("/settings/audit?before=10")).status_code == 403
    assert (await root.get("/settings/audit")).status_code == 403
    assert await Team.count() == 0
