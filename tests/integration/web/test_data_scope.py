"""A rep's data scope, everywhere a person is shown. Within one tenant (acme), a rep sees the people the
inbox shows them and the customers they added on WeCom; a team manager their teams'; a tenant admin
everyone. A person outside a rep's scope answers exactly like one that does not exist, on every route
that names a person (contacts, their timeline pages, tags, notes, merges, exports, conversations), and is
never listed (contact list, search, merge candidates, segment members).

The cast: `insider` (a rep of the North team) holds the conversation of the scoped person; `acme_agent`
(the tenant fixture's rep, in no team) is the outsider; `manager` manages the North team; the admin sees all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.contacts.tables import Contact, ContactMerge, ContactTag, Identity, Owner
from siyu.core import db
from siyu.inbox import actions as inbox_actions
from siyu.inbox.config import do_set_team_route
from siyu.inbox.conversations import viewer_for
from siyu.inbox.handoff import do_handoff
from siyu.inbox.tables import Conversation, Message
from siyu.segments import services as segments
from siyu.tenants import services as tenants
from siyu.tenants import staff as staff_svc
from siyu.tenants.tables import AuditLog
from siyu.timeline import services as timeline
from siyu.timeline.tables import TimelineEvent
from tests.conftest import PASSWORD, Client, TenantFixture, built_once, signed_in

ACTOR = tenants.Actor.cli()
MISSING_ID = 987654321
SECRET = "订单 4242 的收货地址"  # what the scoped person told the insider: no outsider may read it
NAME = "范围内的人 Scoped"


@dataclass
class Cast:
    tenant: TenantFixture
    team: int  # North: the insider's team, managed by the manager
    insider: int
    manager: int
    contact: int  # the scoped person: their OA conversation is assigned to the insider
    identity: int
    merged_away: int  # merged into `contact`
    merge: int
    tag: int
    conversation: int
    resolved_contact: int  # resolved by the insider
    resolved_conversation: int
    own_contact: int  # the outsider's own WeCom customer
    segment: int  # selects both the scoped person and the outsider's customer
    message: int = 0  # a line of the scoped person's conversation

    def object_id(self, kind: str) -> int:
        return {"contact": self.contact, "merged_away": self.merged_away, "merge": self.merge,
                "conversation": self.conversation, "resolved_conversation": self.resolved_conversation}[kind]


async def person(tenant_id: int, channel: str, external_id: str, name: str = "") -> tuple[int, int]:
    """(contact, identity) of someone who wrote in once."""
    r = await contacts.resolve(tenant_id, channel, external_id, at=datetime.now(UTC))
    if name:
        await db.execute("UPDATE contact SET display_name = $3 WHERE tenant = $1 AND id = $2", tenant_id,
                         r.contact_id, name)
    return r.contact_id, r.identity_id


async def rep(tenant_id: int, email: str, teams: tuple[int, ...] = (), wecom_userid: str | None = None) -> int:
    staff = await staff_svc.do_create_staff(ACTOR, tenant_id, email, "agent", PASSWORD, name=email.split("@")[0])
    if teams:
        await staff_svc.set_teams(tenant_id, staff.id, list(teams))
    if wecom_userid is not None:  # offline: nothing is routed to them by itself
        await inbox_actions.do_set_presence(tenant_id, staff.id, "offline", ACTOR, wecom_userid=wecom_userid)
    return int(staff.id)


async def owns(tenant_id: int, staff_id: int, contact_id: int, userid: str) -> None:
    """The rep added this person on WeCom (their UserID on their inbox profile, an owner row)."""
    await inbox_actions.do_set_presence(tenant_id, staff_id, "offline", ACTOR, wecom_userid=userid)
    identity = await db.fetchrow("SELECT min(id) AS id FROM identity WHERE tenant = $1 AND contact = $2",
                                 tenant_id, contact_id)
    await contacts.record_owner_added(tenant_id, int(identity["id"]), userid, datetime.now(UTC))


async def cast_for(t: TenantFixture) -> Cast:
    admin = await viewer_for(t.id, t.admin_id)
    team = await staff_svc.do_create_team(ACTOR, t.id, "North")
    insider = await rep(t.id, "insider@acme.test", (team,))
    manager = await rep(t.id, "manager@acme.test")
    await do_set_team_route(t.id, team, [], [], [], [manager], ACTOR)

    contact_id, identity_id = await person(t.id, "oa", "oScopedPerson01", NAME)
    await timeline.append(t.id, None, "message_in", "oa", datetime.now(UTC), {"Content": SECRET},
                          "test:scoped:1", identity_id=identity_id)
    merged_away, _ = await person(t.id, "mp", "oScopedMerged01")
    merge_id = await contacts.do_merge(t.id, contact_id, merged_away, "manual", ACTOR)
    await contacts.do_tag(t.id, contact_id, "VIP", ACTOR)
    tag = (await contacts.tags_of(t.id, contact_id))[0]["id"]
    conv = await do_handoff(t.id, identity_id)
    await inbox_actions.do_assign(t.id, admin, conv["id"], insider)

    resolved_contact, resolved_identity = await person(t.id, "oa", "oScopedResolv01", "已解决的人")
    done = await do_handoff(t.id, resolved_identity)
    await inbox_actions.do_assign(t.id, admin, done["id"], insider)
    await inbox_actions.do_resolve(t.id, await viewer_for(t.id, insider), done["id"])

    own_contact, _ = await person(t.id, "wecom", "wmOutsiderOwn01", "外部客户 Own")
    await owns(t.id, t.agent_id, own_contact, "outsiderrep")
    await contacts.do_tag(t.id, own_contact, "VIP", ACTOR)
    segment = await segments.do_create_segment(t.id, "VIPs", {"tags": {"ids": [tag], "match": "any"}}, ACTOR)
    message = await db.fetchrow(  # a reply that did not go out (send-again names one)
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at) VALUES ($1, $2, 'out', 'insider', 'text', $3, 'failed', 'test:scope:out', now()) "
        "RETURNING id", t.id, conv["id"], SECRET)
    return Cast(t, team, insider, manager, contact_id, identity_id, merged_away, merge_id, tag, int(conv["id"]),
                resolved_contact, int(done["id"]), own_contact, segment, int(message["id"]))


@pytest.fixture
async def cast(acme: TenantFixture) -> Cast:
    return await built_once("cast", lambda: cast_for(acme))


@pytest.fixture
async def insider(client_factory: Any, cast: Cast) -> Client:
    return await signed_in(client_factory, "insider@acme.test")


@pytest.fixture
async def manager(client_factory: Any, cast: Cast) -> Client:
    return await signed_in(client_factory, "manager@acme.test")


async def state(tenant_id: int) -> dict[str, Any]:
    """Every row a refused request could have touched."""
    return {
        "contacts": await Contact.select().where(Contact.tenant == tenant_id).order_by(Contact.id),
        "identities": await Identity.select().where(Identity.tenant == tenant_id).order_by(Identity.id),
        "tags": await ContactTag.select().where(ContactTag.tenant == tenant_id).order_by(ContactTag.id),
        "merges": await ContactMerge.select().where(ContactMerge.tenant == tenant_id).order_by(ContactMerge.id),
        "owners": await Owner.select().where(Owner.tenant == tenant_id).order_by(Owner.id),
        "events": await TimelineEvent.select().where(TimelineEvent.tenant == tenant_id).order_by(TimelineEvent.id),
        "conversations": await Conversation.select().where(Conversation.tenant == tenant_id).order_by(Conversation.id),
        "messages": await Message.select().where(Message.tenant == tenant_id).order_by(Message.id),
        "audit": await AuditLog.count(),
    }


def contact_links(text: str) -> set[int]:
    return {int(m) for m in re.findall(r'href="/contacts/(\d+)"', text)}


# --- every route naming a person ------------------------------------------------------------------------------

# (method, URL template, which object the id names, form data: "{own}" is the outsider's own customer, "{tag}"
# the scoped person's tag). Every route of the app with an id in its path is here or in SCOPE_EXEMPT below.
SCOPE_ROUTES = [
    ("GET", "/contacts/{id}", "contact", None),
    ("GET", "/contacts/{id}?channel=oa&kind=message_in", "contact", None),  # a filtered timeline
    ("GET", "/contacts/{id}?cursor=MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHwx", "contact", None),  # a timeline page
    ("GET", "/contacts/{id}", "merged_away", None),  # its page leads to the survivor
    ("POST", "/contacts/{id}/tags", "contact", {"name": "Taken over"}),
    ("POST", "/contacts/{id}/tags/{tag}/delete", "contact", {}),
    ("POST", "/contacts/{id}/merge", "contact", {"other": "{own}"}),
    ("POST", "/contacts/{id}/notes", "contact", {"text": "Taken over"}),
    ("GET", "/contacts/{id}/export", "contact", None),
    ("POST", "/contacts/{id}/erase", "contact", {"reason": "DSR-1"}),
    ("POST", "/contacts/merges/{id}/undo", "merge", {}),
    ("GET", "/inbox/conversations/{id}", "conversation", None),
    ("GET", "/inbox/conversations/{id}/live", "conversation", None),
    ("GET", "/inbox/conversations/{id}/messages?before=999999", "conversation", None),
    ("GET", "/inbox/conversations/{id}/row?box=mine", "conversation", None),
    ("POST", "/inbox/conversations/{id}/reply", "conversation", {"text": "Taken over"}),
    ("POST", "/inbox/conversations/{id}/notice", "conversation", {"text": "Shipped"}),
    ("POST", "/inbox/conversations/{id}/wecom-task", "conversation", {"owner": "1", "text": "Via WeCom"}),
    ("POST", "/inbox/conversations/{id}/take", "conversation", {}),
    ("POST", "/inbox/conversations/{id}/transfer", "conversation", {"to": "team:1"}),
    ("POST", "/inbox/conversations/{id}/resolve", "conversation", {}),
    ("POST", "/inbox/conversations/{id}/snooze", "conversation", {"until": "1h"}),
    ("POST", "/inbox/conversations/{id}/reopen", "resolved_conversation", {}),
    ("POST", "/inbox/conversations/{id}/messages/{msg}/send-again", "conversation", {}),
]
IDS = [f"{m} {t} ({k})" for m, t, k, _ in SCOPE_ROUTES]


def url(template: str, cast: Cast, object_id: int) -> str:
    return template.replace("{id}", str(object_id)).replace("{tag}", str(cast.tag)).replace("{msg}", str(cast.message))


def form(data: dict[str, Any] | None, cast: Cast) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: v.replace("{own}", str(cast.own_contact)) if isinstance(v, str) else v for k, v in data.items()}


async def send(client: Client, method: str, target: str, data: dict[str, Any] | None, htmx: bool) -> Any:
    if method == "GET":
        return await (client.hx_get(target) if htmx else client.get(target))
    return await client.form(target, data, htmx=htmx)


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize(("method", "template", "kind", "data"), SCOPE_ROUTES, ids=IDS)
async def test_a_person_outside_a_reps_scope_answers_exactly_like_a_missing_one(
    acme_agent: Client, cast: Cast, method: str, template: str, kind: str, data: dict[str, Any] | None, htmx: bool,
) -> None:
    before = await state(cast.tenant.id)
    outside = await send(acme_agent, method, url(template, cast, cast.object_id(kind)), form(data, cast), htmx)
    missing = await send(acme_agent, method, url(template, cast, MISSING_ID), form(data, cast), htmx)

    assert outside.status_code == 404, outside.text
    assert missing.status_code == 404
    assert outside.text == missing.text
    for header in ("content-type", "hx-retarget", "hx-reswap", "hx-trigger", "location", "hx-redirect"):
        assert outside.headers.get(header) == missing.headers.get(header)
    for secret in (SECRET, NAME, "oScopedPerson01", "insider"):
        assert secret not in outside.text
    assert await state(cast.tenant.id) == before


@pytest.mark.parametrize(("method", "template", "kind", "data"), SCOPE_ROUTES, ids=IDS)
async def test_the_same_routes_answer_the_rep_who_has_the_person(
    insider: Client, cast: Cast, method: str, template: str, kind: str, data: dict[str, Any] | None,
) -> None:
    """The control for the test above: the 404 comes from the scope, not from a broken route or data. (The
    insider may still be refused for other reasons: exports are for admins, a WeCom task needs an owner.)"""
    r = await send(insider, method, url(template, cast, cast.object_id(kind)), form(data, cast), htmx=True)
    assert r.status_code != 404, r.text
    assert r.status_code < 500


async def test_a_missing_id_answers_404_for_everyone_and_a_huge_one_too(acme_admin: Client, acme_agent: Client,
                                                                        cast: Cast) -> None:
    for client in (acme_admin, acme_agent):
        for contact_id in (MISSING_ID, 2**31, 10**12):
            for target in (f"/contacts/{contact_id}", f"/contacts/{contact_id}/export"):
                assert (await client.get(target)).status_code == 404, (target, client)
            r = await client.form(f"/contacts/{contact_id}/notes", {"text": "x"}, htmx=True)
            assert r.status_code == 404
        assert (await client.form(f"/contacts/merges/{2**31}/undo", {}, htmx=True)).status_code == 404


# --- lists and searches never show a person outside the scope --------------------------------------------------

async def test_the_contact_list_search_and_merge_candidates_show_only_the_reps_people(
    acme_agent: Client, insider: Client, cast: Cast,
) -> None:
    mine = await acme_agent.get("/contacts")
    assert mine.status_code == 200
    assert contact_links(mine.text) == {cast.own_contact}
    assert NAME not in mine.text and SECRET not in mine.text
    for q in ("范围内", "Scoped", "oScopedPerson", "oScopedMerged"):
        found = await acme_agent.hx_get("/contacts", params={"q": q})
        assert found.status_code == 200 and cast.contact not in contact_links(found.text), q
        picked = await acme_agent.hx_get("/contacts/pick", params={"q": q})
        assert picked.status_code == 200 and f'value="{cast.contact}"' not in picked.text, q
    # Merging the person into one's own customer: refused exactly like an id nobody has.
    before = await state(cast.tenant.id)
    for other, nobody in ((str(cast.contact), "987654"), ("oScopedPerson01", "oNobodyAtAll01")):
        refused = await acme_agent.form(f"/contacts/{cast.own_contact}/merge", {"other": other}, htmx=True)
        unknown = await acme_agent.form(f"/contacts/{cast.own_contact}/merge", {"other": nobody}, htmx=True)
        assert refused.status_code == unknown.status_code == 400
        assert "No contact matches" in refused.text
        assert refused.text.replace(f'value="{other}"', "") == unknown.text.replace(f'value="{nobody}"', "")
    assert await state(cast.tenant.id) == before

    # The rep who has the person finds them everywhere.
    theirs = await insider.get("/contacts")
    assert contact_links(theirs.text) == {cast.contact, cast.resolved_contact}
    found = await insider.hx_get("/contacts", params={"q": "Scoped"})
    assert cast.contact in contact_links(found.text)
    picked = await insider.hx_get("/contacts/pick", params={"q": "已解决"})
    assert f'value="{cast.resolved_contact}"' in picked.text


async def test_segment_members_show_only_the_reps_people_and_the_count_stays_the_audiences(
    acme_agent: Client, insider: Client, manager: Client, acme_admin: Client, cast: Cast,
) -> None:
    outsider_page = await acme_agent.get(f"/segments/{cast.segment}")
    insider_page = await insider.get(f"/segments/{cast.segment}")
    manager_page = await manager.get(f"/segments/{cast.segment}")
    admin_page = await acme_admin.get(f"/segments/{cast.segment}")
    assert outsider_page.status_code == insider_page.status_code == admin_page.status_code == 200
    assert contact_links(outsider_page.text) == {cast.own_contact}
    assert NAME not in outsider_page.text
    assert contact_links(insider_page.text) == {cast.contact}
    assert contact_links(manager_page.text) == {cast.contact}  # their team's person, not the outsider's customer
    assert contact_links(admin_page.text) == {cast.contact, cast.own_contact}
    assert "Only contacts you may see are shown." in outsider_page.text
    assert "Only contacts you may see are shown." not in admin_page.text
    # The live preview's examples too; the count is the audience's, for everyone.
    data = {"tags": [str(cast.tag)], "tags.match": "any"}
    preview = await acme_agent.form("/segments/preview", data, htmx=True)
    assert preview.status_code == 200
    assert contact_links(preview.text) == {cast.own_contact} and NAME not in preview.text
    assert '<strong>2</strong>' in preview.text
    count = await acme_agent.hx_get(f"/segments/{cast.segment}/count")
    assert count.status_code == 200 and ">2<" in count.text.replace(" ", "")


# --- who sees whom --------------------------------------------------------------------------------------------

async def sees(client: Client, contact_id: int) -> bool:
    r = await client.get(f"/contacts/{contact_id}")
    assert r.status_code in (200, 404), r.text
    listed = contact_id in contact_links((await client.get("/contacts")).text)
    assert listed == (r.status_code == 200), "the list and the page disagree"
    return r.status_code == 200


async def test_a_contact_in_scope_is_shown_whole_timeline_included(insider: Client, cast: Cast) -> None:
    """Deliberate: the person is the unit a rep serves. Their whole timeline shows, on every channel."""
    mp = await db.fetchrow("SELECT id FROM identity WHERE tenant = $1 AND external_id = 'oScopedMerged01'",
                           cast.tenant.id)
    await timeline.append(cast.tenant.id, None, "message_in", "mp", datetime.now(UTC), {"Content": "小程序里问的 SO77"},
                          "test:scoped:mp", identity_id=int(mp["id"]))
    page = await insider.get(f"/contacts/{cast.contact}")
    assert page.status_code == 200
    for shown in (SECRET, "SO77", "oScopedPerson01", "oScopedMerged01", "VIP"):
        assert shown in page.text, shown
    away = await insider.get(f"/contacts/{cast.merged_away}")
    assert away.status_code in (301, 302, 303, 307) and away.headers["location"] == f"/contacts/{cast.contact}"


async def test_the_rep_who_added_the_customer_on_wecom_sees_them_until_removed(
    acme_agent: Client, cast: Cast,
) -> None:
    t = cast.tenant
    assert not await sees(acme_agent, cast.contact)
    await owns(t.id, t.agent_id, cast.contact, "outsiderrep")
    assert await sees(acme_agent, cast.contact)
    wecom = await db.fetchrow("SELECT identity FROM owner WHERE tenant = $1 AND contact = $2", t.id, cast.contact)
    await contacts.record_owner_removed(t.id, int(wecom["identity"]), "outsiderrep", datetime.now(UTC))
    assert not await sees(acme_agent, cast.contact)
    # Another rep's WeCom customer stays theirs.
    await owns(t.id, cast.insider, cast.own_contact, "insiderrep")
    assert not await sees(acme_agent, cast.contact)


async def test_an_assigned_conversation_shows_its_person_and_a_transfer_moves_them(
    acme_agent: Client, insider: Client, cast: Cast,
) -> None:
    t = cast.tenant
    admin = await viewer_for(t.id, t.admin_id)
    assert await sees(insider, cast.contact) and not await sees(acme_agent, cast.contact)
    await inbox_actions.do_assign(t.id, admin, cast.conversation, t.agent_id)
    assert await sees(acme_agent, cast.contact) and not await sees(insider, cast.contact)


async def test_a_rep_keeps_the_people_whose_conversations_they_resolved(insider: Client, acme_agent: Client,
                                                                        cast: Cast) -> None:
    assert await sees(insider, cast.resolved_contact)
    assert not await sees(acme_agent, cast.resolved_contact)


async def test_a_waiting_conversation_shows_its_person_to_the_teams_that_serve_it(
    client_factory: Any, acme_agent: Client, insider: Client, cast: Cast,
) -> None:
    t = cast.tenant
    waiting, identity = await person(t.id, "oa", "oWaitingPerson1", "排队的人")
    conv = await do_handoff(t.id, identity)  # nobody online: it waits, for North (its route takes everything)
    assert await status_of(conv["id"]) == ("queued", [cast.team])
    assert await sees(insider, waiting)  # North's queue
    assert not await sees(acme_agent, waiting)  # in no team
    south = await staff_svc.do_create_team(ACTOR, t.id, "South")
    await rep(t.id, "south@acme.test", (south,))
    south_rep = await signed_in(client_factory, "south@acme.test")
    assert not await sees(south_rep, waiting)
    # Waiting for no team in particular (a brand without team routes): every rep may take it.
    await db.execute("UPDATE inbox_conversation SET teams = '{}' WHERE id = $1", conv["id"])
    assert await sees(acme_agent, waiting) and await sees(south_rep, waiting) and await sees(insider, waiting)


async def status_of(conversation_id: int) -> tuple[str, list[int]]:
    row = await db.fetchrow("SELECT status, teams FROM inbox_conversation WHERE id = $1", conversation_id)
    return row["status"], list(row["teams"])


async def test_a_manager_sees_their_teams_people_and_an_admin_everyone(
    manager: Client, acme_admin: Client, acme_agent: Client, cast: Cast,
) -> None:
    # The scoped person's conversation is the insider's, a member of the North team the manager manages.
    assert await sees(manager, cast.contact)
    away = await manager.get(f"/contacts/{cast.merged_away}")
    assert away.status_code in (301, 302, 303, 307)
    assert not await sees(manager, cast.own_contact)  # the outsider's WeCom customer: no team of theirs
    assert cast.contact in contact_links((await manager.hx_get("/contacts", params={"q": "Scoped"})).text)
    assert contact_links((await manager.hx_get("/contacts", params={"q": "外部客户"})).text) == set()
    for contact_id in (cast.contact, cast.resolved_contact, cast.own_contact):
        assert await sees(acme_admin, contact_id)
    # A conversation with the bot (never handed to a human) shows its person to no rep.
    bot_contact, _ = await person(cast.tenant.id, "oa", "oBotOnlyPerson1", "只和机器人聊过")
    await db.execute("INSERT INTO inbox_conversation (tenant, identity, channel, status, created_at, updated_at) "
                     "SELECT tenant, id, channel, 'bot', now(), now() FROM identity WHERE contact = $1", bot_contact)
    assert not await sees(acme_agent, bot_contact) and not await sees(manager, bot_contact)
    assert await sees(acme_admin, bot_contact)


# --- every route with an id is covered -------------------------------------------------------------------------

SCOPE_EXEMPT = {
    # Not a person, or the person is checked inside: segments are tenant-wide definitions; their member
    # lists and previews are scoped (test above). Canned replies are text (tests/integration/inbox).
    ("GET", "/segments/{}"), ("POST", "/segments/{}"), ("GET", "/segments/{}/count"), ("GET", "/segments/{}/delete"),
    ("POST", "/segments/{}/delete"), ("GET", "/inbox/canned/{}"), ("POST", "/inbox/canned/{}"),
    ("POST", "/inbox/canned/{}/delete"),
    # Tenant admins only: a rep is refused (403) before any id is read (test below); admins see everyone.
    ("GET", "/settings/staff/{}"), ("POST", "/settings/staff/{}"), ("POST", "/settings/invitations/{}/revoke"),
    ("POST", "/settings/teams/{}/delete"), ("POST", "/settings/api-keys/{}/revoke"),
    ("POST", "/settings/auto-replies/{}/toggle"), ("POST", "/settings/auto-replies/{}/delete"),
    ("GET", "/settings/auto-replies/{}"), ("POST", "/settings/auto-replies/{}"),
    ("POST", "/settings/inbox/teams/{}"), ("POST", "/settings/inbox/people/{}"),
    ("POST", "/settings/channels/{}"), ("POST", "/settings/channels/{}/validate"),
    ("POST", "/settings/channels/{}/check"), ("POST", "/settings/channels/{}/unlink"),
    # Platform admins only (tests/integration/web/test_cross_tenant.py).
    ("GET", "/platform/tenants/{}"), ("POST", "/platform/tenants/{}/status"), ("GET", "/platform/tenants/{}/suspend"),
    ("POST", "/platform/tenants/{}/invite-admin"),
    # Products are the brand's catalogue, kept by tenant admins (a rep is refused before the id is read).
    ("POST", "/products/{}"),
    # History imports are tenant admins' too (tests/integration/commerce/test_import.py refuses a rep).
    ("GET", "/purchases/import/{}"), ("GET", "/purchases/import/{}/problems.csv"),
    # Re-engagement is run by tenant admins (the controller's guard; tests/integration/engagement/test_pages.py
    # shows a rep refused); journeys and broadcasts are tenant-wide, their audiences computed by segments.
    ("GET", "/engagement/journeys/{}"), ("GET", "/engagement/journeys/{}/edit"),
    ("GET", "/engagement/journeys/{}/export"), ("POST", "/engagement/journeys/{}"),
    ("POST", "/engagement/journeys/{}/status"), ("GET", "/engagement/broadcasts/{}"),
    ("GET", "/engagement/broadcasts/tests/{}"), ("POST", "/engagement/broadcasts/{}/status"),
    # Linking WeChat accounts: tenant admins only, by channel kind (tests/integration/tenants/test_linking.py).
    ("GET", "/settings/channels/{}/url-check"), ("POST", "/settings/channels/{}/reveal"),
    # The JSON API: an API key acts for the whole tenant, no rep behind it (tenant isolation is tested there).
    ("GET", "/api/v1/contacts/{}"), ("GET", "/api/v1/contacts/{}/timeline"), ("GET", "/api/v1/contacts/{}/export"),
    ("POST", "/api/v1/contacts/{}/erase"), ("GET", "/api/v1/segments/{}"), ("GET", "/api/v1/segments/{}/contacts"),
    ("GET", "/api/v1/conversations/{}"), ("GET", "/api/v1/channels/{}"),
    # A bulk tagging action (not a person): its starter and the brand's admins see it, anyone else gets a 404
    # (tests/integration/contacts/test_bulk.py); the contacts it reaches are scoped when it runs (same file).
    ("GET", "/contacts/bulk/{}"),
    ("GET", "/api/v1/conversations/{}"), ("GET", "/api/v1/channels/{}"), ("GET", "/api/v1/purchases/{}"),
    ("POST", "/api/v1/purchases/{}/refunds"), ("GET", "/api/v1/journeys/{}"), ("PATCH", "/api/v1/journeys/{}"),
    ("GET", "/api/v1/journeys/{}/deliveries"), ("GET", "/api/v1/broadcasts/{}"),
    # Media: served behind the conversation's or the contact's own scoped lookup; tests/integration/inbox/
    # test_media.py shows a rep not shown the conversation, and another tenant, answered like a missing id.
    ("GET", "/inbox/conversations/{}/messages/{}/media"), ("GET", "/contacts/{}/events/{}/media"),
    ("POST", "/inbox/conversations/{}/image"),
    # No object of a tenant: an invitation's token, static files, WeChat's callbacks.
    ("GET", "/invite/{}"), ("POST", "/invite/{}"), ("GET", "/static/{}"), ("HEAD", "/static/{}"),
    ("GET", "/wechat/{}/{}"), ("POST", "/wechat/{}/{}"),
    # (WeChat Pay's notifications are answered before the router: siyu.commerce.notify.PayEndpoint.)
}
ADMIN_ONLY = [(m, p) for m, p in sorted(SCOPE_EXEMPT) if p.startswith("/settings/")]


def normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])


def test_every_route_with_an_id_is_in_the_scope_matrix_or_exempt_for_a_reason(app: Any) -> None:
    found = {(method, normal(route.path)) for route in app.routes
             if "{" in route.path and not route.path.startswith("/schema")
             for method in route.methods if method != "OPTIONS"}
    covered = {(m, normal(t)) for m, t, _, _ in SCOPE_ROUTES}
    assert found - covered - SCOPE_EXEMPT == set(), "a new route takes an id: add it to SCOPE_ROUTES (or exempt it)"
    assert (covered | SCOPE_EXEMPT) <= found, "a listed route no longer exists: update the lists"


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY, ids=[f"{m} {p}" for m, p in ADMIN_ONLY])
async def test_admin_only_routes_refuse_a_rep_whatever_the_id(acme_agent: Client, cast: Cast, method: str,
                                                              path: str) -> None:
    real = str(cast.team) if "teams" in path else ("oa" if "channels" in path else str(cast.insider))
    before = await state(cast.tenant.id)
    answers = [await send(acme_agent, method, path.replace("{}", value), {}, htmx=True)
               for value in (real, str(MISSING_ID) if real.isdigit() else "wecom")]
    assert answers[0].status_code == answers[1].status_code == 403
    assert answers[0].text == answers[1].text
    assert await state(cast.tenant.id) == before
