"""Tenant isolation. Two named tenants, acme and globex: acme's people and keys never see or change
globex's objects. An id of another tenant answers exactly like an id that does not exist."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from siyu.commerce import buyers as commerce_buyers
from siyu.commerce import imports as commerce_imports
from siyu.commerce import purchases as commerce_purchases
from siyu.contacts import services as contacts_svc
from siyu.contacts.tables import Contact, ContactMerge, ContactTag, Identity
from siyu.core import clock, db
from siyu.inbox import actions as inbox_actions
from siyu.inbox import canned as inbox_canned
from siyu.inbox.config import do_update_settings
from siyu.inbox.conversations import viewer_for
from siyu.inbox.handoff import do_handoff
from siyu.inbox.tables import CannedReply, Conversation, Message
from siyu.segments import services as segments_svc
from siyu.segments.tables import Segment
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from siyu.tenants.tables import ApiKey, AuditLog, ChannelAccount, Invitation, Staff, Team, TeamMember, Tenant
from siyu.wechat import services as wechat_svc
from siyu.wechat import windows
from siyu.wechat.tables import AutoReply
from tests.conftest import MP, OA, WECOM, Client, TenantFixture, built_once

MISSING_ID = 987654321



# Globex's recognisable data: none of it may appear in anything acme sees.
GLOBEX_OA = {**OA, "app_id": "wx9999999999999999", "token": "GlobexOaTok77", "app_secret": "globexOaSecret_0123456789abcdef"}
GLOBEX_MP = {**MP, "app_id": "wx8888888888888888", "token": "GlobexMpTok77"}
GLOBEX_WECOM = {**WECOM, "corp_id": "ww7777777777777777", "token": "GlobexWecomTok77"}
GLOBEX_STRINGS = ["globex", GLOBEX_OA["app_id"], GLOBEX_MP["app_id"], GLOBEX_WECOM["corp_id"],
                  GLOBEX_OA["token"], GLOBEX_MP["token"], GLOBEX_WECOM["token"], "Globex Team", "invitee@globex.test"]


@dataclass
class Seeded:
    """Ids of one tenant's objects, and the API key (with its prefix) created for it."""

    tenant: TenantFixture
    team_id: int
    invitation_id: int
    api_key_id: int
    api_key: str
    api_key_prefix: str
    auto_reply_id: int
    contact_id: int
    merge_id: int
    segment_id: int = 0
    conversation_id: int = 0  # assigned to the tenant's agent, reply window open
    resolved_conversation_id: int = 0
    canned_id: int = 0  # a tenant-wide canned reply
    owner_id: int = 0  # a WeCom rep who added the conversation's customer
    product_id: int = 0  # learned from the tenant's one purchase
    import_id: int = 0  # a history import (done) with one problem

    def object_id(self, kind: str) -> int:
        return {"staff": self.tenant.admin_id, "team": self.team_id, "invitation": self.invitation_id,
                "api_key": self.api_key_id, "auto_reply": self.auto_reply_id, "contact": self.contact_id,
                "merge": self.merge_id, "segment": self.segment_id,
                "conversation": self.conversation_id, "resolved_conversation": self.resolved_conversation_id,
                "canned": self.canned_id, "product": self.product_id, "purchase_import": self.import_id}[kind]


