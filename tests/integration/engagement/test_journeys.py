"""Journeys over time: entries once per key and the re-entry policy, the holdout, waits, the frequency cap and
quiet hours at their edges (the project clock moved, never the wall clock's hour), editing an active journey,
pausing, archiving, and the purchase / refund / inactivity / segment triggers with attribution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.core import clock, db
from siyu.core.errors import Conflict, InvalidInput
from siyu.engagement import attribution, entries, journeys, rules, triggers
from siyu.segments import services as segments
from siyu.wechat.outbound import WeChatRuntime
from tests.integration.engagement.conftest import ACTOR, Clock, World, make_journey, rows, sweep, welcome

CUSTOM = "cgi-bin/message/custom/send"


def purchase(p: Any, n: int = 1, *, at: datetime | None = None, skus: tuple[str, ...] = ("TEA",), amount: int = 9900,
             replenish: dict[str, int] | None = None, attach: str = "", sources: tuple[str, ...] = ("api",),
             first: bool = True) -> triggers.PurchaseFacts:
    return triggers.PurchaseFacts(n, f"order-{n}", p.contact_id, amount, "CNY", skus, at or clock.now(), sources,
                                  attach, first, replenish or {})


def steps(*texts: str, wait: str = "P1D", purpose: str = "service") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, text in enumerate(texts):
        if n:
            out.append({"id": f"w{n}", "wait": wait})
        out.append({"id": f"s{n}", "send": {"purpose": purpose, "text": text}})
    return out


async def test_one_entry_per_key_and_the_reentry_policy(world: World, moved_clock: Clock) -> None:
    tid = world.tenant.id
    every = await make_journey(tid, {"name": "Every order", "trigger": {"kind": "purchase"}, "steps": steps("谢谢")})
    monthly = await make_journey(tid, {"name": "Once a month", "trigger": {"kind": "purchase"},
                                       "steps": steps("谢谢"), "reentry_days": 30})
    gina = await world.person("gina")
    assert await triggers.on_purchase(tid, purchase(gina, 1)) == 2
    assert await triggers.on_purchase(tid, purchase(gina, 1)) == 0  # the same order again
    moved_clock.advance(days=1)
    assert await triggers.on_purchase(tid, purchase(gina, 2)) == 1  # a new order: only the every-order journey
    moved_clock.advance(days=30)
    assert await triggers.on_purchase(tid, purchase(gina, 3)) == 2  # past the re-entry window
    counts = {r["journey"]: r["n"] for r in await db.fetch(
        "SELECT journey, count(*) AS n FROM engagement_entry GROUP BY journey")}
    assert counts == {every.id: 3, monthly.id: 2}
    assert len(await rows(tid)) == 5


async def test_filters_of_a_purchase_trigger_and_old_purchases(world: World) -> None:
    tid = world.tenant.id
    await make_journey(tid, {"name": "Big first tea orders", "steps": steps("x"), "trigger": {
        "kind": "purchase", "skus": ["TEA"], "min_fen": 5000, "order": "first", "sources": ["api", "pay"]}})
    p = await world.person()
    assert await triggers.on_purchase(tid, purchase(p, 1, amount=4000)) == 0
    assert await triggers.on_purchase(tid, purchase(p, 2, skus=("CUP",))) == 0
    assert await triggers.on_purchase(tid, purchase(p, 3, first=False)) == 0
    assert await triggers.on_purchase(tid, purchase(p, 4, sources=("import",))) == 0
    assert await triggers.on_purchase(tid, purchase(p, 5, at=clock.now() - timedelta(days=2))) == 0
    assert await triggers.on_purchase(tid, purchase(p, 6)) == 1


async def test_the_holdout_is_stable_and_held_out_people_get_held_out_rows(world: World, runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    j = await make_journey(tid, welcome(holdout_percent=50))
    people = [await world.person(f"h{n}", window=True) for n in range(12)]
    for n, p in enumerate(people):
        await triggers.on_follow(tid, p.contact_id, "oa", n + 1, clock.now())
    await sweep(runtime)
    got = {r.contact: r for r in await rows(tid)}
    for p in people:
        expected = rules.held_out(50, tid, f"journey:{j.id}", p.contact_id)
        assert got[p.contact_id].held_out == expected
        assert got[p.contact_id].state == ("held_out" if expected else "sent")
        assert bool(world.received(p, CUSTOM)) != expected
    assert 0 < sum(r.held_out for r in got.values()) < 12


async def test_waits_and_the_frequency_cap_at_its_edge(world: World, runtime: WeChatRuntime, moved_clock: Clock) -> None:
    """Two marketing messages in 7 days: the third within the week is skipped; one a second after the
    first's week is over goes. Service messages are not counted."""
    tid = world.tenant.id
    await make_journey(tid, welcome(name="Promos", steps=steps("a", "b", "c", "d", wait="P3D", purpose="marketing")))
    await make_journey(tid, welcome(name="Service", steps=steps("notice")))
    kim = await world.person("kim", window=True)
    await triggers.on_follow(tid, kim.contact_id, "oa", 1, clock.now())
    start = clock.now()
    await sweep(runtime)  # day 0: "a" and the service notice
    for day in (3, 6):  # "b" on day 3; "c" on day 6 is the third in a week
        moved_clock.set(start + timedelta(days=day, seconds=1))
        await world.open_window(kim)
        await sweep(runtime)
    moved_clock.set(start + timedelta(days=9, seconds=2))  # "d": "a" (day 0) has left the 7 days
    await world.open_window(kim)
    await sweep(runtime)
    got = {r.step: (r.state, r.reason) for r in await rows(tid) if r.purpose == "marketing"}
    assert got == {"s0": ("sent", ""), "s1": ("sent", ""), "s2": ("skipped", "frequency_cap"), "s3": ("sent", "")}
    assert [r.state for r in await rows(tid, purpose="service")] == ["sent"]


