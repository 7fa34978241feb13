"""Broadcasts: the fan-out into the ledger (paced by due times, held-out people included, idempotent page by
page), pause / resume / cancel, done; and the skip reasons not covered elsewhere, each at send time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from siyu.core import clock, db
from siyu.core.errors import Conflict
from siyu.engagement import broadcasts, jobs, mass, triggers
from siyu.segments import services as segments
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import OA
from tests.integration.engagement.conftest import ACTOR, Clock, World, make_journey, rows, sweep, welcome


async def audience(world: World, n: int, **person: Any) -> tuple[int, list[Any]]:
    people = [await world.person(f"a{k}", **person) for k in range(n)]
    seg = await segments.do_create_segment(world.tenant.id, f"Audience {n}", {"channels": ["oa"]}, ACTOR)
    return seg, people


def message(text: str = "会员日", purpose: str = "marketing", channels: list[str] | None = None) -> dict[str, Any]:
    return {"purpose": purpose, "text": text, "channels": channels or ["window"]}


async def test_fan_out_is_paced_idempotent_and_includes_the_holdout(world: World, moved_clock: Clock) -> None:
    tid = world.tenant.id
    seg, people = await audience(world, 12)
    b = await broadcasts.do_create_broadcast(tid, {"name": "Paced", "segment_id": seg, "message": message(),
                                                   "rate_per_minute": 60, "holdout_percent": 50}, ACTOR)
    assert b.status == "scheduled"
    start = clock.now()
    assert await broadcasts.fan_out(tid, b.id) == 12
    assert await broadcasts.fan_out(tid, b.id) == 0  # again: nothing more
    got = sorted(await rows(tid), key=lambda r: r.due_at)
    gaps = {round((y.due_at - x.due_at).total_seconds(), 3) for x, y in zip(got, got[1:], strict=False)}
    assert gaps == {1.0}  # 60 a minute: one a second
    assert abs((got[0].due_at - start).total_seconds()) < 2
    assert 0 < sum(r.held_out for r in got) < 12 and {r.step for r in got} == {"message"}
    b2 = await broadcasts.get_broadcast(tid, b.id)
    assert (b2.status, b2.targeted, b2.fanned_out) == ("sending", 12, True)
    assert people


async def test_a_broadcast_at_a_later_time_waits_for_it(world: World, moved_clock: Clock) -> None:
    tid = world.tenant.id
    seg, _ = await audience(world, 2)
    later = clock.now() + timedelta(hours=2)
    b = await broadcasts.do_create_broadcast(tid, {"name": "Later", "segment_id": seg, "message": message(),
                                                   "send_at": later}, ACTOR)
    assert await broadcasts.fan_out(tid, b.id) == 0 and await broadcasts.due_fan_outs(clock.now()) == []
    moved_clock.advance(hours=2, seconds=1)
    assert await broadcasts.due_fan_outs(clock.now()) == [(tid, b.id)]
    assert await broadcasts.fan_out(tid, b.id) == 2


async def test_pause_resume_cancel_and_done(world: World, runtime: WeChatRuntime, moved_clock: Clock) -> None:
    tid = world.tenant.id
    seg, people = await audience(world, 6, window=True)
    b = await broadcasts.do_create_broadcast(tid, {"name": "Flow", "segment_id": seg, "message": message(),
                                                   "rate_per_minute": 60}, ACTOR)
    await broadcasts.fan_out(tid, b.id)
    moved_clock.advance(seconds=1.5)  # two are due
    await sweep(runtime)
    assert [r.state for r in sorted(await rows(tid), key=lambda r: r.id)][:2] == ["sent", "sent"]
    await broadcasts.do_set_status(tid, b.id, "paused", ACTOR)
    moved_clock.advance(minutes=10)
    await sweep(runtime)
    assert sum(r.state == "sent" for r in await rows(tid)) == 2  # nothing goes while paused
    await broadcasts.do_set_status(tid, b.id, "sending", ACTOR)
    left = sorted((r for r in await rows(tid) if r.state == "scheduled"), key=lambda r: r.due_at)
    assert len(left) == 4 and left[0].due_at >= clock.now() - timedelta(seconds=1)
    assert round((left[1].due_at - left[0].due_at).total_seconds()) == 1  # paced again from now
    moved_clock.advance(seconds=1.5)
    await sweep(runtime)
    await broadcasts.do_set_status(tid, b.id, "cancelled", ACTOR)
    reasons = {r.state: r.reason for r in await rows(tid) if r.state != "sent"}
    assert reasons == {"skipped": "cancelled"}
    with pytest.raises(Conflict):
        await broadcasts.do_set_status(tid, b.id, "sending", ACTOR)
    # Another one runs to its end and is done.
    done = await broadcasts.do_create_broadcast(tid, {"name": "Done", "segment_id": seg, "message": message(
        purpose="service")}, ACTOR)
    await broadcasts.fan_out(tid, done.id)
    await sweep(runtime)
    assert await broadcasts.finish_done(clock.now()) == 1
    assert (await broadcasts.get_broadcast(tid, done.id)).status == "done"
    assert len(world.received(people[0])) >= 1


async def test_more_skip_reasons_at_send_time(world: World, runtime: WeChatRuntime) -> None:
    """quota_used, no_template, no_consent, erased, left_segment, stop:purchased, mass_needs_two."""
    tid = world.tenant.id
    vip = await segments.do_create_segment(tid, "Wecom people", {"channels": ["wecom"]}, ACTOR)
    svc = {"purpose": "service", "text": "通知", "channels": ["window", "subscribe", "template"],
           "template": {"mp": {"template_id": "tplX"}, "oa": {"template_id": "tplY"}}}
    await make_journey(tid, welcome(name="Svc", steps=[{"id": "s", "send": svc}]))
    used = await world.person("used", window=True)
    await db.execute("UPDATE wechat_reply_window SET user_sent = 5")  # all five replies used
    mp_no_consent = await world.person("mpuser", mp=True)
    gone = await world.person("gone")
    await db.execute("UPDATE contact SET erased_at = now() WHERE id = $1", gone.contact_id)
    for n, p in enumerate((used, mp_no_consent, gone)):
        await triggers.on_follow(tid, p.contact_id, "oa", 100 + n, clock.now())
    await sweep(runtime)
    got = {r.contact: r for r in await rows(tid)}
    assert got[used.contact_id].skips[0] == {"channel": "window", "reason": "quota_used"}
    assert {"channel": "subscribe", "reason": "no_consent"} in got[mp_no_consent.contact_id].skips
    assert (got[gone.contact_id].state, got[gone.contact_id].reason) == ("skipped", "erased")

    # A segment journey: leaving the segment before a later step; a stop_if on a purchase.
    steps = [{"id": "one", "send": {"purpose": "service", "text": "1"}}, {"id": "w", "wait": "P1D"},
             {"id": "c", "stop_if": {"purchased": True}}, {"id": "two", "send": {"purpose": "service", "text": "2"}}]
    joined = await make_journey(tid, {"name": "Joined", "trigger": {"kind": "segment_entry", "segment_id": vip},
                                      "steps": steps, "exit": {"purchased": False}})
    leaver, buyer = await world.person("leaver", rep="zhangsan"), await world.person("buyer", rep="zhangsan")
    assert await triggers.evaluate(tid, joined) == 2
    await db.execute("UPDATE identity SET erased_at = now() WHERE contact = $1 AND channel = 'wecom'", leaver.contact_id)
    await db.execute("UPDATE contact SET last_purchase_at = now() + interval '1 minute' WHERE id = $1", buyer.contact_id)
    await db.execute("UPDATE engagement_delivery SET due_at = now() - interval '1 second' WHERE step = 'two'")
    await sweep(runtime)
    two = {r.contact: r.reason for r in await rows(tid, step="two")}
    assert two == {leaver.contact_id: "left_segment", buyer.contact_id: "stop:purchased"}


async def test_a_mass_batch_of_one_is_not_sent(world: World, runtime: WeChatRuntime, moved_clock: Clock) -> None:
    tid = world.tenant.id
    await make_journey(tid, welcome(steps=[{"id": "m", "send": message(channels=["mass"])}]))
    solo = await world.person("solo")
    await triggers.on_follow(tid, solo.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    [row] = await rows(tid)
    moved_clock.advance(seconds=mass.SLOT_SECONDS + 1)
    assert row.batch is not None and await mass.send(runtime, tid, row.batch) == "too_few"
    [row] = await rows(tid)
    assert (row.state, row.reason) == ("skipped", "mass_needs_two")
    assert not world.sim._get("/_sim/mass", app_id=OA["app_id"])
    assert jobs.SEND_DUE
