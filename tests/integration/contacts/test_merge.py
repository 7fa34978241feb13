"""Manual merges and their undo: exact restoration, refusals, and nothing half-done."""

from __future__ import annotations

from datetime import timedelta

import pytest

from siyu.contacts import services as contacts
from siyu.contacts.tables import Contact
from siyu.core import db
from siyu.core.clock import now
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.tenants.services import Actor
from siyu.timeline import services as timeline
from tests.conftest import TenantFixture
from tests.integration.contacts.rows import live_contacts, state, table

AGENT = Actor(None, "agent@acme.test")
MARKERS = ("merged", "unmerged")


async def person(tenant_id: int, channel: str, external_id: str, days_ago: int, **profile: str) -> contacts.Resolved:
    """A contact with an identity, two events, a tag and (on WeCom) an owner."""
    at = now() - timedelta(days=days_ago)
    resolved = await contacts.resolve(tenant_id, channel, external_id, at=at)
    if profile:
        await Contact.update({getattr(Contact, k): v for k, v in profile.items()}).where(
            Contact.id == resolved.contact_id)
    for i, kind in enumerate(("followed", "message_in")):
        await timeline.append(tenant_id, None, kind, channel, at + timedelta(minutes=i), {"n": i},
                              f"{external_id}:{i}", identity_id=resolved.identity_id)
    await contacts.do_tag(tenant_id, resolved.contact_id, f"from-{channel}", AGENT)
    await contacts.do_tag(tenant_id, resolved.contact_id, "Shared", AGENT)
    if channel == "wecom":
        await contacts.record_owner_added(tenant_id, resolved.identity_id, "lisi", at, "booth")
    return resolved