async def test_quiet_hours_hold_a_send_until_the_window_opens(world: World, runtime: WeChatRuntime,
                                                              moved_clock: Clock) -> None:
    tid = world.tenant.id
    await rules.do_update_settings(tid, {"cap_count": "2", "cap_days": "7", "quiet_start": "21:00",
                                         "quiet_end": "09:00", "conversion_days": "7"}, ACTOR)
    moved_clock.set(datetime(2026, 6, 30, 14, 30, tzinfo=UTC))  # 22:30 on the 30th in Shanghai: month end
    await make_journey(tid, welcome())
    ivy = await world.person("ivy", window=True)
    await triggers.on_follow(tid, ivy.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    [row] = await rows(tid)
    assert row.state == "scheduled" and row.due_at == datetime(2026, 7, 1, 1, 0, tzinfo=UTC)  # 09:00 on the 1st
    assert not world.received(ivy)
    moved_clock.set(datetime(2026, 7, 1, 0, 59, 59, tzinfo=UTC))  # 08:59:59: still quiet
    await sweep(runtime)
    assert (await rows(tid))[0].state == "scheduled"
    moved_clock.set(datetime(2026, 7, 1, 1, 0, 0, tzinfo=UTC))
    await world.open_window(ivy)
    await sweep(runtime)
    [row] = await rows(tid)
    assert row.state == "sent" and row.planned_at == datetime(2026, 6, 30, 14, 30, tzinfo=UTC)


async def test_editing_an_active_journey_never_sends_a_step_twice(world: World, runtime: WeChatRuntime,
                                                                 moved_clock: Clock) -> None:
    tid = world.tenant.id
    j = await make_journey(tid, welcome(steps=steps("one", "two", "three")))
    leo = await world.person("leo", window=True)
    await triggers.on_follow(tid, leo.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    # The steps move around, "two" changes its words, "three" goes, a new step arrives.
    edited = {**j.definition.as_json(), "steps": [
        {"id": "s1", "send": {"purpose": "service", "text": "two, reworded"}}, {"id": "w1", "wait": "P1D"},
        {"id": "s0", "send": {"purpose": "service", "text": "one again?"}},
        {"id": "new", "send": {"purpose": "service", "text": "new"}}]}
    j2 = await journeys.do_update_journey(tid, j.id, edited, ACTOR)
    assert j2.version == 2
    got = {r.step: r.state for r in await rows(tid)}
    assert got == {"s0": "sent", "s1": "scheduled", "s2": "skipped"}
    assert (await rows(tid, step="s2"))[0].reason == "step_removed"
    moved_clock.advance(days=1, seconds=5)
    await world.open_window(leo)
    await sweep(runtime)
    texts = [m["payload"]["text"]["content"] for m in world.received(leo, CUSTOM)]
    assert texts == ["one", "two, reworded"]  # "s0" never again; "new" is for people who enter now


async def test_pause_resume_and_archive(world: World, runtime: WeChatRuntime, moved_clock: Clock) -> None:
    tid = world.tenant.id
    j = await make_journey(tid, welcome(steps=steps("one", "two")))
    mia = await world.person("mia", window=True)
    await triggers.on_follow(tid, mia.contact_id, "oa", 1, clock.now())
    await journeys.do_set_status(tid, j.id, "paused", ACTOR)
    await sweep(runtime)
    assert {r.state for r in await rows(tid)} == {"scheduled"} and not world.received(mia)
    assert await triggers.on_follow(tid, (await world.person("late")).contact_id, "oa", 2, clock.now()) == 0
    await journeys.do_set_status(tid, j.id, "active", ACTOR)
    await sweep(runtime)
    assert (await rows(tid, step="s0"))[0].state == "sent"
    await journeys.do_set_status(tid, j.id, "archived", ACTOR)
    assert (await rows(tid, step="s1"))[0].reason == "journey_archived"
    with pytest.raises(Conflict):
        await journeys.do_set_status(tid, j.id, "active", ACTOR)


async def test_refunds_end_the_orders_journey_and_purchases_are_credited(world: World, runtime: WeChatRuntime,
                                                                          moved_clock: Clock) -> None:
    tid = world.tenant.id
    await make_journey(tid, {"name": "Care", "trigger": {"kind": "purchase"}, "holdout_percent": 0,
                             "steps": steps("谢谢", "保养小贴士", wait="PT30M")})
    ned, ola = await world.person("ned", window=True), await world.person("ola", window=True)
    await triggers.on_purchase(tid, purchase(ned, 1))
    await triggers.on_purchase(tid, purchase(ola, 2))
    await sweep(runtime)
    assert await triggers.on_refund(tid, ned.contact_id, "order-1", "refund-1", ("TEA",), clock.now()) == 1
    got = {(r.contact, r.step): (r.state, r.reason) for r in await rows(tid)}
    assert got[(ned.contact_id, "s1")] == ("skipped", "refunded")
    assert got[(ola.contact_id, "s1")] == ("scheduled", "")
    # ola buys again 2 days after the thank-you: a conversion of "s0"; the care tip is then not sent.
    moved_clock.advance(days=2)
    await db.execute("UPDATE contact SET last_purchase_at = $2 WHERE id = $1", ola.contact_id, clock.now())
    await triggers.on_purchase(tid, purchase(ola, 3, amount=12800, first=False))
    await sweep(runtime)
    figures = await attribution.figures(tid, "journey", (await journeys.list_journeys(tid))[0].id)
    assert figures["s0"].conversions == 1 and figures["s0"].revenue_fen == 12800
    assert figures["s1"].skipped_by_reason == {"refunded": 1, "purchased": 1}


async def test_inactivity_and_segment_journeys_enter_each_spell_once(world: World) -> None:
    tid = world.tenant.id
    a, b, c = [await world.person(k) for k in ("lapsed", "recent", "never")]
    now = clock.now()
    await db.execute("UPDATE contact SET last_purchase_at = $2 WHERE id = $1", a.contact_id, now - timedelta(days=90))
    await db.execute("UPDATE contact SET last_purchase_at = $2 WHERE id = $1", b.contact_id, now - timedelta(days=5))
    winback = await make_journey(tid, {"name": "Win back", "trigger": {"kind": "inactivity", "days": 60},
                                       "steps": steps("好久不见", purpose="marketing")})
    assert await triggers.evaluate(tid, winback) == 1
    assert await triggers.evaluate(tid, winback) == 0  # the same spell
    seg = await segments.do_create_segment(tid, "Everyone on OA", {"channels": ["oa"]}, ACTOR)
    joined = await make_journey(tid, {"name": "Joined", "trigger": {"kind": "segment_entry", "segment_id": seg},
                                      "steps": steps("hi")})
    assert await triggers.evaluate(tid, joined) == 3 and await triggers.evaluate(tid, joined) == 0
    assert c.contact_id and {e.contact for e in (await entries.get_entries(tid, [
        int(r["id"]) for r in await db.fetch("SELECT id FROM engagement_entry WHERE journey = $1", winback.id)])).values()} \
        == {a.contact_id}


async def test_bad_definitions_are_refused_naming_the_field(world: World) -> None:
    tid = world.tenant.id
    with pytest.raises(InvalidInput) as bad:
        await journeys.do_create_journey(tid, {"name": "x", "trigger": {"kind": "segment_entry", "segment_id": 999},
                                               "steps": steps("x")}, ACTOR)
    assert bad.value.errors[0].field == "trigger.segment_id"
    with pytest.raises(InvalidInput) as bad:
        await journeys.do_create_journey(tid, welcome(exit={"tags_any": [12345]}), ACTOR)
    assert bad.value.errors[0].field == "exit.tags_any"
    await make_journey(tid, welcome(name="Same"))
    with pytest.raises(InvalidInput) as bad:
        await journeys.do_create_journey(tid, welcome(name="same"), ACTOR)
    assert bad.value.errors[0].field == "name"


async def test_with_a_lane_the_sends_go_to_its_own_queue(world: World, redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIYU_ENGAGEMENT_LANE=1: what re-engagement starts waits on its own queue, for `siyu worker --lane
    engagement` (niced further), never on the queue the reps' replies use."""
    from siyu import worker as worker_root
    from siyu.core.settings import reset_settings
    from siyu.engagement import lane

    monkeypatch.setenv("SIYU_ENGAGEMENT_LANE", "1")
    reset_settings()
    try:
        await make_journey(world.tenant.id, welcome())
        await triggers.on_follow(world.tenant.id, (await world.person()).contact_id, "oa", 1, clock.now())
        from siyu.core import effects

        await effects.flush()
        assert await redis.zcard(lane.QUEUE) == 1 and await redis.zcard("arq:queue") == 0
        assert worker_root.EngagementWorkerSettings.queue_name == lane.QUEUE
        assert {f.name for f in worker_root.EngagementWorkerSettings.functions} >= {"engagement.send_due",
                                                                                     "engagement.sweep"}
    finally:
        monkeypatch.delenv("SIYU_ENGAGEMENT_LANE")
        reset_settings()
