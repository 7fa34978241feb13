"""The channels' own rules: WeCom tasks the rep confirms (polled: sent, not sent, the receive limit, never
confirmed), OA mass sends (one batch per slot, WeChat's clientmsgid from the ledger, at most 4 a person a month
counted by Siyu, MASSSENDJOBFINISH totals), and WeChat's answers per errcode: "not allowed now" moves to the
next channel, busy and rate limits wait, everything else fails with its reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from siyu.core import clock, db
from siyu.engagement import ledger, mass, tasks, triggers
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import MP, OA, WECOM
from tests.integration.engagement.conftest import Clock, World, make_journey, rows, sweep, welcome

TASK = "cgi-bin/externalcontact/add_msg_template"
MASS = "cgi-bin/message/mass/send"
CUSTOM = "cgi-bin/message/custom/send"


def journey(channels: list[str], purpose: str = "marketing", **extra: Any) -> dict[str, Any]:
    return welcome(steps=[{"id": "m", "send": {"purpose": purpose, "text": "会员日", "channels": channels}}], **extra)


async def enter(world: World, *people: Any) -> None:
    for n, p in enumerate(people):
        await triggers.on_follow(world.tenant.id, p.contact_id, "oa", 1000 + n, clock.now())


async def test_a_wecom_task_waits_for_the_rep_and_its_result_is_polled(world: World, runtime: WeChatRuntime,
                                                                       moved_clock: Clock) -> None:
    tid = world.tenant.id
    await make_journey(tid, journey(["wecom_task"]))
    people = [await world.person(k, rep="zhangsan") for k in ("ann", "bob", "cai")]
    await enter(world, *people)
    await sweep(runtime)
    assert {r.state for r in await rows(tid)} == {"waiting_for_rep"}
    assert not world.sim.messages(endpoint=TASK)  # nothing reaches anyone before the rep confirms
    jobs = {t["external_userid"][0]: t for t in world.sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])}

    # ann's task is confirmed; bob is no longer zhangsan's contact when the rep confirms; cai's never is.
    world.sim._post(f"/_sim/wecom/tasks/{jobs[people[0].external_userid]['msgid']}/confirm", {})
    world.sim.push(WECOM["corp_id"], "bob", "delete_contact", user_id="zhangsan")
    world.sim._post(f"/_sim/wecom/tasks/{jobs[people[1].external_userid]['msgid']}/confirm", {})
    assert await tasks.poll(runtime, ask_every=0) == 2
    got = {r.contact: r for r in await rows(tid)}
    assert (got[people[0].contact_id].state, got[people[1].contact_id].state) == ("sent", "not_sent")
    assert got[people[1].contact_id].reason == "not_their_contact"
    assert got[people[2].contact_id].state == "waiting_for_rep"
    moved_clock.advance(days=3, minutes=1)
    assert await tasks.poll(runtime, ask_every=0) == 1
    last = await ledger.get(tid, got[people[2].contact_id].id)
    assert last is not None and (last.state, last.reason) == ("not_sent", "rep_did_not_confirm")
    assert len(world.sim.messages(endpoint=TASK)) == 1


async def test_the_customers_monthly_receive_limit_is_not_sent(world: World, runtime: WeChatRuntime) -> None:
    """The rep confirms at once (the simulated rep of this corp), but one customer has had this month's corp
    mass messages already: WeChat does not send it to them, and the poll says why."""
    tid = world.tenant.id
    world.sim.register("wecom", WECOM["corp_id"], WECOM["secret"], token=WECOM["token"], aes_key=WECOM["aes_key"],
                       open_platform="acme-open", follow_users=["zhangsan"], task_confirm_after=0)
    await make_journey(tid, journey(["wecom_task"]))
    dee, eli = await world.person("dee", rep="zhangsan"), await world.person("eli", rep="zhangsan")
    world.sim._post("/_sim/people", {"app_id": WECOM["corp_id"], "people": ["dee"], "user_id": "zhangsan",
                                     "mass_received_this_month": 31})
    await enter(world, dee, eli)
    await sweep(runtime)
    assert await tasks.poll(runtime, ask_every=0) == 2
    got = {r.contact: (r.state, r.reason) for r in await rows(tid)}
    assert got == {dee.contact_id: ("not_sent", "receive_limit"), eli.contact_id: ("sent", "")}
    assert [m["to"] for m in world.sim.messages(endpoint=TASK)] == [eli.external_userid]


async def test_mass_sends_go_out_in_one_batch_with_the_ledgers_clientmsgid(world: World, runtime: WeChatRuntime,
                                                                           moved_clock: Clock) -> None:
    tid = world.tenant.id
    await make_journey(tid, journey(["mass"]))
    people = [await world.person(f"m{n}") for n in range(3)]
    await enter(world, *people)
    await sweep(runtime)
    batch_rows = await rows(tid)
    assert {(r.state, r.channel) for r in batch_rows} == {("sending", "oa_mass")}
    assert len({r.batch for r in batch_rows}) == 1
    batch_id = batch_rows[0].batch
    assert batch_id is not None
    assert await mass.send(runtime, tid, batch_id) == "open"  # its slot is still collecting
    moved_clock.advance(seconds=mass.SLOT_SECONDS + 1)
    assert await mass.send(runtime, tid, batch_id) == "sent"
    assert await mass.send(runtime, tid, batch_id) == "settled"  # again: nothing more
    [job] = world.sim._get("/_sim/mass", app_id=OA["app_id"])
    assert job["payload"]["clientmsgid"] == mass.clientmsgid(batch_id)
    assert sorted(job["sent_to"]) == sorted(p.openid for p in people)
    assert {r.state for r in await rows(tid)} == {"sent"}
    assert {r.wechat_ref for r in await rows(tid)} == {str(job["msg_id"])}
    # WeChat's result push lands on the batch.
    assert await mass.finished(tid, {"msg_id": str(job["msg_id"]), "status": "send success", "sentcount": "3"},
                               clock.now())
    result = await db.fetchrow("SELECT result::text AS r FROM engagement_mass_batch WHERE id = $1", batch_id)
    assert "send success" in result["r"]


async def test_siyu_counts_four_mass_messages_a_person_a_natural_month(world: World, runtime: WeChatRuntime,
                                                                       moved_clock: Clock) -> None:
    from datetime import UTC, datetime

    tid = world.tenant.id
    moved_clock.set(datetime(2026, 11, 30, 15, 0, tzinfo=UTC))  # 23:00 in China on the 30th
    people = [await world.person(f"k{n}") for n in range(2)]
    for n in range(5):
        await make_journey(tid, journey(["mass"], name=f"Promo {n}"))
    await db.execute("UPDATE engagement_settings SET cap_count = 100")
    await enter(world, *people)
    await sweep(runtime)
    got = await rows(tid)
    assert sum(r.channel == "oa_mass" and r.state == "sending" for r in got) == 8  # 4 each
    capped = [r for r in got if r.state == "skipped"]
    assert len(capped) == 2 and all(r.reason == "no_channel" for r in capped)
    assert all(r.skips == [{"channel": "mass", "reason": "monthly_cap"}] for r in capped)
    # An hour later it is December in China: the count starts again.
    moved_clock.advance(hours=1, minutes=1)
    await make_journey(tid, journey(["mass"], name="December"))
    await enter(world, *people)
    await sweep(runtime)
    december = [r for r in await rows(tid) if r.created_at >= clock.now() - timedelta(minutes=1)]
    assert {r.state for r in december} == {"sending"}


@pytest.mark.parametrize(("errcode", "outcome"), [
    (45015, "passed_over"), (45047, "passed_over"), (43004, "passed_over"),
    (45011, "retry"), (-1, "retry"), (45009, "retry"), (48001, "failed"), (40003, "failed")])
async def test_each_errcode_moves_on_waits_or_fails(world: World, runtime: WeChatRuntime, errcode: int,
                                                    outcome: str) -> None:
    tid = world.tenant.id
    await make_journey(tid, journey(["window", "wecom_task"], purpose="service"))
    fay = await world.person("fay", window=True, rep="zhangsan")
    world.sim.faults(OA["app_id"], *([errcode] * 3))  # -1 is retried by the client itself first
    await enter(world, fay)
    await sweep(runtime)
    [row] = await rows(tid)
    if outcome == "passed_over":
        assert (row.state, row.channel) == ("waiting_for_rep", "wecom_task")
        assert row.skips[0]["channel"] == "window" and row.errcode == errcode
    elif outcome == "retry":
        assert (row.state, row.channel) == ("sending", "oa_window") and row.next_attempt_at is not None
        world.sim.faults(OA["app_id"], clear=True)
        await db.execute("UPDATE engagement_delivery SET next_attempt_at = now() - interval '1 second'")
        await db.execute("UPDATE wechat_outbound SET claimed_at = now()")
        await sweep(runtime)
        [row] = await rows(tid)
        assert (row.state, row.channel) == ("sent", "oa_window")
        assert len(world.received(fay, CUSTOM)) == 1
    else:
        assert (row.state, row.errcode) == ("failed", errcode)
        assert not world.received(fay, TASK)
    assert len([m for m in world.received(fay) if m["endpoint"] == CUSTOM]) <= 1
    assert MP  # the Mini Program is linked but fay is not on it


async def test_an_unknown_outcome_is_final_and_never_sent_again(world: World, redis: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """WeChat answers too late: the message may have been delivered. The row is `unknown`, the next channel is
    not tried, and no later sweep or re-run asks WeChat again."""
    from siyu.core.settings import reset_settings
    from siyu.wechat.outbound import WeChatRuntime

    monkeypatch.setenv("SIYU_WECHAT_TIMEOUT_MS", "2000")
    reset_settings()
    runtime = WeChatRuntime(redis)
    try:
        tid = world.tenant.id
        await make_journey(tid, journey(["window", "wecom_task"], purpose="service"))
        gil = await world.person("gil", window=True, rep="zhangsan")
        world.sim.faults(OA["app_id"], endpoint_latency_ms={CUSTOM: 3500})
        await enter(world, gil)
        await sweep(runtime)
        [row] = await rows(tid)
        assert (row.state, row.channel, row.reason) == ("unknown", "oa_window", "outcome_unknown")
        world.sim.faults(OA["app_id"], clear=True, endpoint_latency_ms={})
        await db.execute("UPDATE engagement_delivery SET claimed_at = now() - interval '1 hour'")
        await sweep(runtime)
        assert (await rows(tid))[0].state == "unknown"
        assert not world.sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])  # no second channel either
        import asyncio

        await asyncio.sleep(2)  # the late answer arrives at the simulator: one message, never two
        assert len(world.received(gil, CUSTOM)) <= 1
    finally:
        await runtime.close()
        monkeypatch.delenv("SIYU_WECHAT_TIMEOUT_MS")
        reset_settings()
