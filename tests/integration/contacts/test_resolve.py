"""Identity resolution: first sight, repeat sight, unionid convergence, and races that must end with
exactly one contact per unionid."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from siyu.contacts import services as contacts
from siyu.contacts.tables import Contact
from siyu.core import db
from siyu.core.clock import now
from siyu.core.errors import InvalidInput, NotFound
from siyu.tenants.services import Actor
from siyu.timeline import services as timeline
from tests.conftest import TenantFixture
from tests.integration.contacts.rows import live_contacts, table

AGENT = Actor(None, "agent@acme.test")


async def test_first_sight_creates_a_contact_and_its_identity(acme: TenantFixture) -> None:
    at = now() - timedelta(minutes=5)
    resolved = await contacts.resolve(acme.id, "oa", "oFirst", at=at)
    assert resolved.created
    [contact] = await table("contact", acme.id)
    [identity] = await table("identity", acme.id)
    assert contact["id"] == resolved.contact_id and contact["first_seen_at"] == at
    assert contact["unionid"] is None and contact["merged_into"] is None
    assert (identity["contact"], identity["channel"], identity["external_id"]) == (contact["id"], "oa", "oFirst")
    assert identity["first_seen_at"] == identity["last_seen_at"] == at


async def test_the_same_identity_twice_is_the_same_contact(acme: TenantFixture) -> None:
    first = now() - timedelta(hours=1)
    a = await contacts.resolve(acme.id, "mp", "oMp1", at=first)
    b = await contacts.resolve(acme.id, "mp", "oMp1", at=first + timedelta(minutes=3))
    older = await contacts.resolve(acme.id, "mp", "oMp1", at=first - timedelta(minutes=3))  # late delivery
    assert a.contact_id == b.contact_id == older.contact_id and not b.created
    [identity] = await table("identity", acme.id)
    assert identity["first_seen_at"] == first and identity["last_seen_at"] == first + timedelta(minutes=3)
    assert len(await table("contact", acme.id)) == 1
    # The same openid on another channel is another identity (another app's openid space).
    c = await contacts.resolve(acme.id, "oa", "oMp1")
    assert c.contact_id != a.contact_id


async def test_concurrent_first_sights_of_one_identity_make_one_contact(acme: TenantFixture) -> None:
    results = await asyncio.gather(*(contacts.resolve_identity(acme.id, "oa", "oBurst") for _ in range(15)))
    assert len(set(results)) == 1
    assert len(await table("contact", acme.id)) == 1 and len(await table("identity", acme.id)) == 1


async def test_oa_and_mp_openids_with_one_unionid_converge(acme: TenantFixture) -> None:
    early = now() - timedelta(days=3)
    oa = await contacts.resolve(acme.id, "oa", "oOA", at=early)
    mp = await contacts.resolve(acme.id, "mp", "oMP", at=early + timedelta(days=1))
    wecom = await contacts.resolve(acme.id, "wecom", "wmW", at=early + timedelta(days=2))
    # Each contact has something of its own: profile fields, events, tags, an owner.
    await Contact.update({Contact.display_name: "小王", Contact.language: "zh_CN"}).where(Contact.id == oa.contact_id)
    await Contact.update({Contact.display_name: "Wang (MP)", Contact.phone: "13800000000"}).where(
        Contact.id == mp.contact_id)
    await timeline.append(acme.id, None, "followed", "oa", early, {"scene": "fair"}, "t:oa", identity_id=oa.identity_id)
    await timeline.append(acme.id, None, "message_in", "mp", early + timedelta(days=1), {"Content": "hi"}, "t:mp",
                          identity_id=mp.identity_id)
    await contacts.do_tag(acme.id, oa.contact_id, "VIP", AGENT)
    await contacts.do_tag(acme.id, mp.contact_id, "vip", AGENT)  # the same tag, differently cased
    await contacts.do_tag(acme.id, mp.contact_id, "Shanghai", AGENT)
    await contacts.record_owner_added(acme.id, wecom.identity_id, "zhangsan", early + timedelta(days=2), "fair")

    # The MP login tells the unionid first: nothing else has it, the MP contact simply takes it.
    assert await contacts.resolve_identity(acme.id, "mp", "oMP", unionid="uWang") == mp.contact_id
    # Then OA user info tells it for the OA openid: the two converge on the older contact.
    survivor = await contacts.resolve_identity(acme.id, "oa", "oOA", unionid="uWang")
    assert survivor == oa.contact_id
    # And WeCom externalcontact/get for the rep's customer.
    assert await contacts.resolve_identity(acme.id, "wecom", "wmW", unionid="uWang") == survivor

    [live] = await live_contacts(acme.id)
    assert live["id"] == survivor and live["unionid"] == "uWang"
    assert live["display_name"] == "小王" and live["phone"] == "13800000000"  # survivor's name, the other's phone
    assert live["first_seen_at"] == early
    identities = await contacts.identities_of(acme.id, survivor)
    assert {(i["channel"], i["external_id"]) for i in identities} == {("oa", "oOA"), ("mp", "oMP"), ("wecom", "wmW")}
    page = await timeline.page(acme.id, survivor, kinds=["followed", "message_in"])
    assert [e.source_key for e in page.events] == ["t:mp", "t:oa"]
    assert sorted(t["name"] for t in await contacts.tags_of(acme.id, survivor)) == ["Shanghai", "VIP"]
    assert [o["staff_userid"] for o in await contacts.owners_of(acme.id, survivor)] == ["zhangsan"]
    merges = await table("contact_merge", acme.id)
    assert [(m["survivor"], m["merged"], m["reason"]) for m in merges] == [
        (survivor, mp.contact_id, "unionid"), (survivor, wecom.contact_id, "unionid")]
    merged_rows = {c["id"]: c for c in await table("contact", acme.id)}
    assert merged_rows[mp.contact_id]["merged_into"] == survivor == merged_rows[wecom.contact_id]["merged_into"]
    # The merge is on the timeline and in the audit log.
    markers = await timeline.page(acme.id, survivor, kinds=["merged"])
    assert {e.payload["merged"] for e in markers.events} == {mp.contact_id, wecom.contact_id}
    assert {a["action"] for a in await table("audit_log", acme.id)} >= {"contact.merged"}

    # Seeing any of them again changes nothing.
    assert await contacts.resolve_identity(acme.id, "mp", "oMP") == survivor
    assert len(await table("contact_merge", acme.id)) == 2


async def test_a_new_identity_with_a_known_unionid_joins_its_contact(acme: TenantFixture) -> None:
    first = await contacts.resolve_identity(acme.id, "oa", "oKnown", unionid="uKnown")
    assert await contacts.resolve_identity(acme.id, "mp", "oNew", unionid="uKnown") == first
    assert len(await table("contact", acme.id)) == 1
    assert await table("contact_merge", acme.id) == []  # joined, not merged


async def test_a_stored_unionid_converges_on_a_later_sighting(acme: TenantFixture) -> None:
    """The unionid was stored on the identity, but its contact never got it (say the process died between
    the two steps): the next sighting finishes the convergence."""
    holder = await contacts.resolve_identity(acme.id, "oa", "oHolder", unionid="uLate")
    other = await contacts.resolve(acme.id, "mp", "oLate")
    await db.execute("UPDATE identity SET unionid = 'uLate' WHERE id = $1", other.identity_id)
    assert await contacts.resolve_identity(acme.id, "mp", "oLate") == min(holder, other.contact_id)
    assert len(await live_contacts(acme.id)) == 1


async def follow(contact_id: int) -> int:
    while True:
        row = await db.fetchrow("SELECT merged_into FROM contact WHERE id = $1", contact_id)
        if row["merged_into"] is None:
            return contact_id
        contact_id = row["merged_into"]


@pytest.mark.parametrize("rounds", [4])
async def test_racing_resolutions_of_one_unionid_end_with_one_contact(acme: TenantFixture, rounds: int) -> None:
    """20 identities across OA, MP and WeCom learn the same unionid at once, half of them already known
    (each with its own contact), half seen for the first time; on the real pool, several rounds."""
    for r in range(rounds):
        unionid = f"uRace{r}"
        idents = [(("oa", "mp", "wecom")[i % 3], f"race{r}-{i}") for i in range(20)]
        round_contact_ids = [await contacts.resolve_identity(acme.id, channel, external_id)
                             for channel, external_id in idents[::2]]
        results = await asyncio.gather(*(contacts.resolve_identity(acme.id, channel, external_id, unionid=unionid)
                                         for channel, external_id in idents))

        holders = await db.fetch("SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL",
                                 acme.id, unionid)
        assert len(holders) == 1, f"round {r}: {len(holders)} live contacts hold the unionid"
        survivor = holders[0]["id"]
        round_contact_ids += [r["id"] for r in await db.fetch(
            "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2", acme.id, unionid)]
        rows = await db.fetch(
            "SELECT i.external_id, i.unionid, i.contact FROM identity i WHERE i.tenant = $1 AND i.external_id LIKE $2",
            acme.id, f"race{r}-%")
        assert len(rows) == 20, "an identity was lost"
        assert {row["contact"] for row in rows} == {survivor}
        assert {row["unionid"] for row in rows} == {unionid}
        # Every answer was the survivor, or a contact since merged into it (possibly through another).
        for contact_id in set(results) | set(round_contact_ids):
            assert await follow(contact_id) == survivor
        # Every other contact of the round was merged away once, each merge logged for the unionid.
        merged_away = sorted(set(round_contact_ids) - {survivor})
        merges = await db.fetch("SELECT merged, reason FROM contact_merge WHERE tenant = $1 AND merged = ANY($2)",
                                acme.id, merged_away)
        assert sorted(m["merged"] for m in merges) == merged_away
        assert {m["reason"] for m in merges} == {"unionid"}
    assert len(await live_contacts(acme.id)) == rounds


async def test_two_contacts_learning_one_unionid_at_the_same_moment(acme: TenantFixture) -> None:
    """The issue's case, repeated: two jobs learn one unionid for two identities at the same moment."""
    for i in range(10):
        await contacts.resolve_identity(acme.id, "oa", f"pairOA{i}")
        await contacts.resolve_identity(acme.id, "mp", f"pairMP{i}")
        a, b = await asyncio.gather(contacts.resolve_identity(acme.id, "oa", f"pairOA{i}", unionid=f"uPair{i}"),
                                    contacts.resolve_identity(acme.id, "mp", f"pairMP{i}", unionid=f"uPair{i}"))
        live = await db.fetch("SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL",
                              acme.id, f"uPair{i}")
        assert len(live) == 1 and live[0]["id"] == min(a, b)
    assert len(await live_contacts(acme.id)) == 10