async def seed(t: TenantFixture, name: str, channels: dict[str, dict[str, str]]) -> Seeded:
    actor = svc.Actor.cli()
    team_id = await staff_svc.do_create_team(actor, t.id, f"{name} Team")
    await staff_svc.set_teams(t.id, t.agent_id, [team_id])
    invitation_id, _ = await staff_svc.do_invite(actor, t.id, {"email": f"invitee@{t.slug}.test", "role": "agent"})
    key_id, key = await svc.do_create_api_key(actor, t.id, f"{name} key")
    for kind, data in channels.items():
        await svc.do_link_channel(actor, t.id, kind, data)
    prefix = key.split("_")[1]
    rule_id = await wechat_svc.do_create_rule(actor, t.id, {"trigger": "keyword", "match_type": "exact",
                                                            "keyword": f"{name} price", "reply": f"{name} prices"})
    contact_id = await contacts_svc.resolve_identity(t.id, "oa", "oSeedContact01")
    merged_id = await contacts_svc.resolve_identity(t.id, "mp", "oSeedMerged001")
    await contacts_svc.resolve_identity(t.id, "oa", "oSeedOther0001")  # what the merge route names
    merge_id = await contacts_svc.do_merge(t.id, contact_id, merged_id, "manual", actor)
    await contacts_svc.do_tag(t.id, contact_id, f"{name} VIP", actor)
    seeded = Seeded(t, team_id, invitation_id, key_id, key, prefix, rule_id, contact_id, merge_id)
    vip = (await contacts_svc.tags_of(t.id, contact_id))[0]["id"]
    seeded.segment_id = await segments_svc.do_create_segment(
        t.id, f"{name} VIP segment", {"tags": {"ids": [vip], "match": "any"}}, actor)
    await seed_inbox(seeded)
    await seed_purchase(seeded, name)
    return seeded


async def seed_purchase(seeded: Seeded, name: str) -> None:
    """One purchase of the seeded contact (and so one product), as the brand's backend reports it."""
    buyer = await commerce_buyers.by_contact_id(seeded.tenant.id, seeded.contact_id)
    await commerce_purchases.do_record_payment(seeded.tenant.id, commerce_purchases.Payment(
        source="api", order_id=f"{name}-ORDER-1", amount_fen=8800, currency="CNY", paid_at=clock.now(),
        items=[{"sku": f"{name.upper()}-SKU", "name": f"{name} tea", "quantity": 1, "unit_price_fen": 8800}]), buyer)
    seeded.product_id = int((await db.fetchrow("SELECT id FROM commerce_product WHERE tenant = $1",
                                               seeded.tenant.id))["id"])
    head = "order_id,paid_at,amount_fen,sku,contact_id\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}-history.csv"
        path.write_text(f"{head}{name}-OLD-1,2024-01-02 10:00:00,100,OLD,{seeded.contact_id}\n"
                        f"{name}-OLD-2,soon,1,OLD,1\n")
        seeded.import_id = (await commerce_imports.import_path(seeded.tenant.id, path, svc.Actor.cli())).id


async def seed_inbox(seeded: Seeded) -> None:
    """A conversation the agent has (window open), a resolved one, and a canned reply everyone shares."""
    t = seeded.tenant
    admin = await viewer_for(t.id, t.admin_id)
    identity = await Identity.select(Identity.id).where(
        (Identity.tenant == t.id) & (Identity.external_id == "oSeedContact01")).first()
    conv = await do_handoff(t.id, identity["id"])
    await inbox_actions.do_assign(t.id, admin, conv["id"], t.agent_id)
    await windows.note_inbound(t.id, "oa", "oSeedContact01", "message", clock.now())
    other = await Identity.select(Identity.id).where(
        (Identity.tenant == t.id) & (Identity.external_id == "oSeedOther0001")).first()
    done = await do_handoff(t.id, other["id"])
    await inbox_actions.do_resolve(t.id, admin, done["id"])
    seeded.conversation_id, seeded.resolved_conversation_id = conv["id"], done["id"]
    await do_update_settings(t.id, {"notice_template_id": f"TPL_{t.slug}_notice", "notice_text_key": "thing1",
                                    "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30"}, svc.Actor.cli())
    wecom_contact = await contacts_svc.resolve_identity(t.id, "wecom", "wmSeedOwned01")
    await contacts_svc.do_merge(t.id, seeded.contact_id, wecom_contact, "manual", svc.Actor.cli())
    wecom = await Identity.select(Identity.id).where(
        (Identity.tenant == t.id) & (Identity.external_id == "wmSeedOwned01")).first()
    await contacts_svc.record_owner_added(t.id, wecom["id"], "seedrep", clock.now())
    seeded.owner_id = int((await db.fetchrow("SELECT id FROM owner WHERE tenant = $1", t.id))["id"])
    seeded.canned_id = await inbox_canned.do_create_canned(
        t.id, admin, {"shortcut": "hi", "body": f"{t.slug} says hi", "scope": "tenant"}, svc.Actor.cli())