async def test_manual_merge_moves_everything_and_unmerge_restores_exactly(acme: TenantFixture,
                                                                         globex: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oAlice", 10, display_name="Alice")
    b = await person(acme.id, "wecom", "wmAlice", 3, phone="13900000000", remark="met at the fair")
    await contacts.resolve(acme.id, "mp", "oBystander")  # a third contact nobody touches
    before = await state(acme.id)

    merge_id = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    survivor = await contacts.get_contact(acme.id, a.contact_id)
    assert (survivor["display_name"], survivor["phone"], survivor["remark"]) == ("Alice", "13900000000",
                                                                              "met at the fair")
    assert (await contacts.get_contact(acme.id, b.contact_id))["merged_into"] == a.contact_id
    assert {i["external_id"] for i in await contacts.identities_of(acme.id, a.contact_id)} == {"oAlice", "wmAlice"}
    assert await contacts.identities_of(acme.id, b.contact_id) == []
    assert sorted(t["name"] for t in await contacts.tags_of(acme.id, a.contact_id)) == ["Shared", "from-oa",
                                                                                      "from-wecom"]
    assert [o["staff_userid"] for o in await contacts.owners_of(acme.id, a.contact_id)] == ["lisi"]
    events = await timeline.page(acme.id, a.contact_id)
    assert len([e for e in events.events if e.kind not in MARKERS]) == 4
    [log] = await table("contact_merge", acme.id)
    assert (log["reason"], log["actor_label"], log["undone_at"]) == ("manual", "agent@acme.test", None)
    assert sorted(log["snapshot"]["identities"]) == [b.identity_id]
    assert len(log["snapshot"]["events"]) == 2 and len(log["snapshot"]["tags_dropped"]) == 1

    await contacts.do_unmerge(acme.id, merge_id, AGENT)
    assert await state(acme.id, without_kinds=MARKERS) == before
    [listed] = await contacts.list_merges(acme.id, b.contact_id)
    assert (listed["id"], listed["survivor"], listed["undone_by"]) == (merge_id, a.contact_id, "agent@acme.test")
    assert listed["undone_at"] is not None and await contacts.list_merges(globex.id, a.contact_id) == []
    unmerged = await timeline.page(acme.id, b.contact_id, kinds=["unmerged"])
    assert [e.source_key for e in unmerged.events] == [f"unmerge:{merge_id}:merged"]
    assert {a["action"] for a in await table("audit_log", acme.id)} >= {"contact.merged", "contact.unmerged"}


async def test_unmerge_takes_back_what_arrived_through_the_identities_since(acme: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oA", 5)
    b = await person(acme.id, "mp", "oB", 4)
    merge_id = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    # After the merge, oB writes again: the event lands on the survivor, through the identity.
    await timeline.append(acme.id, b.contact_id, "message_in", "mp", now(), {"Content": "again"}, "late",
                          identity_id=b.identity_id)
    assert "late" in [e.source_key for e in (await timeline.page(acme.id, a.contact_id)).events]
    await contacts.do_unmerge(acme.id, merge_id, AGENT)
    assert "late" in [e.source_key for e in (await timeline.page(acme.id, b.contact_id)).events]
    assert "late" not in [e.source_key for e in (await timeline.page(acme.id, a.contact_id)).events]


async def test_survivor_fields_edited_after_the_merge_are_kept_by_the_unmerge(acme: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oA", 5)
    b = await person(acme.id, "mp", "oB", 4, display_name="From B", phone="111")
    merge_id = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    await Contact.update({Contact.phone: "222"}).where(Contact.id == a.contact_id)  # an agent's later edit
    await contacts.do_unmerge(acme.id, merge_id, AGENT)
    survivor = await contacts.get_contact(acme.id, a.contact_id)
    assert (survivor["display_name"], survivor["phone"]) == ("", "222")
    restored = await contacts.get_contact(acme.id, b.contact_id)
    assert (restored["display_name"], restored["phone"], restored["merged_into"]) == ("From B", "111", None)


async def test_unmerging_twice_is_a_conflict(acme: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oA", 2)
    b = await person(acme.id, "mp", "oB", 1)
    merge_id = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    await contacts.do_unmerge(acme.id, merge_id, AGENT)
    after_first = await state(acme.id)
    with pytest.raises(Conflict):
        await contacts.do_unmerge(acme.id, merge_id, AGENT)
    assert await state(acme.id) == after_first


async def test_refusals_change_nothing(acme: TenantFixture, globex: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oA", 3)
    b = await person(acme.id, "mp", "oB", 2)
    c = await person(acme.id, "wecom", "wmC", 1)
    g = await person(globex.id, "oa", "oG", 1)
    before = await state(acme.id)

    with pytest.raises(InvalidInput) as itself:
        await contacts.do_merge(acme.id, a.contact_id, a.contact_id, "manual", AGENT)
    assert list(itself.value.by_field()) == ["merged_id"]
    with pytest.raises(InvalidInput) as reason:
        await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "hunch", AGENT)
    assert list(reason.value.by_field()) == ["reason"]
    for survivor, merged in ((a.contact_id, g.contact_id), (g.contact_id, a.contact_id), (a.contact_id, 987654)):
        with pytest.raises(NotFound):
            await contacts.do_merge(acme.id, survivor, merged, "manual", AGENT)
    assert await state(acme.id) == before

    merge_id = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    after = await state(acme.id)
    with pytest.raises(Conflict) as gone:
        await contacts.do_merge(acme.id, c.contact_id, b.contact_id, "manual", AGENT)
    assert gone.value.field == "merged_id"
    with pytest.raises(NotFound):
        await contacts.do_unmerge(globex.id, merge_id, AGENT)  # another tenant's merge
    with pytest.raises(NotFound):
        await contacts.do_unmerge(acme.id, 987654, AGENT)
    assert await state(acme.id) == after


async def test_merges_are_undone_last_first(acme: TenantFixture) -> None:
    a = await person(acme.id, "oa", "oA", 3)
    b = await person(acme.id, "mp", "oB", 2)
    c = await person(acme.id, "wecom", "wmC", 1)
    before = await state(acme.id)
    first = await contacts.do_merge(acme.id, b.contact_id, c.contact_id, "manual", AGENT)
    second = await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    assert {i["external_id"] for i in await contacts.identities_of(acme.id, a.contact_id)} == {"oA", "oB", "wmC"}
    with pytest.raises(Conflict):
        await contacts.do_unmerge(acme.id, first, AGENT)  # its survivor was merged away since
    await contacts.do_unmerge(acme.id, second, AGENT)
    await contacts.do_unmerge(acme.id, first, AGENT)
    assert await state(acme.id, without_kinds=MARKERS) == before


async def test_an_undone_unionid_merge_does_not_come_back(acme: TenantFixture) -> None:
    oa = await contacts.resolve(acme.id, "oa", "oOA")
    mp = await contacts.resolve(acme.id, "mp", "oMP")
    await contacts.resolve(acme.id, "oa", "oOA", unionid="uSplit")
    assert await contacts.resolve_identity(acme.id, "mp", "oMP", unionid="uSplit") == oa.contact_id
    [log] = await table("contact_merge", acme.id)
    await contacts.do_unmerge(acme.id, log["id"], AGENT)
    # The agent said these are two people: seeing the MP openid again keeps them apart.
    assert await contacts.resolve_identity(acme.id, "mp", "oMP", unionid="uSplit") == mp.contact_id
    assert len(await live_contacts(acme.id)) == 2
    assert len(await table("contact_merge", acme.id)) == 1
    holders = await db.fetch("SELECT id FROM contact WHERE unionid = 'uSplit' AND merged_into IS NULL")
    assert [h["id"] for h in holders] == [oa.contact_id]


async def test_many_contacts_locked_at_once_follow_their_merges(acme: TenantFixture, globex: TenantFixture) -> None:
    """`lock_live_many`: each contact's live id in one statement, a merged-away one followed to its survivor,
    another tenant's and a missing id left out; only inside a transaction."""
    from siyu.contacts.live import lock_live_many

    a = await contacts.resolve(acme.id, "oa", "oLiveA")
    b = await contacts.resolve(acme.id, "oa", "oLiveB")
    c = await contacts.resolve(acme.id, "oa", "oLiveC")
    theirs = await contacts.resolve(globex.id, "oa", "oTheirs")
    await contacts.do_merge(acme.id, a.contact_id, b.contact_id, "manual", AGENT)
    with pytest.raises(RuntimeError):
        await lock_live_many(acme.id, [a.contact_id])
    async with db.transaction():
        live = await lock_live_many(acme.id, [b.contact_id, a.contact_id, c.contact_id, theirs.contact_id, 999999],
                                    share=True)
    assert live == {a.contact_id: a.contact_id, b.contact_id: a.contact_id, c.contact_id: c.contact_id}
