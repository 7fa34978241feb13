"""Routing: owner → recent → least-loaded → round-robin; teams; capacity; the queue and its drain; the SLA;
and 50 handoffs against 10 reps at once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from siyu.contacts import services as contacts
from siyu.core import db
from siyu.inbox import actions, routing
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_set_team_route, do_update_settings
from siyu.inbox.handoff import do_handoff
from siyu.tenants import staff as staff_svc
from tests.conftest import TenantFixture
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep, assignee_of, status_of, viewer


async def test_least_loaded_then_round_robin_among_equals(acme: TenantFixture, make_rep: MakeRep,
                                                          make_person: MakePerson) -> None:
    a, b = await make_rep("A"), await make_rep("B")
    got = []
    for _ in range(4):
        identity, _ = await make_person()
        got.append((await do_handoff(acme.id, identity))["assignee"])
    # Equal loads: the one who waited longest since an assignment; then the less loaded one; alternating.
    assert sorted(got[:2]) == sorted([a, b]) and got[2:] == got[:2]
    loads = {s: got.count(s) for s in (a, b)}
    assert loads == {a: 2, b: 2}


async def test_the_owner_gets_their_customer_even_when_busier(acme: TenantFixture, make_rep: MakeRep,
                                                               make_person: MakePerson) -> None:
    owner = await make_rep("Owner", wecom_userid="li.na")
    other = await make_rep("Other")
    for _ in range(3):  # the owner is busier
        identity, _ = await make_person()
        await actions.do_assign(acme.id, await viewer(acme.id, acme.admin_id), (await do_handoff(acme.id, identity))["id"],
                                owner)
    identity, contact = await make_person()
    wecom = await contacts.resolve(acme.id, "wecom", "wmCustomer0001", at=datetime.now(UTC))
    await contacts.do_merge(acme.id, contact, wecom.contact_id, "manual", ACTOR)
    await contacts.record_owner_added(acme.id, wecom.identity_id, "li.na", datetime.now(UTC))
    conv = await do_handoff(acme.id, identity)
    assert conv["assignee"] == owner
    rule = await db.fetchrow("SELECT rule FROM inbox_assignment WHERE conversation = $1", conv["id"])
    assert rule["rule"] == "owner"
    # An owner at capacity is skipped: the next preference applies.
    await db.execute("UPDATE staff SET max_concurrent = 4 WHERE id = $1", owner)
    identity2, contact2 = await make_person()
    wecom2 = await contacts.resolve(acme.id, "wecom", "wmCustomer0002", at=datetime.now(UTC))
    await contacts.do_merge(acme.id, contact2, wecom2.contact_id, "manual", ACTOR)
    await contacts.record_owner_added(acme.id, wecom2.identity_id, "li.na", datetime.now(UTC))
    assert (await do_handoff(acme.id, identity2))["assignee"] == other


async def test_the_rep_who_served_the_contact_last_comes_next(acme: TenantFixture, make_rep: MakeRep,
                                                              make_person: MakePerson) -> None:
    a, b = await make_rep("A"), await make_rep("B")
    identity, _ = await make_person()
    first = await do_handoff(acme.id, identity)
    served = first["assignee"]
    await actions.do_resolve(acme.id, await viewer(acme.id, served), first["id"])
    # Load the same rep more, so least-loaded alone would pick the other one.
    for _ in range(2):
        other_identity, _ = await make_person()
        c = await do_handoff(acme.id, other_identity)
        if c["assignee"] != served:
            await actions.do_assign(acme.id, await viewer(acme.id, acme.admin_id), c["id"], served)
    again = await do_handoff(acme.id, identity)
    assert again["assignee"] == served and {a, b} >= {served}
    rule = await db.fetchrow("SELECT rule FROM inbox_assignment WHERE conversation = $1 ORDER BY id DESC LIMIT 1",
                             again["id"])
    assert rule["rule"] == "recent"
    # Beyond the window it does not count.
    await do_update_settings(acme.id, {"recent_days": "0", "handoff_keywords": "人工", "unanswered_limit": "3",
                                       "sla_minutes": "5"}, ACTOR)
    await actions.do_resolve(acme.id, await viewer(acme.id, served), again["id"])
    third = await do_handoff(acme.id, identity)
    assert third["assignee"] != served


async def test_teams_serve_their_channels_and_languages(acme: TenantFixture, make_rep: MakeRep,
                                                        make_person: MakePerson) -> None:
    en_team = await staff_svc.do_create_team(ACTOR, acme.id, "English desk")
    mp_team = await staff_svc.do_create_team(ACTOR, acme.id, "Mini Program desk")
    await do_set_team_route(acme.id, en_team, [], ["en"], [], [], ACTOR)
    await do_set_team_route(acme.id, mp_team, ["mp"], [], [], [], ACTOR)
    english = await make_rep("En", teams=(en_team,))
    mp_rep = await make_rep("Mp", teams=(mp_team,))
    identity, _ = await make_person("oa", language="en")
    assert (await do_handoff(acme.id, identity))["assignee"] == english
    identity, _ = await make_person("mp")
    assert (await do_handoff(acme.id, identity))["assignee"] == mp_rep
    # A Chinese-speaking OA follower: no team serves it, so everyone may take it.
    identity, _ = await make_person("oa", language="zh_CN")
    assert (await do_handoff(acme.id, identity))["assignee"] in (english, mp_rep)


async def test_capacity_queue_vip_first_and_drain_when_a_rep_comes_online(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    rep = await make_rep("Solo", capacity=1)
    first, _ = await make_person()
    assert (await do_handoff(acme.id, first))["assignee"] == rep
    waiting = []
    for _ in range(3):
        identity, _ = await make_person()
        conv = await do_handoff(acme.id, identity)
        assert conv["status"] == "queued"  # the only rep is full
        waiting.append(conv["id"])
    vip_tag = await contacts.do_tag(acme.id, (await make_person())[1], "VIP", ACTOR)
    await do_update_settings(acme.id, {"vip_tag_ids": [str(vip_tag)], "handoff_keywords": "人工",
                                       "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30"}, ACTOR)
    vip_identity = (await db.fetchrow("SELECT i.id FROM identity i JOIN contact_tag ct ON ct.contact = i.contact "
                                      "WHERE ct.tag = $1", vip_tag))["id"]
    vip = await do_handoff(acme.id, vip_identity)
    assert vip["status"] == "queued" and vip["vip"] is True
    assert await routing.queue_position(acme.id, vip) == 0  # VIP first
    assert await routing.queue_position(acme.id, await db_conv(waiting[2])) == 3

    helper = await make_rep("Helper", capacity=2, online=False)
    assert await routing.drain(acme.id) == 0  # nobody has room
    await actions.do_set_presence(acme.id, helper, "online", ACTOR)
    assert await routing.drain(acme.id) == 2  # the VIP, then the first who came
    assert await assignee_of(vip["id"]) == helper and await assignee_of(waiting[0]) == helper
    assert await status_of(waiting[1]) == "queued"
    # The solo rep resolves: their seat goes to the next in line.
    conv_id = (await db.fetchrow("SELECT id FROM inbox_conversation WHERE assignee = $1", rep))["id"]
    await actions.do_resolve(acme.id, await viewer(acme.id, rep), conv_id)
    await inbox_jobs.drain({}, acme.id)
    assert await assignee_of(waiting[1]) == rep and await status_of(waiting[2]) == "queued"


async def db_conv(conversation_id: int) -> dict[str, object]:
    return dict(await db.fetchrow("SELECT * FROM inbox_conversation WHERE id = $1", conversation_id))


async def test_an_unanswered_assignment_goes_to_the_next_rep_after_the_sla(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    a, b = await make_rep("A"), await make_rep("B")
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    first = conv["assignee"]
    assignment = await db.fetchrow("SELECT id FROM inbox_assignment WHERE conversation = $1", conv["id"])
    assert await inbox_jobs.sla_check({}, acme.id, assignment["id"]) == "not due"
    await db.execute("UPDATE inbox_assignment SET assigned_at = now() - interval '6 minutes' WHERE id = $1",
                     assignment["id"])
    await db.execute("UPDATE inbox_conversation SET queued_at = now() - interval '7 minutes' WHERE id = $1", conv["id"])
    assert await inbox_jobs.sla_check({}, acme.id, assignment["id"]) == "reassigned"
    assert await assignee_of(conv["id"]) == ({a, b} - {first}).pop()
    ended = await db.fetchrow("SELECT end_reason FROM inbox_assignment WHERE id = $1", assignment["id"])
    assert ended["end_reason"] == "sla"
    assert await inbox_jobs.sla_check({}, acme.id, assignment["id"]) == "answered or ended"  # run twice: no-op
    # Answered in time: the SLA leaves it alone.
    identity2, _ = await make_person()
    conv2 = await do_handoff(acme.id, identity2)
    await db.execute("UPDATE inbox_conversation SET first_response_at = now() WHERE id = $1", conv2["id"])
    await db.execute("UPDATE inbox_assignment SET first_response_at = now(), assigned_at = now() - interval '9 minutes' "
                     "WHERE conversation = $1", conv2["id"])
    a2 = await db.fetchrow("SELECT id FROM inbox_assignment WHERE conversation = $1", conv2["id"])
    assert await inbox_jobs.sla_check({}, acme.id, a2["id"]) == "answered or ended"


async def test_fifty_handoffs_against_ten_reps_never_double_assign_or_overfill(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    reps = [await make_rep(f"R{i}", capacity=3) for i in range(10)]
    people = [(await make_person())[0] for _ in range(50)]
    results = await asyncio.gather(*(do_handoff(acme.id, identity) for identity in people))
    assigned = [r for r in results if r["status"] == "assigned"]
    assert len(assigned) == 30 and sum(r["status"] == "queued" for r in results) == 20
    loads = await db.fetch("SELECT assignee, count(*) AS n FROM inbox_conversation WHERE status = 'assigned' "
                           "GROUP BY assignee")
    assert {r["assignee"] for r in loads} == set(reps) and all(r["n"] == 3 for r in loads)
    open_assignments = await db.fetch("SELECT conversation, count(*) AS n FROM inbox_assignment "
                                      "WHERE ended_at IS NULL GROUP BY conversation")
    assert len(open_assignments) == 30 and all(r["n"] == 1 for r in open_assignments)
    # And the drain racing itself adds nobody over capacity.
    extra = await make_rep("Late", capacity=5)
    drained = await asyncio.gather(*(routing.drain(acme.id) for _ in range(4)))
    assert sum(drained) == 5
    late = await db.fetchrow("SELECT count(*) AS n FROM inbox_conversation WHERE assignee = $1", extra)
    assert late["n"] == 5


async def test_a_rep_keeps_seeing_what_they_resolved_and_can_reopen_it(acme: TenantFixture, make_rep: MakeRep,
                                                                       make_person: MakePerson) -> None:
    from siyu.inbox.conversations import get_conversation
    a, b = await make_rep("A"), await make_rep("B", online=False)
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    assert conv["assignee"] == a
    await actions.do_resolve(acme.id, await viewer(acme.id, a), conv["id"])
    assert (await get_conversation(acme.id, await viewer(acme.id, a), conv["id"]))["status"] == "resolved"
    import pytest

    from siyu.core.errors import NotFound
    with pytest.raises(NotFound):
        await get_conversation(acme.id, await viewer(acme.id, b), conv["id"])
    reopened = await actions.do_reopen(acme.id, await viewer(acme.id, a), conv["id"])
    assert reopened["status"] == "assigned" and reopened["assignee"] == a


async def _loads_agree(tenant_id: int) -> dict[int, int]:
    """Every seat's kept load against a count of what its rep holds in `assigned` state."""
    rows = await db.fetch(
        "SELECT a.staff, a.load, (SELECT count(*) FROM inbox_conversation c WHERE c.tenant = a.tenant "
        "AND c.assignee = a.staff AND c.status = 'assigned') AS counted FROM inbox_agent a WHERE a.tenant = $1",
        tenant_id)
    assert [(r["staff"], r["load"]) for r in rows] == [(r["staff"], r["counted"]) for r in rows]
    return {int(r["staff"]): int(r["load"]) for r in rows}


