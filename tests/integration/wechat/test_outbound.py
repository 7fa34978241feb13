"""The send-once ledger against the simulator's injected faults: only what WeChat certainly did not take is
tried again; a send that left without an answer is `unknown` and never repeated; a run that died leaves a
row the sweeper settles; a run that lost its claim sends nothing."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.core import db
from siyu.core.settings import reset_settings
from siyu.tenants import services as tenants
from siyu.wechat import consents, outbound, windows
from siyu.wechat.client import WeChatBusy
from siyu.wechat.outbound import (
    WeChatRuntime,
    deliver_owner_task,
    deliver_subscribe,
    deliver_template,
    deliver_text,
)
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture, batch_sizes
from tests.integration.wechat.test_client import customers_who_wrote

SEND = "cgi-bin/message/custom/send"
# Generous against a loaded machine: a call that should answer has 3 s; a late answer comes 1.5 s after.
QUICK_TIMEOUT_MS = 3000
LATE_MS = 4500


@pytest.fixture
def quick_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """WeChat calls give up after 3 s (the default is 10 s); late answers come after 4.5 s."""
    monkeypatch.setenv("SIYU_WECHAT_TIMEOUT_MS", str(QUICK_TIMEOUT_MS))
    reset_settings()
    yield
    reset_settings()  # the environment comes back after this; the next read sees it


@pytest.fixture
async def runtime(redis: Any, quick_timeout: None) -> AsyncIterator[WeChatRuntime]:
    rt = WeChatRuntime(redis)
    yield rt
    await rt.close()


@pytest.fixture
async def oa(acme: TenantFixture, sim: Simulator) -> TenantFixture:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", OA)
    sim.register("oa", OA["app_id"], OA["app_secret"], token=OA["token"], aes_key=OA["aes_key"])
    return acme


async def one_who_wrote(sim: Simulator, tenant_id: int) -> str:
    [openid] = customers_who_wrote(sim, 1)
    await windows.note_inbound(tenant_id, "oa", openid, "message", datetime.now(UTC))
    return openid


async def ledger(key: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM wechat_outbound WHERE idempotency_key = $1", key)
    return dict(row)


def sent_to(sim: Simulator, openid: str, endpoint: str = SEND) -> list[str]:
    return [str(m["payload"]) for m in sim.messages(app_id=OA["app_id"], to=openid, endpoint=endpoint)]


async def test_a_send_answered_too_late_is_unknown_and_never_sent_again(runtime: WeChatRuntime, oa: TenantFixture,
                                                                        sim: Simulator) -> None:
    """Regression: a read timeout was `WeChatBusy`, so the ledger row became retryable and the next run sent
    the customer a second copy."""
    openid = await one_who_wrote(sim, oa.id)
    await (await runtime.client(oa.id, "oa")).access_token()
    sim.faults(OA["app_id"], endpoint_latency_ms={SEND: LATE_MS})
    first = await deliver_text(runtime, oa.id, "oa", openid, "您的订单已发货", "reply:late")
    assert (first.state, first.reason, first.errcode) == ("unknown", "outcome_unknown", None)
    row = await ledger("reply:late")
    assert row["state"] == "unknown" and "may have" in row["errmsg"] and row["attempted_at"] is not None
    # WeChat did deliver it: one copy, and the reply window counts it (the slot stays used).
    assert len(sent_to(sim, openid)) == 1
    assert (await windows.state(oa.id, "oa", openid)).remaining == 4
    sim.faults(OA["app_id"], clear=True)
    for _ in range(2):  # the job's next runs
        again = await deliver_text(runtime, oa.id, "oa", openid, "您的订单已发货", "reply:late")
        assert again.duplicate and again.state == "unknown" and again.reason == "outcome_unknown"
    assert len(sent_to(sim, openid)) == 1
    assert (await windows.state(oa.id, "oa", openid)).remaining == 4


async def test_a_template_or_subscription_message_answered_too_late_is_unknown_and_keeps_its_consent(
        runtime: WeChatRuntime, oa: TenantFixture, sim: Simulator) -> None:
    openid = await one_who_wrote(sim, oa.id)
    await (await runtime.client(oa.id, "oa")).access_token()
    sim.faults(OA["app_id"], endpoint_latency_ms={"cgi-bin/message/template/send": LATE_MS})
    late = await deliver_template(runtime, oa.id, openid, "TPL_1", {"thing1": "已发货"}, "tpl:late")
    assert late.state == "unknown"
    assert (await deliver_template(runtime, oa.id, openid, "TPL_1", {"thing1": "已发货"}, "tpl:late")).duplicate
    assert len(sent_to(sim, openid, "cgi-bin/message/template/send")) == 1

    await tenants.do_link_channel(tenants.Actor.cli(), oa.id, "mp", MP)
    sim.register("mp", MP["app_id"], MP["app_secret"])
    mp_openid = sim.push(MP["app_id"], "kim", "text", text="hi")["openid"]
    sim.push(MP["app_id"], "kim", "subscribe_consent", accept="TPL_mp")
    await db.execute("INSERT INTO wechat_subscribe_consent (tenant, channel, external_id, template_id, remaining, "
                     "updated_at) VALUES ($1, 'mp', $2, 'TPL_mp', 1, now())", oa.id, mp_openid)
    await (await runtime.client(oa.id, "mp")).access_token()
    sim.faults(MP["app_id"], endpoint_latency_ms={"cgi-bin/message/subscribe/send": LATE_MS})
    sub = await deliver_subscribe(runtime, oa.id, "mp", mp_openid, "TPL_mp", {"thing1": "到货"}, "sub:late")
    assert sub.state == "unknown"
    assert await consents.remaining(oa.id, "mp", mp_openid, "TPL_mp") == 0  # WeChat may have used it
    assert len(sim.messages(app_id=MP["app_id"], endpoint="cgi-bin/message/subscribe/send")) == 1


async def test_a_wecom_task_or_kf_message_answered_too_late_is_unknown(runtime: WeChatRuntime, acme: TenantFixture,
                                                                      sim: Simulator) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "wecom", WECOM)
    sim.register("wecom", WECOM["corp_id"], WECOM["secret"], open_kfids=["wkShop"])
    added = sim.push(WECOM["corp_id"], "gina", "add_contact", user_id="zhangsan")["external_userid"]
    wrote = sim.push(WECOM["corp_id"], "hank", "kf_text", text="在吗", open_kfid="wkShop")["external_userid"]
    await windows.note_inbound(acme.id, "wecom", wrote, "message", datetime.now(UTC))
    await (await runtime.client(acme.id, "wecom")).access_token()
    sim.faults(WECOM["corp_id"], endpoint_latency_ms={"cgi-bin/externalcontact/add_msg_template": LATE_MS,
                                                      "cgi-bin/kf/send_msg": LATE_MS})
    for _ in range(2):
        task = await deliver_owner_task(runtime, acme.id, "zhangsan", added, "新品到了", "task:late")
        kf = await deliver_text(runtime, acme.id, "wecom", wrote, "马上为您查询", "kf:late", open_kfid="wkShop")
        assert task.state == "unknown" and kf.state == "unknown"
    assert len(sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])) == 1
    assert len(sim.messages(app_id=WECOM["corp_id"], endpoint="cgi-bin/kf/send_msg")) == 1


async def test_a_token_endpoint_that_times_out_leaves_the_send_to_retry(runtime: WeChatRuntime, oa: TenantFixture,
                                                                       sim: Simulator) -> None:
    """Regression: the token step's timeout escaped as an httpx error, which killed the job and left the
    row pending for good. The send itself was never made, so it may be tried again."""
    openid = await one_who_wrote(sim, oa.id)
    sim.faults(OA["app_id"], token_timeouts=1, token_timeout_ms=LATE_MS)
    first = await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:token")
    assert (first.state, first.reason, first.errcode) == ("retry", "token_unavailable", None)
    row = await ledger("reply:token")
    assert row["state"] == "retry" and row["attempted_at"] is None  # WeChat was never asked
    assert sent_to(sim, openid) == []
    assert (await windows.state(oa.id, "oa", openid)).remaining == 5
    second = await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:token")
    assert second.state == "sent" and not second.duplicate
    assert len(sent_to(sim, openid)) == 1 and (await ledger("reply:token"))["attempts"] == 2


async def test_a_refused_connection_is_retried_and_sent_once(runtime: WeChatRuntime, oa: TenantFixture,
                                                            sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    openid = await one_who_wrote(sim, oa.id)
    await (await runtime.client(oa.id, "oa")).access_token()  # the token is cached: the send is what fails
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    monkeypatch.setenv("WECHAT_API_BASE", f"http://127.0.0.1:{closed}/wechat-api")
    reset_settings()
    first = await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:refused")
    assert (first.state, first.reason) == ("retry", "unreachable")
    monkeypatch.undo()
    monkeypatch.setenv("SIYU_WECHAT_TIMEOUT_MS", str(QUICK_TIMEOUT_MS))
    reset_settings()
    assert (await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:refused")).state == "sent"
    assert len(sent_to(sim, openid)) == 1


async def test_busy_then_rate_limited_are_retried_with_wechats_wait(runtime: WeChatRuntime, oa: TenantFixture,
                                                                   sim: Simulator) -> None:
    openid = await one_who_wrote(sim, oa.id)
    await (await runtime.client(oa.id, "oa")).access_token()
    sim.faults(OA["app_id"], 45011)
    limited = await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:45011")
    assert (limited.state, limited.errcode, limited.retry_after) == ("retry", 45011, 60)
    sim.faults(OA["app_id"], -1, -1, -1)  # the client tries three times, then it is the job's turn
    busy = await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:45011")
    assert (busy.state, busy.errcode, busy.reason) == ("retry", -1, "busy")
    assert (await deliver_text(runtime, oa.id, "oa", openid, "您好", "reply:45011")).state == "sent"
    assert len(sent_to(sim, openid)) == 1


async def test_a_read_may_always_be_asked_again(runtime: WeChatRuntime, oa: TenantFixture, sim: Simulator) -> None:
    """Only sends are unknown after a timeout: a read that times out stays `busy`, which its callers retry."""
    openid = await one_who_wrote(sim, oa.id)
    client = await runtime.client(oa.id, "oa")
    await client.access_token()
    sim.faults(OA["app_id"], endpoint_latency_ms={"cgi-bin/user/info": LATE_MS})
    with pytest.raises(WeChatBusy) as busy:
        await client.user_info(openid)
    assert busy.value.retryable


async def test_the_sweeper_settles_what_dead_runs_left(runtime: WeChatRuntime, oa: TenantFixture,
                                                       sim: Simulator) -> None:
    """A run that asked WeChat and died: unknown (never sent again). One that claimed and died before
    asking: free for the next run, which sends it once. One left waiting for a retry nobody made: failed."""
    openid = await one_who_wrote(sim, oa.id)
    asked = await outbound._claim(oa.id, "oa", openid, "k:asked", "custom", {"text": "a"})
    never_asked = await outbound._claim(oa.id, "oa", openid, "k:never", "custom", {"text": "b"})
    waiting = await outbound._claim(oa.id, "oa", openid, "k:waiting", "custom", {"text": "c"})
    assert isinstance(asked, outbound._Claim) and isinstance(never_asked, outbound._Claim)
    assert isinstance(waiting, outbound._Claim)
    await outbound._mark_sending(asked)
    await outbound._finish(waiting, "retry", errcode=-1, reason="busy", errmsg="system error")
    assert await outbound.settle_stale() == outbound.Stale(0, 0, 0)  # all fresh: their runs may be alive
    await db.execute("UPDATE wechat_outbound SET claimed_at = now() - interval '1 hour', "
                     "attempted_at = CASE WHEN attempted_at IS NULL THEN NULL ELSE now() - interval '1 hour' END")
    assert await outbound.settle_stale() == outbound.Stale(unknown=1, freed=1, failed=1)
    assert await outbound.settle_stale() == outbound.Stale(0, 0, 0)
    states = {k: (await ledger(k))["state"] for k in ("k:asked", "k:never", "k:waiting")}
    assert states == {"k:asked": "unknown", "k:never": "retry", "k:waiting": "failed"}
    assert "system error" in (await ledger("k:waiting"))["errmsg"]  # the last reason is kept in words

    assert (await deliver_text(runtime, oa.id, "oa", openid, "a", "k:asked")).state == "unknown"
    assert (await deliver_text(runtime, oa.id, "oa", openid, "b", "k:never")).state == "sent"
    assert (await deliver_text(runtime, oa.id, "oa", openid, "c", "k:waiting")).state == "failed"
    assert [m["payload"]["text"]["content"] for m in sim.messages(app_id=OA["app_id"], to=openid)] == ["b"]


async def test_a_run_that_lost_its_claim_sends_nothing(runtime: WeChatRuntime, oa: TenantFixture,
                                                       sim: Simulator) -> None:
    """A run stalls after claiming; the sweeper frees the key, another run sends it. When the stalled run
    wakes up it can neither send nor change the row."""
    openid = await one_who_wrote(sim, oa.id)
    stalled = await outbound._claim(oa.id, "oa", openid, "k:stall", "custom", {"text": "x"})
    assert isinstance(stalled, outbound._Claim)
    await outbound.settle_stale(queued_after=0)
    assert (await deliver_text(runtime, oa.id, "oa", openid, "x", "k:stall")).state == "sent"
    late = await outbound._call(stalled, lambda client, on_send: client.send_text(openid, "x", on_send=on_send),
                                oa.id, "oa", runtime)
    assert late.duplicate and late.state == "sent"
    assert len(sent_to(sim, openid)) == 1
    assert (await outbound._finish(stalled, "failed", reason="busy")).state == "sent"
    assert (await ledger("k:stall"))["state"] == "sent"


async def test_a_send_the_sweeper_gave_up_on_as_unknown_still_learns_it_was_sent(oa: TenantFixture) -> None:
    claim = await outbound._claim(oa.id, "oa", "oX", "k:slow", "custom", {"text": "x"})
    assert isinstance(claim, outbound._Claim)
    await outbound._mark_sending(claim)
    await outbound.settle_stale(sending_after=0)
    assert (await ledger("k:slow"))["state"] == "unknown"
    assert (await outbound._finish(claim, "sent", msgid="m1")).state == "sent"
    assert (await outbound._finish(claim, "failed")).state == "sent"  # final stays final
    row = await ledger("k:slow")
    assert (row["state"], row["wechat_msgid"]) == ("sent", "m1")


async def test_giving_up_makes_a_never_sent_key_final(runtime: WeChatRuntime, oa: TenantFixture,
                                                      sim: Simulator) -> None:
    openid = await one_who_wrote(sim, oa.id)
    gone = await outbound.give_up(oa.id, "oa", openid, "k:lost", "custom", "the job was lost")
    assert (gone.state, gone.reason) == ("failed", "gave_up")
    assert (await deliver_text(runtime, oa.id, "oa", openid, "x", "k:lost")).state == "failed"
    sent = await deliver_text(runtime, oa.id, "oa", openid, "y", "k:sent")
    assert (await outbound.give_up(oa.id, "oa", openid, "k:sent", "custom", "late")).state == "sent"
    assert sent.state == "sent" and len(sent_to(sim, openid)) == 1


async def test_concurrent_sends_share_their_marks_and_outcomes_and_each_is_sent_once(
        runtime: WeChatRuntime, oa: TenantFixture, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six sends at once: their 'leaving now' marks and their outcomes are written together (one statement
    each), and every customer gets exactly one message with its own ledger row settled `sent`."""
    import asyncio

    openids = customers_who_wrote(sim, 6)
    for openid in openids:
        await windows.note_inbound(oa.id, "oa", openid, "message", datetime.now(UTC))
    await (await runtime.client(oa.id, "oa")).access_token()
    sizes = {"marks": batch_sizes(monkeypatch, outbound._marks),
             "outcomes": batch_sizes(monkeypatch, outbound._finishes)}
    got = await asyncio.gather(*(deliver_text(runtime, oa.id, "oa", o, "新品到店", f"together:{n}")
                                 for n, o in enumerate(openids)))
    assert [d.state for d in got] == ["sent"] * 6
    assert sum(sizes["marks"]) == 6 and sum(sizes["outcomes"]) == 6 and max(sizes["outcomes"]) > 1
    for n, openid in enumerate(openids):
        assert len(sent_to(sim, openid)) == 1
        row = await ledger(f"together:{n}")
        assert row["state"] == "sent" and row["sent_at"] is not None and row["attempted_at"] is not None


async def test_a_send_inside_a_callers_transaction_writes_in_it(runtime: WeChatRuntime, oa: TenantFixture,
                                                               sim: Simulator) -> None:
    """Inside an open transaction the ledger's writes are part of it (not handed to the shared writer), so a
    caller that rolls back leaves no row."""
    openid = await one_who_wrote(sim, oa.id)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with db.transaction():
            d = await deliver_text(runtime, oa.id, "oa", openid, "您好", "inside:1")
            assert d.state == "sent" and (await ledger("inside:1"))["state"] == "sent"
            raise Rollback
    assert await db.fetchrow("SELECT id FROM wechat_outbound WHERE idempotency_key = 'inside:1'") is None
