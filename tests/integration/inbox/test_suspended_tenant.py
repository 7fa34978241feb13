"""A suspended tenant is really suspended: WeChat's callbacks are answered (so it stops retrying) and
stored, but no passive auto-reply, no processing (contacts, conversations, routing, bot answers) and no
send happens; reactivation hands over what waited, once. Through the real pipeline: the simulator pushes
to a live Siyu server, the jobs run in a burst worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from siyu.core import db
from siyu.core.clock import now
from siyu.core.redis import arq_pool
from siyu.inbox import actions
from siyu.inbox import jobs as inbox_jobs
from siyu.tenants import services as tenants
from siyu.wechat import jobs as wechat_jobs
from siyu.wechat import outbound
from siyu.wechat.holds import HELD
from siyu.wechat.services import do_create_rule
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, Simulator, TenantFixture, WebServer
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import ACTOR, MakeRep, viewer
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

CUSTOM_SEND = "cgi-bin/message/custom/send"


@pytest.fixture
async def apps(acme: TenantFixture, sim: Simulator, web_server: WebServer) -> tuple[str, str]:
    """acme's Official Account and Mini Program (JSON pushes), with a welcome and a keyword rule."""
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    await do_create_rule(ACTOR, acme.id, {"trigger": "welcome", "reply": "欢迎关注！"})
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "价格",
                                        "reply": "价格表已发送"})
    return (link_both(sim, web_server, "oa", OA),
            link_both(sim, web_server, "mp", MP, message_mode="safe", push_format="json"))


async def counts() -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM wechat_inbound_event) AS events, "
        "(SELECT count(*) FROM wechat_inbound_event WHERE processed_at IS NOT NULL) AS processed, "
        "(SELECT count(*) FROM contact) AS contacts, (SELECT count(*) FROM inbox_conversation) AS conversations, "
        "(SELECT count(*) FROM timeline_event) AS timeline, (SELECT count(*) FROM wechat_outbound) AS ledger, "
        "(SELECT count(*) FROM wechat_held_job) AS held")
    return dict(row)


async def set_status(tenant: TenantFixture, status: str) -> None:
    await tenants.do_set_tenant_status(ACTOR, tenant.id, status)


async def test_callbacks_of_a_suspended_tenant_wait_unprocessed_and_reactivation_processes_them_once(
        acme: TenantFixture, sim: Simulator, apps: tuple[str, str], make_rep: MakeRep) -> None:
    oa, mp = apps
    rep = await make_rep("Li Na")
    await set_status(acme, "suspended")

    pushed = [sim.push(oa, "alice", "follow"), sim.push(oa, "alice", "text", text="价格多少"),
              sim.push(oa, "alice", "text", text="我要转人工"), sim.push(mp, "dora", "text", text="价格？")]
    assert all(p["delivered"] and p["reply"] is None for p in pushed)  # answered `success`, no auto-reply
    await run_worker()
    assert await counts() == {"events": 4, "processed": 0, "contacts": 0, "conversations": 0, "timeline": 0,
                              "ledger": 0, "held": 0}
    # The sweeper leaves them waiting too.
    await InboundEvent.update({InboundEvent.received_at: now() - timedelta(minutes=5)}).where(
        InboundEvent.id > 0)
    pool = await arq_pool()
    try:
        assert await wechat_jobs.sweep_inbound({"redis": pool}) == 0
    finally:
        await pool.aclose()
    await run_worker()
    assert (await counts())["processed"] == 0
    assert sim.messages(endpoint=CUSTOM_SEND) == []

    await set_status(acme, "active")  # enqueues wechat.resume_tenant after commit
    await run_worker()
    after = await counts()
    assert after["events"] == 4 and after["processed"] == 4 and after["contacts"] == 2
    assert after["conversations"] == 2
    conv = dict(await db.fetchrow("SELECT * FROM inbox_conversation WHERE channel = 'oa'"))
    assert conv["status"] == "assigned" and conv["assignee"] == rep  # the handoff and routing happened now
    mp_sent = sim.messages(app_id=mp, endpoint=CUSTOM_SEND)
    assert len(mp_sent) == 1 and "价格表已发送" in str(mp_sent[0]["payload"])  # the bot's answer, once

    # A second reactivation job (or a sweep) finds nothing more to do: nothing twice.
    pool = await arq_pool()
    try:
        assert await wechat_jobs.resume_tenant({"redis": pool, "job_id": "again"}, acme.id) == {
            "events": 0, "sends": 0}
        assert await wechat_jobs.sweep_inbound({"redis": pool}) == 0
    finally:
        await pool.aclose()
    await run_worker()
    assert await counts() == after
    assert len(sim.messages(app_id=mp, endpoint=CUSTOM_SEND)) == 1