async def test_the_seat_load_follows_every_change_and_opposite_transfers_do_not_deadlock(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    a, b = await make_rep("A", capacity=4), await make_rep("B", capacity=4)
    manager = await viewer(acme.id, acme.admin_id)
    convs = [await do_handoff(acme.id, (await make_person())[0]) for _ in range(6)]
    assert await _loads_agree(acme.id) == {a: 3, b: 3}
    mine_a = [c["id"] for c in convs if c["assignee"] == a]
    mine_b = [c["id"] for c in convs if c["assignee"] == b]
    # Opposite transfers at the same moment, many times over: each waits for the other's seats, in order.
    await asyncio.gather(*(actions.do_assign(acme.id, manager, cid, b) for cid in mine_a),
                         *(actions.do_assign(acme.id, manager, cid, a) for cid in mine_b))
    assert await _loads_agree(acme.id) == {a: 3, b: 3}
    await actions.do_snooze(acme.id, await viewer(acme.id, b), mine_a[0], "1d")
    await actions.do_resolve(acme.id, await viewer(acme.id, b), mine_a[1])
    assert await _loads_agree(acme.id) == {a: 3, b: 1}  # snoozed and resolved do not count
    await actions.do_reopen(acme.id, await viewer(acme.id, b), mine_a[1])
    await db.execute("UPDATE inbox_conversation SET assignee = $2 WHERE id = $1", mine_a[2], a)  # any path
    assert await _loads_agree(acme.id) == {a: 4, b: 1}
    await db.execute("DELETE FROM inbox_conversation WHERE id = $1", mine_a[2])
    assert await _loads_agree(acme.id) == {a: 3, b: 1}


async def test_each_assignment_writes_one_timeline_event_in_the_assigning_statement(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    """Handoff (routed at once) and drain (routed from the queue) write the assignment's event on the
    person's contact, naming the rep, once."""
    identity, contact = await make_person()
    waiting, waiting_contact = await make_person()
    first = await make_rep("Wang Fang")
    conv = await do_handoff(acme.id, identity)
    assert conv["assignee"] == first
    await actions.do_set_presence(acme.id, first, "offline", ACTOR)
    queued = await do_handoff(acme.id, waiting)
    assert queued["status"] == "queued"
    await make_rep("Zhao Lei")
    assert await routing.drain(acme.id) == 1
    events = await db.fetch("SELECT contact, payload FROM timeline_event WHERE kind = 'assignment' ORDER BY id")
    assert [(e["contact"], json.loads(e["payload"])["to"]) for e in events] == [
        (contact, "Wang Fang"), (waiting_contact, "Zhao Lei")]
    assert await routing.drain(acme.id) == 0  # nothing waits: nothing more is written
    assert len(await db.fetch("SELECT id FROM timeline_event WHERE kind = 'assignment'")) == 2
