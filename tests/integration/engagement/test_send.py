"""Sending, per person, at that moment: the ladder of channels (each passed over with its reason), the
send-once ledger under every call, exits re-checked between scheduling and sending, the frequency cap, the
holdout — against the simulator, so what WeChat accepted is counted there too."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.core import clock, db
from siyu.engagement import jobs, journeys, triggers
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import batch_sizes
from tests.integration.engagement.conftest import ACTOR, World, make_journey, rows, sweep, welcome

CUSTOM = "cgi-bin/message/custom/send"
TASK = "cgi-bin/externalcontact/add_msg_template"
SUBSCRIBE = "cgi-bin/message/subscribe/send"
TEMPLATE = "cgi-bin/message/template/send"


async def follow(world: World, contact_id: int, event_id: int = 1) -> int:
    return await triggers.on_follow(world.tenant.id, contact_id, "oa", event_id, clock.now())


def marketing(text: str = "新品上市", channels: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    send: dict[str, Any] = {"purpose": "marketing", "text": text}
    if channels is not None:
        send["channels"] = channels
    return welcome(steps=[{"id": "m", "send": send}], **extra)


async def test_a_welcome_goes_through_the_open_window_once(world: World, runtime: WeChatRuntime) -> None:
    j = await make_journey(world.tenant.id, welcome())
    gina = await world.person("gina", window=True)
    assert await follow(world, gina.contact_id) == 1
    [row] = await rows(world.tenant.id)
    assert (row.state, row.step, row.purpose, row.source) == ("scheduled", "hi", "service", f"journey:{j.id}")
    await sweep(runtime)
    [row] = await rows(world.tenant.id)
    assert (row.state, row.channel, row.skips, row.reason) == ("sent", "oa_window", [], "")
    assert row.sent_at is not None and row.settled_at is not None
    assert [m["payload"]["text"]["content"] for m in world.received(gina, CUSTOM)] == ["欢迎关注"]
    # The same follow again, another sweep, the deferred job run again: nothing more goes out.
    assert await follow(world, gina.contact_id) == 0
    await sweep(runtime)
    assert await jobs.send_due({"wechat": runtime}, world.tenant.id, [row.id]) == "nothing due"
    assert len(world.received(gina, CUSTOM)) == 1 and len(await rows(world.tenant.id)) == 1
    [event] = await db.fetch("SELECT kind, channel, payload::text AS p FROM timeline_event WHERE kind LIKE 'broadcast%'")
    assert (event["kind"], event["channel"]) == ("broadcast_sent", "oa") and "欢迎关注" in event["p"]


async def test_the_ladder_passes_over_each_channel_with_its_reason(world: World, runtime: WeChatRuntime) -> None:
    """Window closed → the customer's WeCom rep gets a task; no rep → the Mini Program subscription message on a
    counted consent; no consent → the OA template; marketing never uses those two."""
    tid = world.tenant.id
    svc = {"purpose": "service", "text": "您的订单已发货",
           "template": {"mp": {"template_id": "tplShip", "data": {"thing1": "已发货"}},
                        "oa": {"template_id": "tplOa", "data": {"thing1": "已发货"}}}}
    first = await make_journey(tid, welcome(steps=[{"id": "s", "send": svc}]))
    ann = await world.person("ann", rep="zhangsan")  # no window: the rep's task
    bob = await world.person("bob", mp=True, consents={"tplShip": 1})  # no rep: the subscription message
    cai = await world.person("cai")  # only the OA: its template
    for n, p in enumerate((ann, bob, cai)):
        await follow(world, p.contact_id, n + 1)
    await sweep(runtime)
    by_contact = {r.contact: r for r in await rows(tid)}
    a, b, c = by_contact[ann.contact_id], by_contact[bob.contact_id], by_contact[cai.contact_id]
    assert (a.state, a.channel, a.sender) == ("waiting_for_rep", "wecom_task", "zhangsan")
    assert a.skips == [{"channel": "window", "reason": "window_closed"}]
    assert (b.state, b.channel) == ("sent", "mp_subscribe")
    assert b.skips == [{"channel": "window", "reason": "window_closed"}, {"channel": "wecom_task", "reason": "no_rep"}]
    assert (c.state, c.channel) == ("sent", "oa_template")
    assert [s["reason"] for s in c.skips] == ["window_closed", "no_rep", "not_linked"]
    assert len(world.received(bob, SUBSCRIBE)) == 1 and len(world.received(cai, TEMPLATE)) == 1
    [task] = world.sim._get("/_sim/wecom/tasks", app_id="ww00112233445566aa")
    assert task["external_userid"] == [ann.external_userid] and task["status"] == "pending"

    # Marketing: the service-only channels are refused before WeChat, with the reason.
    await journeys.do_set_status(tid, first.id, "archived", ACTOR)
    await make_journey(tid, marketing(channels=["subscribe", "template", "mass"], name="Promo"))
    dan = await world.person("dan", mp=True, consents={"tplShip": 1})
    eve = await world.person("eve")
    await follow(world, dan.contact_id, 10)
    await follow(world, eve.contact_id, 11)
    await sweep(runtime)
    promo = [r for r in await rows(tid) if r.step == "m"]
    assert all(r.skips[:2] == [{"channel": "subscribe", "reason": "service_only"},
                               {"channel": "template", "reason": "service_only"}] for r in promo)
    assert not world.received(dan, SUBSCRIBE)


async def test_window_quota_is_kept_for_reps_and_refusals_move_on(world: World, runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    await make_journey(tid, marketing(channels=["window", "wecom_task"]))
    gus = await world.person("gus", window=True, rep="lisi")
    await db.execute("UPDATE wechat_reply_window SET user_sent = 4")  # one reply left: it is the reps'
    await follow(world, gus.contact_id)
    await sweep(runtime)
    [row] = await rows(tid)
    assert row.skips == [{"channel": "window", "reason": "kept_for_reps"}] and row.channel == "wecom_task"
    assert not world.received(gus, CUSTOM)


async def test_exits_are_checked_again_right_before_sending(world: World, runtime: WeChatRuntime) -> None:
    """Scheduled while allowed; at send time the person is tagged, in a conversation, unfollowed or has
    bought: each leaves the journey with its reason and their later steps are skipped."""
    tid = world.tenant.id
    tag = await contacts.do_tag(tid, (await world.person("tagger")).contact_id, "VIP", ACTOR)
    steps = [{"id": "a", "send": {"purpose": "service", "text": "one"}}, {"id": "w", "wait": "P1D"},
             {"id": "b", "send": {"purpose": "service", "text": "two"}}]
    await make_journey(tid, welcome(steps=steps, exit={"tags_any": [tag]}))
    people = {k: await world.person(k, window=True) for k in ("tagged", "talking", "gone", "buyer", "fine")}
    for n, p in enumerate(people.values()):
        await follow(world, p.contact_id, 100 + n)
    await contacts.do_tag(tid, people["tagged"].contact_id, "VIP", ACTOR)
    await db.execute("UPDATE contact SET last_purchase_at = now() + interval '1 second' WHERE id = $1",
                     people["buyer"].contact_id)
    await db.execute(
        "INSERT INTO timeline_event (tenant, contact, identity, occurred_at, kind, channel, payload, source_key, "
        "created_at) SELECT i.tenant, i.contact, i.id, now() + interval '1 second', 'unfollowed', 'oa', '{}', "
        "'test:unfollow', now() FROM identity i WHERE i.contact = $1", people["gone"].contact_id)
    ident = await db.fetchrow("SELECT id FROM identity WHERE contact = $1", people["talking"].contact_id)
    await db.execute("INSERT INTO inbox_conversation (tenant, identity, channel, status, teams, vip, handoff_reason, "
                     "unanswered, unread, open_kfid, preview, created_at, updated_at, queued_at) VALUES ($1, $2, 'oa', "
                     "'queued', '{}', false, 'keyword', 0, 0, '', '', now(), now(), now())", tid, ident["id"])
    await sweep(runtime)
    got = {r.contact: r for r in await rows(tid, step="a")}
    reasons = {k: (got[p.contact_id].state, got[p.contact_id].reason) for k, p in people.items()}
    assert reasons == {"tagged": ("skipped", "tag"), "talking": ("skipped", "in_conversation"),
                       "gone": ("skipped", "unfollowed"), "buyer": ("skipped", "purchased"), "fine": ("sent", "")}
    later = {r.contact: r for r in await rows(tid, step="b")}
    assert {k: later[p.contact_id].state for k, p in people.items()} == {
        "tagged": "skipped", "talking": "skipped", "gone": "skipped", "buyer": "skipped", "fine": "scheduled"}
    entries = await db.fetch("SELECT contact, exit_reason FROM engagement_entry WHERE exited_at IS NOT NULL")
    assert len(entries) == 4


async def test_sends_are_settled_together_and_a_lost_settlement_never_sends_again(
        world: World, runtime: WeChatRuntime, monkeypatch: Any) -> None:
    """The sends WeChat took in a run are settled together (one statement, one timeline write). A run that dies
    before it settles leaves its rows `sending`; the next run, once their lease is over, learns from the
    send-once ledger that WeChat took them and settles them — nobody gets a second message."""
    from siyu.engagement import sender

    await make_journey(world.tenant.id, welcome())
    people = [await world.person(f"s{n}", window=True) for n in range(5)]
    for n, p in enumerate(people):
        await follow(world, p.contact_id, event_id=100 + n)

    async def dies(batch: sender.Batch) -> None:
        raise RuntimeError("the worker died before it settled")

    monkeypatch.setattr(sender, "flush_sent", dies)
    with pytest.raises(RuntimeError):
        await sweep(runtime)
    assert {r.state for r in await rows(world.tenant.id)} == {"sending"}
    assert all(len(world.received(p, CUSTOM)) == 1 for p in people)
    monkeypatch.undo()
    await jobs.sweep_once(runtime, budget=20, idle_exit=0, lease=0)
    settled = await rows(world.tenant.id)
    assert {r.state for r in settled} == {"sent"} and all(r.sent_at and r.settled_at for r in settled)
    assert all(len(world.received(p, CUSTOM)) == 1 for p in people)
    events = await db.fetch("SELECT contact, source_key FROM timeline_event WHERE kind = 'broadcast_sent'")
    assert sorted(int(e["contact"]) for e in events) == sorted(p.contact_id for p in people)
    assert sorted(e["source_key"] for e in events) == sorted(f"engagement:{r.id}" for r in settled)


async def test_a_worker_runs_one_sweep_at_a_time_so_the_sweeps_spread_over_the_workers(
        redis: Any, runtime: WeChatRuntime) -> None:
    """arq gives the every-second cron run to whichever worker asks first: a worker already sweeping declines,
    and the run falls to another worker (a free sweeper slot is left for it)."""
    ctx = {"redis": redis, "wechat": runtime}
    first = asyncio.create_task(jobs.sweep(ctx))  # nothing is due: it idles IDLE_EXIT seconds, then ends
    await asyncio.sleep(0.3)
    assert await jobs.sweep(ctx) == "already sweeping in this worker"
    keys = [f"siyu:engagement:sweeper:{n}" for n in range(jobs.SWEEPERS)]
    assert sum([await redis.exists(k) for k in keys]) == 1  # the other slot is free for another worker
    assert await first == "idle"
    assert await jobs.sweep(ctx) == "idle"  # once its sweep has ended, the worker sweeps again


async def test_a_sweep_reads_the_next_claim_while_one_sends(world: World, runtime: WeChatRuntime,
                                                           monkeypatch: Any) -> None:
    """The sends never pause for a claim: while one claim's rows are sent, the next claim is already taken
    and waiting at the shared gate (at most CLAIMS_AHEAD at once), and every person is sent to once."""
    from siyu.engagement import sender

    await make_journey(world.tenant.id, welcome())
    people = [await world.person(f"q{n}", window=True) for n in range(5)]
    for n, p in enumerate(people):
        await follow(world, p.contact_id, event_id=300 + n)
    real_run, active, most = sender.run, [0], [0]

    async def slow_run(rt: WeChatRuntime, claimed: list[Any], gate: Any = None) -> Any:
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            await asyncio.sleep(0.3)  # a claim that takes a while to send
            return await real_run(rt, claimed, gate)
        finally:
            active[0] -= 1

    monkeypatch.setattr(sender, "run", slow_run)
    await jobs.sweep_once(runtime, budget=20, idle_exit=0, chunk=1)
    assert most[0] == jobs.CLAIMS_AHEAD == 2
    assert {r.state for r in await rows(world.tenant.id)} == {"sent"}
    assert all(len(world.received(p, CUSTOM)) == 1 for p in people)


async def test_concurrent_marketing_sends_to_one_person_are_taken_together_and_capped(
        world: World, runtime: WeChatRuntime, monkeypatch: Any) -> None:
    """Four marketing journeys greet one follower at the same moment: their rows are taken in one transaction
    (the person locked and counted once), and the frequency cap (2 in 7 days) lets exactly two go."""
    from siyu.engagement import sender

    for n in range(4):
        await make_journey(world.tenant.id, marketing(text=f"促销 {n}", name=f"Promo {n}"))
    kim = await world.person("kim", window=True)
    sizes = batch_sizes(monkeypatch, sender._takes)
    await follow(world, kim.contact_id)
    await sweep(runtime)
    got = sorted((r.state, r.reason) for r in await rows(world.tenant.id))
    assert got == [("sent", ""), ("sent", ""), ("skipped", "frequency_cap"), ("skipped", "frequency_cap")]
    assert len(world.received(kim, CUSTOM)) == 2
    assert sizes == [4]


async def test_a_row_handed_in_twice_is_taken_once(world: World, runtime: WeChatRuntime) -> None:
    from siyu.engagement import ledger, sender

    await make_journey(world.tenant.id, marketing())
    kim = await world.person("kim", window=True)
    await follow(world, kim.contact_id)
    [row] = await rows(world.tenant.id)
    await db.execute("UPDATE engagement_delivery SET state = 'due' WHERE id = $1", row.id)
    now = clock.now()
    take = ledger.Take(row.id, "due", "oa_window", [], f"engagement:{row.id}:oa_window", "", now)
    item = sender._TakeItem(world.tenant.id, row.contact, True, 7, 2, take, now)
    first, second = await sender._take_batch([item, item])
    assert isinstance(first, ledger.Row) and first.state == "sending" and second == "lost"
    assert (await db.fetchrow("SELECT state FROM engagement_delivery WHERE id = $1", row.id))["state"] == "sending"