async def test_a_suspended_tenants_sends_are_held_and_go_out_once_on_reactivation(
        acme: TenantFixture, sim: Simulator, apps: tuple[str, str], make_rep: MakeRep) -> None:
    oa, _ = apps
    rep = await make_rep("Li Na")
    sim.push(oa, "alice", "follow")
    sim.push(oa, "alice", "text", text="我要转人工")
    await run_worker()
    conv = dict(await db.fetchrow("SELECT * FROM inbox_conversation"))
    assert conv["status"] == "assigned"
    notices = len(sim.messages(app_id=oa, endpoint=CUSTOM_SEND))

    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "您好，请问有什么可以帮您？")
    await set_status(acme, "suspended")  # before the send job runs
    await run_worker()
    assert len(sim.messages(app_id=oa, endpoint=CUSTOM_SEND)) == notices  # nothing went out
    row = await db.fetchrow("SELECT status FROM inbox_message WHERE id = $1", message_id)
    assert row["status"] == "sending"  # waiting, not failed
    assert await db.fetchrow("SELECT 1 FROM wechat_outbound WHERE idempotency_key = $1",
                             f"inbox:msg:{message_id}") is None  # no ledger row claimed
    # The job run again while suspended is held once.
    assert await inbox_jobs.send_message({}, acme.id, message_id) == HELD
    assert (await counts())["held"] == 1
    # However long the suspension, the sweeps do not give the waiting line up.
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '3 hours' WHERE id = $1", message_id)
    await inbox_jobs.sweep_sends()
    await outbound.settle_stale()
    await run_worker()
    row = await db.fetchrow("SELECT status FROM inbox_message WHERE id = $1", message_id)
    assert row["status"] == "sending"
    assert await db.fetchrow("SELECT 1 FROM wechat_outbound WHERE idempotency_key = $1",
                             f"inbox:msg:{message_id}") is None

    await set_status(acme, "active")
    await run_worker()
    sent = sim.messages(app_id=oa, endpoint=CUSTOM_SEND)
    assert len(sent) == notices + 1 and "请问有什么可以帮您" in str(sent[-1]["payload"])
    row = await db.fetchrow("SELECT status FROM inbox_message WHERE id = $1", message_id)
    assert row["status"] == "sent"
    assert (await counts())["held"] == 0
    assert await inbox_jobs.send_message({}, acme.id, message_id) == "nothing to send"
    assert len(sim.messages(app_id=oa, endpoint=CUSTOM_SEND)) == notices + 1


async def test_the_sweeper_hands_over_sends_held_for_a_tenant_active_again(
        acme: TenantFixture, sim: Simulator, apps: tuple[str, str], make_rep: MakeRep, redis: Any) -> None:
    """Should the reactivation's job be lost (Redis down at that moment), the next sweep sends what was
    held; other tenants' sweeps never release a still-suspended tenant's holds."""
    oa, _ = apps
    rep = await make_rep("Li Na")
    sim.push(oa, "alice", "follow")
    sim.push(oa, "alice", "text", text="我要转人工")
    await run_worker()
    conv = dict(await db.fetchrow("SELECT * FROM inbox_conversation"))
    notices = len(sim.messages(app_id=oa, endpoint=CUSTOM_SEND))
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "稍等")
    await set_status(acme, "suspended")
    await run_worker()
    pool = await arq_pool()
    try:
        assert await wechat_jobs.sweep_inbound({"redis": pool}) == 0
        await run_worker()
        assert (await counts())["held"] == 1  # still suspended: kept
        await set_status(acme, "active")
        await redis.delete(*await redis.keys("arq:*"))  # the reactivation's job is lost
        await wechat_jobs.sweep_inbound({"redis": pool})
    finally:
        await pool.aclose()
    await run_worker()
    assert len(sim.messages(app_id=oa, endpoint=CUSTOM_SEND)) == notices + 1
    assert (await db.fetchrow("SELECT status FROM inbox_message WHERE id = $1", message_id))["status"] == "sent"