def with_own_ids(data: dict[str, Any] | None, own: Seeded) -> dict[str, Any] | None:
    """Form data naming the requester's own objects ("{team}"): only the id in the URL is foreign."""
    if data is None:
        return None
    return {k: v.format(team=own.team_id, owner=own.owner_id) if isinstance(v, str) else v for k, v in data.items()}


@pytest.fixture
async def acme_seeded(acme: TenantFixture) -> Seeded:
    return await built_once("acme_seeded", lambda: seed(acme, "Acme", {"oa": OA}))


@pytest.fixture
async def globex_seeded(globex: TenantFixture) -> Seeded:
    return await built_once("globex_seeded", lambda: seed(globex, "Globex", {"oa": GLOBEX_OA, "mp": GLOBEX_MP,
                                                                            "wecom": GLOBEX_WECOM}))


async def tenant_state(tenant_id: int) -> dict[str, Any]:
    """Every row a tenant owns, to prove a refused request changed nothing."""
    return {
        "tenant": await Tenant.select().where(Tenant.id == tenant_id),
        "staff": await Staff.select().where(Staff.tenant == tenant_id).order_by(Staff.id),
        "teams": await Team.select().where(Team.tenant == tenant_id).order_by(Team.id),
        "members": await TeamMember.select().where(TeamMember.tenant == tenant_id).order_by(TeamMember.id),
        "invitations": await Invitation.select().where(Invitation.tenant == tenant_id).order_by(Invitation.id),
        "api_keys": await ApiKey.select().where(ApiKey.tenant == tenant_id).order_by(ApiKey.id),
        "channels": await ChannelAccount.select().where(ChannelAccount.tenant == tenant_id).order_by(ChannelAccount.id),
        "auto_replies": await AutoReply.select().where(AutoReply.tenant == tenant_id).order_by(AutoReply.id),
        "contacts": await Contact.select().where(Contact.tenant == tenant_id).order_by(Contact.id),
        "contact_tags": await ContactTag.select().where(ContactTag.tenant == tenant_id).order_by(ContactTag.id),
        "merges": await ContactMerge.select().where(ContactMerge.tenant == tenant_id).order_by(ContactMerge.id),
        "segments": await Segment.select().where(Segment.tenant == tenant_id).order_by(Segment.id),
        "conversations": await Conversation.select().where(Conversation.tenant == tenant_id).order_by(Conversation.id),
        "messages": await Message.select().where(Message.tenant == tenant_id).order_by(Message.id),
        "canned": await CannedReply.select().where(CannedReply.tenant == tenant_id).order_by(CannedReply.id),
        "audit": await AuditLog.count(),
        "purchases": [dict(r) for r in await db.fetch("SELECT * FROM commerce_purchase WHERE tenant = $1 ORDER BY id",
                                                      tenant_id)],
        "products": [dict(r) for r in await db.fetch("SELECT * FROM commerce_product WHERE tenant = $1 ORDER BY id",
                                                     tenant_id)],
        "pay_merchant": [dict(r) for r in await db.fetch("SELECT * FROM commerce_pay_merchant WHERE tenant = $1",
                                                         tenant_id)],
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_no_globex(text: str) -> None:
    lowered = text.lower()
    for marker in GLOBEX_STRINGS:
        assert marker.lower() not in lowered, f"globex's {marker!r} leaked"


# --- routes with an object id in the URL --------------------------------------------------------------

# (method, URL template, which globex object the id names, form data). Every route of the app with an
# object id in its path is listed here or in ROUTES_WITHOUT_TENANT_OBJECT_IDS below, or the last test fails.
ID_ROUTES = [
    ("GET", "/settings/staff/{id}", "staff", None),
    ("POST", "/settings/staff/{id}", "staff",
     {"role": "agent", "name": "Taken over", "max_concurrent": "1", "is_active": ""}),
    ("POST", "/settings/invitations/{id}/revoke", "invitation", {}),
    ("POST", "/settings/teams/{id}/delete", "team", {}),
    ("POST", "/settings/api-keys/{id}/revoke", "api_key", {}),
    ("GET", "/settings/auto-replies/{id}", "auto_reply", None),
    ("POST", "/settings/auto-replies/{id}", "auto_reply", {"trigger": "keyword", "keyword": "x", "reply": "Taken over"}),
    ("POST", "/settings/auto-replies/{id}/toggle", "auto_reply", {"enabled": "0"}),
    ("POST", "/settings/auto-replies/{id}/delete", "auto_reply", {}),
    ("GET", "/contacts/{id}", "contact", None),
    ("POST", "/contacts/{id}/tags", "contact", {"name": "Taken over"}),
    ("POST", "/contacts/{id}/merge", "contact", {"other": "oSeedOther0001"}),
    ("POST", "/contacts/{id}/notes", "contact", {"text": "Taken over"}),
    ("POST", "/contacts/merges/{id}/undo", "merge", {}),
    ("GET", "/segments/{id}", "segment", None),
    ("POST", "/segments/{id}", "segment", {"name": "Taken over", "channels": ["oa"]}),
    ("GET", "/segments/{id}/count", "segment", None),
    ("GET", "/segments/{id}/delete", "segment", None),
    ("POST", "/segments/{id}/delete", "segment", {}),
    ("GET", "/inbox/conversations/{id}", "conversation", None),
    ("GET", "/inbox/conversations/{id}/live", "conversation", None),
    ("GET", "/inbox/conversations/{id}/messages?before=999999", "conversation", None),
    ("GET", "/inbox/conversations/{id}/row?box=all", "conversation", None),
    ("POST", "/inbox/conversations/{id}/reply", "conversation", {"text": "Taken over"}),
    ("POST", "/inbox/conversations/{id}/notice", "conversation", {"text": "Shipped"}),
    ("POST", "/inbox/conversations/{id}/wecom-task", "conversation", {"owner": "{owner}", "text": "Via WeCom"}),
    ("POST", "/inbox/conversations/{id}/take", "conversation", {}),
    ("POST", "/inbox/conversations/{id}/transfer", "conversation", {"to": "team:{team}"}),
    ("POST", "/inbox/conversations/{id}/resolve", "conversation", {}),
    ("POST", "/inbox/conversations/{id}/snooze", "conversation", {"until": "1h"}),
    ("POST", "/inbox/conversations/{id}/reopen", "resolved_conversation", {}),
    ("GET", "/inbox/canned/{id}", "canned", None),
    ("POST", "/inbox/canned/{id}", "canned", {"shortcut": "hi", "body": "Taken over"}),
    ("POST", "/inbox/canned/{id}/delete", "canned", {}),
    ("POST", "/products/{id}", "product", {"replenish_days": "30"}),
    ("GET", "/purchases/import/{id}", "purchase_import", None),
    ("GET", "/purchases/import/{id}/problems.csv", "purchase_import", None),
]


async def send(client: Client, method: str, url: str, data: dict[str, Any] | None, htmx: bool) -> Any:
    if method == "GET":
        return await (client.hx_get(url) if htmx else client.get(url))
    return await client.form(url, data, htmx=htmx)


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize(("method", "template", "kind", "data"), ID_ROUTES,
                         ids=[f"{m} {t}" for m, t, _, _ in ID_ROUTES])
async def test_another_tenants_id_answers_exactly_like_a_missing_id(
    acme_admin: Client, acme_seeded: Seeded, globex_seeded: Seeded, method: str, template: str, kind: str,
    data: dict[str, Any] | None, htmx: bool,
) -> None:
    globex_id = globex_seeded.object_id(kind)
    before = await tenant_state(globex_seeded.tenant.id)
    acme_before = await tenant_state(acme_seeded.tenant.id)

    data = with_own_ids(data, acme_seeded)
    foreign = await send(acme_admin, method, template.format(id=globex_id), data, htmx)
    missing = await send(acme_admin, method, template.format(id=MISSING_ID), data, htmx)

    assert foreign.status_code == 404, foreign.text
    assert missing.status_code == 404
    assert foreign.text == missing.text
    for header in ("content-type", "hx-retarget", "hx-reswap", "hx-trigger"):
        assert foreign.headers.get(header) == missing.headers.get(header)
    assert_no_globex(foreign.text)
    assert await tenant_state(globex_seeded.tenant.id) == before
    assert await tenant_state(acme_seeded.tenant.id) == acme_before


@pytest.mark.parametrize(("method", "template", "kind", "data"), ID_ROUTES,
                         ids=[f"{m} {t}" for m, t, _, _ in ID_ROUTES])
async def test_the_same_routes_work_on_the_tenants_own_ids(
    acme_admin: Client, acme_seeded: Seeded, method: str, template: str, kind: str, data: dict[str, Any] | None,
) -> None:
    """The control for the test above: the 404 comes from the tenant scope, not from a broken route."""
    own_id = acme_seeded.tenant.agent_id if kind == "staff" else acme_seeded.object_id(kind)
    r = await send(acme_admin, method, template.format(id=own_id), with_own_ids(data, acme_seeded), htmx=True)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", ["oa", "mp", "wecom"])
async def test_api_channel_of_another_tenant_answers_like_an_unlinked_one(
    client: Client, acme_seeded: Seeded, globex: TenantFixture, kind: str,
) -> None:
    url = f"/api/v1/channels/{kind}"
    # Acme links no mp/wecom; globex links nothing yet: this is what "missing" looks like.
    await ChannelAccount.delete().where(ChannelAccount.tenant == acme_seeded.tenant.id)
    missing = await client.get(url, headers=bearer(acme_seeded.api_key))
    globex_seeded = await seed(globex, "Globex", {"oa": GLOBEX_OA, "mp": GLOBEX_MP, "wecom": GLOBEX_WECOM})
    before = await tenant_state(globex.id)

    foreign = await client.get(url, headers=bearer(acme_seeded.api_key))
    assert missing.status_code == foreign.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.json()["status"] == 404
    assert_no_globex(foreign.text)
    assert await tenant_state(globex.id) == before
    # Control: globex's own key sees its account.
    own = await client.get(url, headers=bearer(globex_seeded.api_key))
    assert own.status_code == 200
    assert own.json()["kind"] == kind


@pytest.mark.parametrize("action", ["check", "unlink"])
@pytest.mark.parametrize("kind", ["mp", "wecom"])
async def test_channel_actions_reach_only_the_tenants_own_accounts(
    acme_admin: Client, acme_seeded: Seeded, globex: TenantFixture, kind: str, action: str,
) -> None:
    """/settings/channels/{kind}/… names an account by kind within the session's tenant: globex's
    linked account of that kind answers like acme's missing one."""
    url = f"/settings/channels/{kind}/{action}"
    missing = await acme_admin.form(url, htmx=True)
    await seed(globex, "Globex", {"oa": GLOBEX_OA, "mp": GLOBEX_MP, "wecom": GLOBEX_WECOM})
    before = await tenant_state(globex.id)

    foreign = await acme_admin.form(url, htmx=True)
    assert missing.status_code == foreign.status_code == 404
    assert foreign.text == missing.text
    assert_no_globex(foreign.text)
    assert await tenant_state(globex.id) == before


# --- ids inside form bodies ------------------------------------------------------------------------------

async def test_another_tenants_team_cannot_be_assigned(acme_admin: Client, acme_seeded: Seeded,
                                                       globex_seeded: Seeded) -> None:
    before = await tenant_state(globex_seeded.tenant.id)
    r = await acme_admin.form(f"/settings/staff/{acme_seeded.tenant.agent_id}", {
        "role": "agent", "name": "Agent", "max_concurrent": "5", "is_active": "1",
        "team_ids": [str(globex_seeded.team_id)]}, htmx=True)
    assert r.status_code == 400
    assert await TeamMember.count().where(TeamMember.team == globex_seeded.team_id) == 1  # globex's agent only
    assert await TeamMember.count().where(TeamMember.staff == acme_seeded.tenant.agent_id) == 1  # its Acme Team
    r = await acme_admin.form("/settings/staff/invite", {"email": "new@acme.test", "role": "agent",
                                                        "team_ids": [str(globex_seeded.team_id)]}, htmx=True)
    assert r.status_code == 400
    assert not await Invitation.exists().where(Invitation.email == "new@acme.test")
    assert await tenant_state(globex_seeded.tenant.id) == before


# --- pages and API answers without ids -----------------------------------------------------------------

# (URL, who asks, something of acme's that the answer must show: proves the page lists real data).
LIST_PAGES = [
    ("/settings/channels", "admin", OA["app_id"]),
    ("/settings/staff", "admin", "invitee@acme.test"),
    ("/settings/api-keys", "admin", "{prefix}"),
    ("/settings/audit", "admin", "{prefix}"),
    ("/settings/general", "admin", "Acme"),
    ("/workspace", "admin", "Acme"),
    ("/workspace", "agent", "Acme Team"),
    ("/api/v1/tenant", "api_key", OA["app_id"]),
    ("/segments", "agent", "Acme VIP segment"),
    ("/api/v1/segments", "api_key", "Acme VIP segment"),
    ("/purchases", "admin", "Acme-ORDER-1"),
    ("/purchases/export.csv", "admin", "Acme-ORDER-1"),
    ("/products", "admin", "ACME-SKU"),
    ("/api/v1/purchases", "api_key", "Acme-ORDER-1"),
    ("/settings/pay", "admin", "/wechat/acme/pay"),
]


@pytest.mark.parametrize(("url", "who", "own_marker"), LIST_PAGES, ids=[f"{u} as {w}" for u, w, _ in LIST_PAGES])
async def test_pages_never_show_another_tenants_data(
    client: Client, acme_admin: Client, acme_agent: Client, acme_seeded: Seeded, globex_seeded: Seeded,
    url: str, who: str, own_marker: str,
) -> None:
    if who == "api_key":
        r = await client.get(url, headers=bearer(acme_seeded.api_key))
    else:
        r = await (acme_admin if who == "admin" else acme_agent).get(url)
    assert r.status_code == 200, r.text
    assert own_marker.format(prefix=acme_seeded.api_key_prefix) in r.text
    assert_no_globex(r.text)
    assert globex_seeded.api_key_prefix not in r.text
    for other_id_link in (f"/settings/staff/{globex_seeded.tenant.admin_id}\"",
                          f"/settings/teams/{globex_seeded.team_id}/",
                          f"/settings/invitations/{globex_seeded.invitation_id}/",
                          f"/settings/api-keys/{globex_seeded.api_key_id}/"):
        assert other_id_link not in r.text


async def test_channels_page_steps_never_show_another_tenants_account(acme_admin: Client, acme_seeded: Seeded,
                                                                      globex_seeded: Seeded) -> None:
    for step in ("oa", "mp", "wecom"):
        r = await acme_admin.get(f"/settings/channels?step={step}")
        assert r.status_code == 200
        assert_no_globex(r.text)


# --- platform pages ---------------------------------------------------------------------------------------

PLATFORM_ROUTES = [
    ("GET", "/platform/tenants", None),
    ("POST", "/platform/tenants", {"slug": "evil", "name": "Evil", "admin_email": "evil@evil.test"}),
    ("GET", "/platform/tenants/{id}", None),
    ("GET", "/platform/tenants/{id}/suspend", None),
    ("POST", "/platform/tenants/{id}/status", {"status": "suspended", "confirm": "globex"}),
    ("POST", "/platform/tenants/{id}/invite-admin", {"email": "evil@evil.test"}),
]


@pytest.mark.parametrize("role", ["admin", "agent"])
@pytest.mark.parametrize(("method", "template", "data"), PLATFORM_ROUTES,
                         ids=[f"{m} {t}" for m, t, _ in PLATFORM_ROUTES])
async def test_platform_pages_refuse_tenant_staff(
    acme_admin: Client, acme_agent: Client, globex: TenantFixture, role: str, method: str, template: str,
    data: dict[str, Any] | None,
) -> None:
    client = acme_admin if role == "admin" else acme_agent
    before = await tenant_state(globex.id)
    tenants_before = await Tenant.select().order_by(Tenant.id)
    r = await send(client, method, template.format(id=globex.id), data, htmx=False)
    assert r.status_code == 403, r.text
    assert "CSRF" not in r.text
    assert_no_globex(r.text)
    assert await tenant_state(globex.id) == before
    assert await Tenant.select().order_by(Tenant.id) == tenants_before


@pytest.mark.parametrize(("method", "template", "data"), [r for r in PLATFORM_ROUTES if "{id}" in r[1]],
                         ids=[f"{m} {t}" for m, t, _ in PLATFORM_ROUTES if "{id}" in t])
async def test_platform_admin_gets_404_for_an_unknown_tenant(
    root: Client, globex: TenantFixture, method: str, template: str, data: dict[str, Any] | None,
) -> None:
    before = await tenant_state(globex.id)
    r = await send(root, method, template.format(id=MISSING_ID), data, htmx=False)
    assert r.status_code == 404, r.text
    assert await tenant_state(globex.id) == before
    assert not await Invitation.exists().where(Invitation.email == "evil@evil.test")
    # Control: the same request for a real tenant is accepted.
    ok = await send(root, method, template.format(id=globex.id), data, htmx=False)
    assert ok.status_code in (200, 302), ok.text


# --- every route with a path parameter is covered above --------------------------------------------------

ROUTES_WITHOUT_TENANT_OBJECT_IDS = {
    # The token is the credential (an invitation link); tests of invitations cover it.
    ("GET", "/invite/{token}"), ("POST", "/invite/{token}"),
    # Save/validate an account of the session's own tenant: they look nothing up by id.
    ("POST", "/settings/channels/{kind}"), ("POST", "/settings/channels/{kind}/validate"),
    ("GET", "/static/{file_path}"), ("HEAD", "/static/{file_path}"),
    # WeChat's callbacks name the tenant by slug and prove it with that tenant's signature;
    # tests/integration/wechat covers a callback signed for one tenant sent to another's URL.
    ("GET", "/wechat/{tenant}/{channel}"), ("POST", "/wechat/{tenant}/{channel}"),
}
COVERED = ({(m, t.split("?")[0].replace("{id}", "{}")) for m, t, _, _ in ID_ROUTES}
           | {(m, t.replace("{id}", "{}")) for m, t, _ in PLATFORM_ROUTES if "{id}" in t}
           | {("GET", "/api/v1/channels/{}"), ("POST", "/settings/channels/{}/check"),
              ("POST", "/settings/channels/{}/unlink")}
           # Two ids (contact, tag): tests/integration/contacts/test_pages.py crosses each of them.
           | {("POST", "/contacts/{}/tags/{}/delete")}
           # A bulk tagging action: tests/integration/contacts/test_bulk.py compares another tenant's with a
           # missing one.
           | {("GET", "/contacts/bulk/{}")}
           # Data-subject requests: tests/integration/contacts/test_privacy.py compares foreign and missing ids.
           | {("GET", "/contacts/{}/export"), ("POST", "/contacts/{}/erase")}
           # Two ids (conversation, message): tests/integration/inbox/test_send_outcomes.py crosses each of them.
           | {("POST", "/inbox/conversations/{}/messages/{}/send-again")}
           # Inbox settings: tests/integration/inbox/test_settings_page.py compares foreign and missing ids.
           | {("POST", "/settings/inbox/teams/{}"), ("POST", "/settings/inbox/people/{}")}
           # Bearer-key routes: tests/integration/contacts/test_api.py compares another tenant's contact with
           # a missing one, byte for byte.
           | {("GET", "/api/v1/contacts/{}"), ("GET", "/api/v1/contacts/{}/timeline"),
              ("GET", "/api/v1/contacts/{}/export"), ("POST", "/api/v1/contacts/{}/erase")}
           # tests/integration/segments/test_api.py compares another tenant's segment with a missing one, byte for byte.
           | {("GET", "/api/v1/segments/{}"), ("GET", "/api/v1/segments/{}/contacts")}
           # tests/integration/inbox/test_api.py compares another tenant's conversation with a missing one, byte
           # for byte.
           | {("GET", "/api/v1/conversations/{}")}
           # tests/integration/commerce/test_api.py compares another tenant's order with a missing one, byte for byte.
           | {("GET", "/api/v1/purchases/{}"), ("POST", "/api/v1/purchases/{}/refunds")}
           # Re-engagement: tests/integration/engagement/test_pages.py and test_api.py compare another tenant's
           # journey and broadcast with missing ones (pages and API).
           | {("GET", "/engagement/journeys/{}"), ("GET", "/engagement/journeys/{}/edit"),
              ("GET", "/engagement/journeys/{}/export"), ("POST", "/engagement/journeys/{}"),
              ("POST", "/engagement/journeys/{}/status"), ("GET", "/engagement/broadcasts/{}"),
              ("GET", "/engagement/broadcasts/tests/{}"), ("POST", "/engagement/broadcasts/{}/status"),
              ("GET", "/api/v1/journeys/{}"), ("PATCH", "/api/v1/journeys/{}"),
              ("GET", "/api/v1/journeys/{}/deliveries"), ("GET", "/api/v1/broadcasts/{}")}
           # Media and a rep's picture: tests/integration/inbox/test_media.py compares another tenant's
           # conversation, message and timeline event with missing ones.
           | {("GET", "/inbox/conversations/{}/messages/{}/media"), ("GET", "/contacts/{}/events/{}/media"),
              ("POST", "/inbox/conversations/{}/image")}
           # Linking: by channel kind within the signed-in tenant; tests/integration/tenants/test_linking.py shows
           # another tenant's admin answered 404 for an account only this tenant linked.
           | {("GET", "/settings/channels/{}/url-check"), ("POST", "/settings/channels/{}/reveal")})


def test_every_route_with_a_path_parameter_is_covered(app: Any) -> None:
    def normal(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path)

    exempt = {(m, normal(p)) for m, p in ROUTES_WITHOUT_TENANT_OBJECT_IDS}
    found = set()
    for route in app.routes:
        if "{" not in route.path or route.path.startswith("/schema"):
            continue
        for method in route.methods:
            if method != "OPTIONS":
                found.add((method, normal(route.path)))
    assert found - COVERED - exempt == set(), "a new route takes an id: add it to ID_ROUTES (or the exemptions)"
    assert found >= COVERED, "a covered route no longer exists: update the lists"
