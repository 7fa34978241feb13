"""Saving segments (create, change, delete: audited, names unique per tenant), reading them within the tenant
only, and streaming their members: count equals the members, keyset pages are complete and never overlap."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.core import db
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.segments import services as svc
from siyu.tenants.services import Actor
from tests.conftest import TenantFixture
from tests.integration.contacts.rows import table
from tests.integration.segments.people import Person, crowd, person, tag

ACTOR = Actor(None, "admin@acme.test")


async def segments_of(tenant_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT id, name, description, definition::text AS definition "
                                            "FROM segment WHERE tenant = $1 ORDER BY id", tenant_id)]


async def actions(tenant_id: int) -> list[tuple[str, str]]:
    return [(a["action"], a["target_id"]) for a in await table("audit_log", tenant_id)
            if a["action"].startswith("segment.")]


# --- saving ----------------------------------------------------------------------------------------------

async def test_create_read_and_list(acme: TenantFixture) -> None:
    vip = await tag(acme.id, "VIP")
    raw = {"tags": {"ids": [vip], "match": "any"}, "channels": ["oa"], "last_purchase": {"op": "within", "days": 90}}
    sid = await svc.do_create_segment(acme.id, "  VIP   buyers ", raw, ACTOR, description="Bought this quarter")
    seg = await svc.get_segment(acme.id, sid)
    assert (seg.name, seg.description, seg.created_by) == ("VIP buyers", "Bought this quarter", "admin@acme.test")
    assert seg.definition.as_json()["tags"] == {"ids": [vip], "match": "any"}
    assert seg.definition.as_json()["last_purchase"] == {"op": "within", "days": 90}
    other = await svc.do_create_segment(acme.id, "all reps' customers", {"owner": {"op": "any"}}, ACTOR)
    assert [s.id for s in await svc.list_segments(acme.id)] == [other, sid]  # by name, case-insensitively
    assert await actions(acme.id) == [("segment.created", str(sid)), ("segment.created", str(other))]
    [audit] = [a for a in await table("audit_log", acme.id) if a["action"] == "segment.created" and a["target_id"] == str(sid)]
    assert audit["changes"]["name"] == "VIP buyers" and audit["changes"]["definition"] == seg.definition.as_json()


async def test_names_are_unique_per_tenant_ignoring_case(acme: TenantFixture, globex: TenantFixture) -> None:
    await svc.do_create_segment(acme.id, "Lapsed", {}, ACTOR)
    for name in ("lapsed", " LAPSED "):
        with pytest.raises(InvalidInput) as exc:
            await svc.do_create_segment(acme.id, name, {}, ACTOR)
        assert list(exc.value.by_field()) == ["name"]
    await svc.do_create_segment(globex.id, "Lapsed", {}, ACTOR)  # another tenant's names are its own
    assert len(await segments_of(acme.id)) == len(await segments_of(globex.id)) == 1


@pytest.mark.parametrize(("name", "description", "raw", "field"), [
    ("", "", {}, "name"),
    ("   ", "", {}, "name"),
    ("x" * 81, "", {}, "name"),
    ("ok", "y" * 501, {}, "description"),
    ("ok", "", {"channels": ["sms"]}, "channels"),
    ("ok", "", {"tags": {"ids": [987654], "match": "any"}}, "tags"),
    ("ok", "", {"last_purchase": {"op": "within"}}, "last_purchase.days"),
])
async def test_invalid_input_names_the_field_and_stores_nothing(acme: TenantFixture, name: str,
                                                                description: str, raw: dict[str, Any],
                                                                field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        await svc.do_create_segment(acme.id, name, raw, ACTOR, description)
    assert field in exc.value.by_field()
    assert await segments_of(acme.id) == [] and await actions(acme.id) == []


async def test_update_records_what_changed(acme: TenantFixture) -> None:
    sid = await svc.do_create_segment(acme.id, "Recent", {"last_interaction": {"op": "within", "days": 7}}, ACTOR)
    taken = await svc.do_create_segment(acme.id, "Taken", {}, ACTOR)
    seg = await svc.do_update_segment(acme.id, sid, "Recent buyers",
                                      {"last_purchase": {"op": "within", "days": 7}}, ACTOR)
    assert seg.name == "Recent buyers" and seg.definition.last_interaction is None
    assert seg.updated_at > seg.created_at
    [change] = [a for a in await table("audit_log", acme.id) if a["action"] == "segment.updated"]
    assert change["changes"]["name"] == ["Recent", "Recent buyers"]
    assert change["changes"]["definition"][1]["last_purchase"] == {"op": "within", "days": 7}
    assert "description" not in change["changes"]
    # Saving the same again changes nothing and records nothing.
    await svc.do_update_segment(acme.id, sid, "Recent buyers", {"last_purchase": {"op": "within", "days": 7}}, ACTOR)
    assert [a for a, _ in await actions(acme.id)].count("segment.updated") == 1
    # Its own name in another case is fine; another segment's name is not.
    await svc.do_update_segment(acme.id, sid, "RECENT buyers", seg.definition, ACTOR)
    with pytest.raises(InvalidInput) as exc:
        await svc.do_update_segment(acme.id, sid, "taken", {}, ACTOR)
    assert list(exc.value.by_field()) == ["name"]
    assert (await svc.get_segment(acme.id, taken)).name == "Taken"


async def test_delete_is_audited_and_final(acme: TenantFixture) -> None:
    sid = await svc.do_create_segment(acme.id, "Old", {"channels": ["mp"]}, ACTOR)
    await svc.do_delete_segment(acme.id, sid, ACTOR)
    with pytest.raises(NotFound):
        await svc.get_segment(acme.id, sid)
    with pytest.raises(NotFound):
        await svc.do_delete_segment(acme.id, sid, ACTOR)
    assert await actions(acme.id) == [("segment.created", str(sid)), ("segment.deleted", str(sid))]
    [deleted] = [a for a in await table("audit_log", acme.id) if a["action"] == "segment.deleted"]
    assert deleted["changes"]["name"] == "Old" and deleted["changes"]["definition"]["channels"] == ["mp"]


async def test_another_tenants_segment_is_not_found(acme: TenantFixture, globex: TenantFixture) -> None:
    theirs = await svc.do_create_segment(globex.id, "Globex VIPs", {}, ACTOR)
    before = await segments_of(globex.id)
    for call in (svc.get_segment(acme.id, theirs), svc.members(acme.id, theirs),
                 svc.do_update_segment(acme.id, theirs, "Mine now", {}, ACTOR),
                 svc.do_delete_segment(acme.id, theirs, ACTOR),
                 svc.get_segment(acme.id, 987654321), svc.get_segment(acme.id, 2**40)):
        with pytest.raises(NotFound):
            await call
    assert await segments_of(globex.id) == before
    assert await actions(acme.id) == []


# --- members -----------------------------------------------------------------------------------------------

async def test_count_equals_the_members(acme: TenantFixture, globex: TenantFixture) -> None:
    vip = await tag(acme.id, "VIP")
    on_oa = await crowd(acme.id, 12, "oa", channels={"oa": False}, interacted=3)
    await crowd(acme.id, 5, "vip", channels={"mp": False}, tags=[vip])
    await crowd(acme.id, 3, "gone", channels={"oa": False}, erased=True)
    await crowd(acme.id, 2, "merged", channels={"oa": False}, merged_into=on_oa[0])
    await crowd(globex.id, 7, "theirs", channels={"oa": False})
    cases = (({}, 17), ({"channels": ["oa"]}, 12), ({"tags": {"ids": [vip], "match": "any"}}, 5),
             ({"include_erased": True}, 20), ({"last_interaction": {"op": "never"}}, 5))
    for n, (raw, expected) in enumerate(cases):
        sid = await svc.do_create_segment(acme.id, f"segment {n}", raw, ACTOR)
        segment = await svc.get_segment(acme.id, sid)
        members = await svc.members(acme.id, sid, limit=svc.MAX_PAGE)
        assert await svc.count(acme.id, segment.definition) == len(members.contacts) == expected, raw


@pytest.mark.parametrize("n", [23, 20])  # a last page that is partly full, and one that is exactly full
async def test_keyset_pages_are_complete_and_never_overlap(acme: TenantFixture, n: int) -> None:
    wanted = await crowd(acme.id, n, "in", channels={"mp": False})
    await crowd(acme.id, 6, "out", channels={"oa": False})  # interleaved ids that must be skipped
    wanted += await crowd(acme.id, 4, "late", channels={"mp": False})
    sid = await svc.do_create_segment(acme.id, "MP", {"channels": ["mp"]}, ACTOR)
    seen: list[int] = []
    pages = 0
    after = None
    while True:
        page = await svc.members(acme.id, sid, after_id=after, limit=5)
        pages += 1
        assert len(page.contacts) <= 5
        seen += [c["id"] for c in page.contacts]
        if page.next_after is None:
            break
        assert page.next_after == page.contacts[-1]["id"]
        after = page.next_after
    assert seen == sorted(wanted)
    assert len(set(seen)) == len(seen)
    assert pages == -(-(n + 4) // 5)  # no empty trailing page


async def test_a_pass_sees_each_contact_once_while_contacts_change(acme: TenantFixture) -> None:
    first = await crowd(acme.id, 6, "a", channels={"oa": False})
    sid = await svc.do_create_segment(acme.id, "OA", {"channels": ["oa"]}, ACTOR)
    page = await svc.members(acme.id, sid, limit=3)
    assert [c["id"] for c in page.contacts] == first[:3]
    # Meanwhile: one already streamed leaves, one not yet streamed is merged away, a newcomer arrives.
    await db.execute("UPDATE contact SET erased_at = now() WHERE id = $1", first[0])
    await db.execute("UPDATE contact SET merged_into = $2 WHERE id = $1", first[4], first[1])
    newcomer = await person(acme.id, Person(channels={"oa": False}), "newcomer")
    rest = await svc.members(acme.id, sid, after_id=page.next_after, limit=10)
    assert [c["id"] for c in rest.contacts] == [first[3], first[5], newcomer]
    assert rest.next_after is None


@pytest.mark.parametrize("limit", [0, -1, svc.MAX_PAGE + 1])
async def test_page_size_is_bounded(acme: TenantFixture, limit: int) -> None:
    sid = await svc.do_create_segment(acme.id, "All", {}, ACTOR)
    with pytest.raises(InvalidInput) as exc:
        await svc.members(acme.id, sid, limit=limit)
    assert list(exc.value.by_field()) == ["limit"]


async def test_known_owners_are_the_reps_with_live_customers(acme: TenantFixture, globex: TenantFixture) -> None:
    await crowd(acme.id, 2, "r1", channels={"wecom": False}, owners={"rep1": False})
    await crowd(acme.id, 1, "r2", channels={"wecom": False}, owners={"rep2": True})  # removed
    await crowd(globex.id, 1, "g", channels={"wecom": False}, owners={"globex-rep": False})
    assert await svc.known_owners(acme.id) == [{"userid": "rep1", "contacts": 2}]


async def test_a_count_that_takes_too_long_is_refused_not_left_running(acme: TenantFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Live counts run as people edit filters: one stuck behind a lock (or a huge scan) gives up."""
    import asyncpg

    await crowd(acme.id, 3, "c", channels={"oa": False})
    monkeypatch.setattr(svc, "COUNT_TIMEOUT_MS", 200)
    blocker = await asyncpg.connect(db.engine().config["dsn"])
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE contact IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(Conflict):
            await svc.count(acme.id, {})
        await tx.rollback()
    finally:
        await blocker.close()
    assert await svc.count(acme.id, {}) == 3
    # The timeout was local to the count's own transaction.
    assert (await db.fetchrow("SHOW statement_timeout"))["statement_timeout"] == "0"


@pytest.mark.parametrize(("statement", "error"), [
    ("INSERT INTO segment (tenant, name, description, definition, created_by, created_at, updated_at) "
     "VALUES ($1, '  ', '', '{}'::jsonb, '', now(), now())", "CheckViolationError"),
    ("INSERT INTO segment (tenant, name, description, definition, created_by, created_at, updated_at) "
     "VALUES ($1, 'x', '', '[]'::jsonb, '', now(), now())", "CheckViolationError"),
    ("INSERT INTO segment (tenant, name, description, definition, created_by, created_at, updated_at) "
     "VALUES ($1, 'x', repeat('d', 501), '{}'::jsonb, '', now(), now())", "CheckViolationError"),
    ("INSERT INTO segment (tenant, name, description, definition, created_by, created_at, updated_at) "
     "VALUES ($1, 'EXISTING', '', '{}'::jsonb, '', now(), now())", "UniqueViolationError"),
])
async def test_the_database_keeps_the_rules_too(acme: TenantFixture, statement: str, error: str) -> None:
    await svc.do_create_segment(acme.id, "existing", {}, ACTOR)
    with pytest.raises(Exception) as exc:
        await db.execute(statement, acme.id)
    assert type(exc.value).__name__ == error
