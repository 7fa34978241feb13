"""A brand admin's people and teams: invitations, joining, teams, a member's role, capacity and
teams, deactivation, and what sales reps may not open."""

from __future__ import annotations

import re
from typing import Any

import pytest

from siyu.tenants.tables import AuditLog, Invitation, Staff, Team, TeamMember
from tests.conftest import PASSWORD, Client, TenantFixture

INVITE_LINK = re.compile(r"https://siyu\.test/invite/([A-Za-z0-9_-]+)")
JOIN = {"name": "Rita Rep", "password": "a long password", "confirm_password": "a long password"}



def is_full_page(r: Any) -> bool:
    return r.text.lstrip().lower().startswith("<!doctype html>")


async def make_team(client: Client, name: str) -> int:
    r = await client.form("/settings/teams", {"name": name}, htmx=True)
    assert r.status_code == 200, r.text
    row = await Team.select(Team.id).where(Team.name == name).first()
    return int(row["id"])


async def invite(client: Client, **data: Any) -> str:
    r = await client.form("/settings/staff/invite", {"role": "agent", **data}, htmx=True)
    assert r.status_code == 200, r.text
    return INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]


async def member_form(acme_admin: Client, staff_id: int, **data: Any) -> Any:
    form = {"name": "Acme Agent", "role": "agent", "max_concurrent": "10", "is_active": "1", **data}
    return await acme_admin.form(f"/settings/staff/{staff_id}", {k: v for k, v in form.items() if v is not None},
                                 htmx=True)


# --- invitations ----------------------------------------------------------------------------------