async def test_resolution_is_per_tenant(acme: TenantFixture, globex: TenantFixture) -> None:
    a = await contacts.resolve_identity(acme.id, "oa", "oShared", unionid="uShared")
    g = await contacts.resolve_identity(globex.id, "oa", "oShared", unionid="uShared")
    assert a != g
    assert (await contacts.get_contact(acme.id, a))["unionid"] == "uShared"
    with pytest.raises(NotFound):
        await contacts.get_contact(globex.id, a)
    assert await contacts.identities_of(globex.id, a) == []


async def test_bad_input_names_the_field(acme: TenantFixture) -> None:
    for kwargs, field in [({"channel": "sms", "external_id": "x"}, "channel"),
                          ({"channel": "oa", "external_id": ""}, "external_id"),
                          ({"channel": "oa", "external_id": "x" * 129}, "external_id"),
                          ({"channel": "oa", "external_id": "x", "unionid": ""}, "unionid")]:
        with pytest.raises(InvalidInput) as caught:
            await contacts.resolve_identity(acme.id, **kwargs)  # type: ignore[arg-type]
        assert list(caught.value.by_field()) == [field]
    assert await table("contact", acme.id) == []


async def test_nothing_lands_on_a_merged_away_contact_under_concurrent_writers(acme: TenantFixture) -> None:
    """While unionid merges run, other jobs append events through identities, tag contacts by (possibly
    stale) ids and record rep owners. Afterwards no identity, event, tag or owner points at a merged-away
    contact, and nothing was lost."""
    for r in range(4):
        idents = [(("oa", "mp", "wecom")[i % 3], f"mix{r}-{i}") for i in range(12)]
        known = [await contacts.resolve(acme.id, channel, external_id) for channel, external_id in idents]
        writers = []
        for i, (channel, external_id) in enumerate(idents):
            writers.append(contacts.resolve_identity(acme.id, channel, external_id, unionid=f"uMix{r}"))
            writers += [timeline.append(acme.id, None, "message_in", channel, now(), {"i": i}, f"mix{r}:{i}:{k}",
                                        identity_id=known[i].identity_id) for k in range(4)]
            writers.append(contacts.do_tag(acme.id, known[i].contact_id, f"t{i % 4}", AGENT))
            if channel == "wecom":
                writers.append(contacts.record_owner_added(acme.id, known[i].identity_id, f"rep{i}", now()))
        await asyncio.gather(*writers)

        stranded = await db.fetch(
            "SELECT 'identity' AS t, count(*) AS n FROM identity x JOIN contact c ON c.id = x.contact "
            "WHERE x.tenant = $1 AND c.merged_into IS NOT NULL UNION ALL "
            "SELECT 'event', count(*) FROM timeline_event x JOIN contact c ON c.id = x.contact "
            "WHERE x.tenant = $1 AND c.merged_into IS NOT NULL AND x.kind <> 'merged' UNION ALL "
            "SELECT 'tag', count(*) FROM contact_tag x JOIN contact c ON c.id = x.contact "
            "WHERE x.tenant = $1 AND c.merged_into IS NOT NULL UNION ALL "
            "SELECT 'owner', count(*) FROM owner x JOIN contact c ON c.id = x.contact "
            "WHERE x.tenant = $1 AND c.merged_into IS NOT NULL", acme.id)
        assert {row["t"]: row["n"] for row in stranded} == {"identity": 0, "event": 0, "tag": 0, "owner": 0}
        [survivor] = await db.fetch("SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL",
                                    acme.id, f"uMix{r}")
        survivor_id = survivor["id"]
        events = await db.fetch("SELECT contact FROM timeline_event WHERE tenant = $1 AND source_key LIKE $2",
                                acme.id, f"mix{r}:%")
        assert len(events) == 48 and {e["contact"] for e in events} == {survivor_id}
        assert sorted(t["name"] for t in await contacts.tags_of(acme.id, survivor_id)) == ["t0", "t1", "t2", "t3"]
        assert len(await contacts.owners_of(acme.id, survivor_id)) == 4