async def test_inviting_a_sales_rep_with_teams_and_capacity(acme_admin: Client, acme: TenantFixture) -> None:
    shanghai = await make_team(acme_admin, "Shanghai store")
    vip = await make_team(acme_admin, "VIP")
    r = await acme_admin.form("/settings/staff/invite", {"email": "Rita@Acme.test", "role": "agent",
                                                         "max_concurrent": "25", "team_ids": [shanghai, vip]},
                              htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="people">')
    assert "Send this link to rita@acme.test. It works once and expires in 7 days." in r.text
    token = INVITE_LINK.search(r.text).group(1)  # type: ignore[union-attr]
    assert "rita@acme.test" in r.text and "invited · Sales rep" in r.text  # the pending list

    inv = await Invitation.select().where(Invitation.tenant == acme.id).output(load_json=True).first()
    assert (inv["email"], inv["role"], inv["max_concurrent"], sorted(inv["team_ids"]), inv["invited_by"]) == (
        "rita@acme.test", "agent", 25, sorted([shanghai, vip]), acme.admin_id)
    assert token not in repr(inv)

    page = await acme_admin.get("/settings/staff")
    assert is_full_page(page)
    assert "rita@acme.test" in page.text
    assert "Revoke" in page.text


async def test_the_invite_form_without_htmx_answers_the_whole_page(acme_admin: Client) -> None:
    r = await acme_admin.form("/settings/staff/invite", {"email": "rita@acme.test", "role": "tenant_admin"})
    assert r.status_code == 200
    assert is_full_page(r)
    assert "<h1>People and teams</h1>" in r.text
    assert INVITE_LINK.search(r.text)
    assert "invited · Administrator" in r.text


async def test_accepting_an_invitation_creates_the_member_with_role_teams_and_capacity(
        acme_admin: Client, client: Client, acme: TenantFixture) -> None:
    shanghai = await make_team(acme_admin, "Shanghai store")
    await make_team(acme_admin, "Beijing store")
    token = await invite(acme_admin, email="rita@acme.test", max_concurrent="25", team_ids=[shanghai])

    page = await client.get(f"/invite/{token}")
    assert "You were invited as sales rep with the email rita@acme.test." in page.text
    r = await client.form(f"/invite/{token}", JOIN)
    assert r.status_code == 302

    rita = await Staff.objects().where(Staff.email == "rita@acme.test").first()
    assert (rita.tenant, rita.role, rita.max_concurrent, rita.name, rita.is_active) == (
        acme.id, "agent", 25, "Rita Rep", True)
    teams = await TeamMember.select(TeamMember.team).where(TeamMember.staff == rita.id)
    assert [t["team"] for t in teams] == [shanghai]
    assert await Invitation.exists().where(Invitation.accepted_at.is_not_null())

    login = await client.login("rita@acme.test", "a long password")
    assert login.headers["location"] == "/inbox"  # a rep lands where their work is
    people = await acme_admin.hx_get("/settings/staff")
    assert "Rita Rep" in people.text
    assert '<span class="badge">Shanghai store</span>' in people.text
    assert "invited ·" not in people.text  # no longer pending


async def test_an_invitation_to_a_team_deleted_since_still_lets_the_person_join(
        acme_admin: Client, client: Client) -> None:
    gone = await make_team(acme_admin, "Pop-up store")
    kept = await make_team(acme_admin, "VIP")
    token = await invite(acme_admin, email="rita@acme.test", team_ids=[gone, kept])
    assert (await acme_admin.form(f"/settings/teams/{gone}/delete", htmx=True)).status_code == 200

    r = await client.form(f"/invite/{token}", JOIN)
    assert r.status_code == 302, r.text
    rita = await Staff.select(Staff.id).where(Staff.email == "rita@acme.test").first()
    teams = await TeamMember.select(TeamMember.team).where(TeamMember.staff == rita["id"])
    assert [t["team"] for t in teams] == [kept]


async def test_invalid_invitation_names_every_wrong_field_and_saves_nothing(acme_admin: Client) -> None:
    r = await acme_admin.form("/settings/staff/invite", {"email": "rita-at-acme", "role": "platform_admin",
                                                         "max_concurrent": "501"}, htmx=True)
    assert r.status_code == 400
    assert "Enter a valid email address." in r.text
    assert "Choose one of: tenant_admin, agent." in r.text
    assert "Enter a number from 0 to 500." in r.text
    assert r.text.count("has-error") == 3
    assert 'value="rita-at-acme"' in r.text
    r = await acme_admin.form("/settings/staff/invite", {"email": "rita@acme.test", "max_concurrent": "lots"},
                              htmx=True)
    assert r.status_code == 400
    assert "Enter a whole number." in r.text
    assert await Invitation.count() == 0


async def test_inviting_into_another_tenants_team_is_refused(acme_admin: Client, globex_admin: Client) -> None:
    await make_team(acme_admin, "Acme team")
    theirs = await make_team(globex_admin, "Globex team")
    r = await acme_admin.form("/settings/staff/invite", {"email": "rita@acme.test", "role": "agent",
                                                         "team_ids": [theirs]}, htmx=True)
    assert r.status_code == 400
    assert "Unknown team." in r.text
    assert await Invitation.count() == 0


async def test_a_second_pending_invitation_for_the_same_email_is_refused(acme_admin: Client) -> None:
    await invite(acme_admin, email="rita@acme.test")
    r = await acme_admin.form("/settings/staff/invite", {"email": "RITA@acme.test", "role": "tenant_admin"},
                              htmx=True)
    assert r.status_code == 400
    assert re.search(r'field has-error">\s*<label for="f-email"', r.text)
    assert "This person already has a pending invitation." in r.text
    assert await Invitation.count() == 1


async def test_inviting_someone_who_already_signs_in_is_refused(acme_admin: Client, acme: TenantFixture,
                                                                globex: TenantFixture) -> None:
    for email in (acme.agent_email, globex.admin_email.upper()):
        r = await acme_admin.form("/settings/staff/invite", {"email": email, "role": "agent"}, htmx=True)
        assert r.status_code == 400
        assert "Someone already signs in with this email." in r.text
    assert await Invitation.count() == 0


async def test_revoking_an_invitation(acme_admin: Client, globex_admin: Client, client: Client) -> None:
    token = await invite(acme_admin, email="rita@acme.test")
    inv_id = (await Invitation.select(Invitation.id).first())["id"]

    assert (await globex_admin.form(f"/settings/invitations/{inv_id}/revoke", htmx=True)).status_code == 404
    assert (await client.get(f"/invite/{token}")).status_code == 200  # still open

    r = await acme_admin.form(f"/settings/invitations/{inv_id}/revoke", htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="people">')
    assert "Invitation revoked." in r.headers["HX-Trigger"]
    assert "rita@acme.test" not in r.text
    assert (await Invitation.select(Invitation.revoked_at).first())["revoked_at"] is not None
    assert (await client.get(f"/invite/{token}")).status_code == 404
    assert (await acme_admin.form(f"/settings/invitations/{inv_id}/revoke", htmx=True)).status_code == 404
    # The person can be invited again.
    await invite(acme_admin, email="rita@acme.test")
    assert await Invitation.count() == 2


# --- teams ----------------------------------------------------------------------------------------

async def test_creating_and_deleting_teams(acme_admin: Client, acme: TenantFixture) -> None:
    r = await acme_admin.form("/settings/teams", {"name": "  Shanghai store "}, htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="teams">')
    assert "Shanghai store" in r.text and "0 members" in r.text

    full = await acme_admin.form("/settings/teams", {"name": "VIP"})
    assert full.status_code == 200
    assert is_full_page(full)
    assert "Shanghai store" in full.text and "VIP" in full.text
    assert sorted(t["name"] for t in await Team.select(Team.name)) == ["Shanghai store", "VIP"]

    vip = (await Team.select(Team.id).where(Team.name == "VIP").first())["id"]
    await member_form(acme_admin, acme.agent_id, team_ids=[vip])
    listed = await acme_admin.hx_get("/settings/staff")
    assert "1 member" in listed.text

    r = await acme_admin.form(f"/settings/teams/{vip}/delete", htmx=True)
    assert r.status_code == 200
    assert "VIP" not in r.text and "Shanghai store" in r.text
    assert [t["name"] for t in await Team.select(Team.name)] == ["Shanghai store"]
    assert await TeamMember.count() == 0  # memberships went with the team
    assert (await acme_admin.form(f"/settings/teams/{vip}/delete", htmx=True)).status_code == 404


async def test_team_names_are_unique_ignoring_case_and_required(acme_admin: Client, globex_admin: Client) -> None:
    await make_team(acme_admin, "Shanghai store")
    r = await acme_admin.form("/settings/teams", {"name": "SHANGHAI Store"}, htmx=True)
    assert r.status_code == 400
    assert "A team with this name already exists." in r.text
    assert 'value="SHANGHAI Store"' in r.text
    r = await acme_admin.form("/settings/teams", {"name": "   "}, htmx=True)
    assert r.status_code == 400 and "This field is required." in r.text
    r = await acme_admin.form("/settings/teams", {"name": "x" * 61})
    assert r.status_code == 400 and is_full_page(r) and "Use at most 60 characters." in r.text
    assert await Team.count() == 1
    await make_team(globex_admin, "Shanghai store")  # another brand may use the same name
    assert await Team.count() == 2


async def test_another_tenants_team_cannot_be_deleted(acme_admin: Client, globex_admin: Client) -> None:
    theirs = await make_team(globex_admin, "Globex team")
    assert (await acme_admin.form(f"/settings/teams/{theirs}/delete", htmx=True)).status_code == 404
    assert await Team.exists().where(Team.id == theirs)


# --- a member's page ------------------------------------------------------------------------------

async def test_member_page_shows_the_member(acme_admin: Client, acme: TenantFixture,
                                            globex: TenantFixture) -> None:
    r = await acme_admin.get(f"/settings/staff/{acme.agent_id}")
    assert r.status_code == 200
    assert is_full_page(r)
    assert "<h1>Acme Agent</h1>" in r.text and acme.agent_email in r.text
    assert '<option value="agent" selected>' in r.text
    assert 'name="max_concurrent" type="number" value="10"' in r.text
    assert (await acme_admin.get(f"/settings/staff/{globex.agent_id}")).status_code == 404
    assert (await acme_admin.get("/settings/staff/999999")).status_code == 404


async def test_changing_a_members_role_capacity_and_teams(acme_admin: Client, acme: TenantFixture) -> None:
    vip = await make_team(acme_admin, "VIP")
    r = await member_form(acme_admin, acme.agent_id, name="Agnes Agent", role="tenant_admin",
                          max_concurrent="40", team_ids=[vip])
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith('<form id="member-form"')
    assert "Saved." in r.headers["HX-Trigger"]
    assert f'value="{vip}" checked' in r.text
    agent = await Staff.objects().where(Staff.id == acme.agent_id).first()
    assert (agent.name, agent.role, agent.max_concurrent, agent.is_active) == ("Agnes Agent", "tenant_admin", 40, True)
    assert [m["team"] for m in await TeamMember.select(TeamMember.team)] == [vip]
    audit = await AuditLog.select(AuditLog.changes, AuditLog.actor_label).where(
        AuditLog.action == "staff.updated").output(load_json=True).first()
    assert audit["actor_label"] == acme.admin_email
    assert audit["changes"]["role"] == ["agent", "tenant_admin"]
    assert audit["changes"]["max_concurrent"] == [10, 40]
    assert audit["changes"]["team_ids"] == [[], [vip]]

    full = await acme_admin.form(f"/settings/staff/{acme.agent_id}", {
        "name": "Agnes Agent", "role": "agent", "max_concurrent": "40", "is_active": "1"})
    assert full.status_code == 200 and is_full_page(full)
    assert await TeamMember.count() == 0  # no boxes ticked: no teams


@pytest.mark.parametrize("capacity,accepted", [("0", True), ("500", True), ("501", False), ("-1", False),
                                               ("ten", False), ("", False)])
async def test_capacity_must_be_a_number_from_0_to_500(acme_admin: Client, acme: TenantFixture,
                                                       capacity: str, accepted: bool) -> None:
    r = await member_form(acme_admin, acme.agent_id, max_concurrent=capacity)
    stored = (await Staff.select(Staff.max_concurrent).where(Staff.id == acme.agent_id).first())["max_concurrent"]
    if accepted:
        assert r.status_code == 200
        assert stored == int(capacity)
    else:
        assert r.status_code == 400
        assert "Enter a number from 0 to 500." in r.text or "Enter a whole number." in r.text
        assert 'field has-error">\n  <label for="f-max_concurrent"' in r.text
        assert stored == 10


async def test_an_admin_cannot_demote_or_deactivate_themselves(acme_admin: Client, acme: TenantFixture) -> None:
    for change in ({"role": "agent"}, {"role": "tenant_admin", "is_active": None}):
        r = await member_form(acme_admin, acme.admin_id, name="Acme Admin", **change)
        assert r.status_code == 400
        assert "You cannot remove your own admin rights or deactivate yourself." in r.text
    me = await Staff.objects().where(Staff.id == acme.admin_id).first()
    assert (me.role, me.is_active) == ("tenant_admin", True)
    assert (await acme_admin.get("/settings/staff")).status_code == 200
    ok = await member_form(acme_admin, acme.admin_id, name="Acme Boss", role="tenant_admin", max_concurrent="3")
    assert ok.status_code == 200  # changing their own name and capacity is fine


async def test_a_deactivated_member_is_signed_out_and_cannot_sign_in(
        acme_admin: Client, acme_agent: Client, client_factory: Any, acme: TenantFixture) -> None:
    assert (await acme_agent.get("/workspace")).status_code == 200
    r = await member_form(acme_admin, acme.agent_id, is_active=None)
    assert r.status_code == 200
    assert (await Staff.select(Staff.is_active).where(Staff.id == acme.agent_id).first())["is_active"] is False
    assert (await acme_agent.get("/workspace")).status_code == 302
    assert (await client_factory().login(acme.agent_email, PASSWORD)).status_code == 401
    people = await acme_admin.get("/settings/staff")
    assert "Sales rep · deactivated" in people.text

    await member_form(acme_admin, acme.agent_id, is_active="1")
    assert (await client_factory().login(acme.agent_email, PASSWORD)).status_code == 302


async def test_another_tenants_member_cannot_be_changed(acme_admin: Client, globex: TenantFixture) -> None:
    r = await member_form(acme_admin, globex.agent_id, role="tenant_admin")
    assert r.status_code == 404
    assert (await Staff.select(Staff.role).where(Staff.id == globex.agent_id).first())["role"] == "agent"


# --- who may open the settings --------------------------------------------------------------------

SETTINGS_PAGES = ["/settings/channels", "/settings/channels?step=wecom", "/settings/staff", "/settings/general",
                  "/settings/api-keys", "/settings/audit"]


async def test_sales_reps_get_403_on_every_settings_page(acme_agent: Client, acme: TenantFixture) -> None:
    for url in [*SETTINGS_PAGES, f"/settings/staff/{acme.admin_id}"]:
        r = await acme_agent.get(url)
        assert r.status_code == 403, url
        assert "This page is for the brand&#39;s administrators." in r.text
        assert (await acme_agent.hx_get(url)).status_code == 403, url

    before = await AuditLog.count()
    posts = {
        "/settings/teams": {"name": "Rogue"},
        "/settings/staff/invite": {"email": "friend@acme.test", "role": "tenant_admin"},
        f"/settings/staff/{acme.agent_id}": {"name": "Me", "role": "tenant_admin", "max_concurrent": "500",
                                             "is_active": "1"},
        "/settings/channels/oa": {"app_id": "wx0123456789abcdef"},
        "/settings/channels/oa/validate?field=app_id": {"app_id": "wx0123456789abcdef"},
        "/settings/general": {"name": "Hijacked"},
        "/settings/api-keys": {"name": "mine"},
    }
    for url, data in posts.items():
        assert (await acme_agent.form(url, data, htmx=True)).status_code == 403, url
    assert await AuditLog.count() == before
    assert await Team.count() == 0 and await Invitation.count() == 0
    assert (await Staff.select(Staff.role).where(Staff.id == acme.agent_id).first())["role"] == "agent"


async def test_platform_admins_do_not_use_a_brands_settings(root: Client) -> None:
    for url in SETTINGS_PAGES:
        assert (await root.get(url)).status_code == 403, url
