"""The outbound client against the WeChat simulator: one shared token for 50 concurrent sends, one
refresh after a mid-run 40001, WeChat's errcodes as typed outcomes, and sending at most once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from siyu.tenants import services as tenants
from siyu.wechat import windows
from siyu.wechat.client import (
    WeChatBusy,
    WeChatConfigProblem,
    WeChatNotAllowed,
    WeChatRateLimited,
)
from siyu.wechat.outbound import WeChatRuntime, deliver_text
from siyu.wechat.tables import Outbound
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture


@pytest.fixture
async def runtime(redis: Any) -> Any:
    rt = WeChatRuntime(redis)
    yield rt
    await rt.close()


@pytest.fixture
async def oa(acme: TenantFixture, sim: Simulator) -> TenantFixture:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", OA)
    sim.register("oa", OA["app_id"], OA["app_secret"], token=OA["token"], aes_key=OA["aes_key"])
    return acme


def customers_who_wrote(sim: Simulator, count: int, prefix: str = "p") -> list[str]:
    """People who follow and wrote to the OA (no callback URL: the simulator only changes its state)."""
    openids = []
    for i in range(count):
        sim.push(OA["app_id"], f"{prefix}{i}", "follow")
        openids.append(sim.push(OA["app_id"], f"{prefix}{i}", "text", text="你好")["openid"])
    return openids


async def test_fifty_concurrent_sends_cost_one_token_fetch_and_a_40001_one_refresh(
        runtime: Any, oa: TenantFixture, sim: Simulator) -> None:
    openids = customers_who_wrote(sim, 50)
    client = await runtime.client(oa.id, "oa")
    await asyncio.gather(*[client.send_text(o, "新品上市") for o in openids])
    assert sim.stats()["token_fetches"][OA["app_id"]] == 1
    assert len(sim.messages(app_id=OA["app_id"], endpoint="cgi-bin/message/custom/send")) == 50

    sim.tokens(OA["app_id"], "invalidate")  # WeChat drops the token mid-run
    other = await runtime.client(oa.id, "oa")  # another process's client: the token is shared via Redis
    await asyncio.gather(*[(client if i % 2 else other).send_text(o, "第二条") for i, o in enumerate(openids)])
    assert sim.stats()["token_fetches"][OA["app_id"]] == 2  # exactly one refresh for the 50 calls
    assert len(sim.messages(app_id=OA["app_id"], endpoint="cgi-bin/message/custom/send")) == 100


async def test_an_expired_token_is_refreshed_once(runtime: Any, oa: TenantFixture, sim: Simulator) -> None:
    [openid] = customers_who_wrote(sim, 1)
    client = await runtime.client(oa.id, "oa")
    await client.send_text(openid, "one")
    sim.tokens(OA["app_id"], "expire")
    await client.send_text(openid, "two")
    assert sim.stats()["token_fetches"][OA["app_id"]] == 2


async def test_busy_is_retried_with_backoff_then_surfaced(runtime: Any, oa: TenantFixture, sim: Simulator) -> None:
    [openid] = customers_who_wrote(sim, 1)
    client = await runtime.client(oa.id, "oa")
    await client.access_token()
    sim.faults(OA["app_id"], -1)
    await client.send_text(openid, "after one busy")  # retried, then accepted
    sim.faults(OA["app_id"], -1, -1, -1)
    with pytest.raises(WeChatBusy):
        await client.send_text(openid, "stays busy")
    assert [m["payload"]["text"]["content"] for m in sim.messages(app_id=OA["app_id"], to=openid)] == [
        "after one busy"]


@pytest.mark.parametrize(("errcode", "retry_after_at_least"), [(45011, 60), (45009, 60)])
async def test_rate_limits_become_retry_later(runtime: Any, oa: TenantFixture, sim: Simulator, errcode: int,
                                              retry_after_at_least: int) -> None:
    [openid] = customers_who_wrote(sim, 1)
    client = await runtime.client(oa.id, "oa")
    await client.access_token()
    sim.faults(OA["app_id"], errcode)
    with pytest.raises(WeChatRateLimited) as info:
        await client.send_text(openid, "x")
    assert info.value.errcode == errcode and info.value.retry_after >= retry_after_at_least
    assert info.value.retryable


async def test_window_rules_become_not_allowed_and_are_never_retried(runtime: Any, oa: TenantFixture,
                                                                     sim: Simulator) -> None:
    sim.push(OA["app_id"], "silent", "follow")
    follower = sim.push(OA["app_id"], "silent", "text", text="hi")["openid"]
    client = await runtime.client(oa.id, "oa")
    for i in range(5):
        await client.send_text(follower, f"reply {i}")
    with pytest.raises(WeChatNotAllowed) as info:
        await client.send_text(follower, "sixth")
    assert info.value.errcode == 45047 and info.value.reason == "quota_used" and not info.value.retryable
    sim.clock(48 * 3600 + 1)
    with pytest.raises(WeChatNotAllowed) as info:
        await client.send_text(follower, "too late")
    assert info.value.errcode == 45015 and info.value.reason == "window_closed"
    # Each refusal reached WeChat once: nothing was retried.
    refused = [r["errcode"] for r in sim.refusals(app_id=OA["app_id"], to=follower)]
    assert [c for c in refused if c != 42001] == [45047, 45015]  # 42001: the 48 h jump also expired the token


async def test_configuration_problems_are_typed(runtime: Any, oa: TenantFixture, sim: Simulator) -> None:
    sim.faults(OA["app_id"], ip_whitelisted=False)
    client = await runtime.client(oa.id, "oa")
    with pytest.raises(WeChatConfigProblem) as info:
        await client.access_token()
    assert info.value.errcode == 40164


async def test_mini_program_login_code(runtime: Any, acme: TenantFixture, sim: Simulator) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "mp", MP)
    sim.register("mp", MP["app_id"], MP["app_secret"], open_platform="acme")
    code = sim.push(MP["app_id"], "alice", "mp_login")["code"]
    client = await runtime.client(acme.id, "mp")
    session = await client.code_to_session(code)
    assert session["openid"] and session["session_key"] and session["unionid"]
    from siyu.core.errors import WeChatError

    with pytest.raises(WeChatError) as info:
        await client.code_to_session(code)  # codes work once
    assert info.value.errcode == 40163


# --- sending at most once, inside the windows ------------------------------------------------------

async def test_deliver_sends_once_per_key_and_knows_the_window_before_wechat(runtime: Any, oa: TenantFixture,
                                                                            sim: Simulator) -> None:
    [openid] = customers_who_wrote(sim, 1)
    from datetime import UTC, datetime

    await windows.note_inbound(oa.id, "oa", openid, "message", datetime.now(UTC))
    first = await deliver_text(runtime, oa.id, "oa", openid, "您好，我是客服小王", "reply:1")
    again = await deliver_text(runtime, oa.id, "oa", openid, "您好，我是客服小王", "reply:1")  # a job's second run
    assert first.state == "sent" and again.duplicate and again.state == "sent"
    assert len(sim.messages(app_id=OA["app_id"], to=openid)) == 1
    for i in range(2, 6):
        assert (await deliver_text(runtime, oa.id, "oa", openid, f"#{i}", f"reply:{i}")).state == "sent"
    sixth = await deliver_text(runtime, oa.id, "oa", openid, "#6", "reply:6")
    assert sixth.state == "failed" and sixth.errcode == 45047
    assert sim.refusals(app_id=OA["app_id"]) == []  # Siyu knew: WeChat was never asked
    assert await Outbound.count() == 6


async def test_deliver_to_someone_who_never_wrote_is_refused_without_calling_wechat(
        runtime: Any, oa: TenantFixture, sim: Simulator) -> None:
    r = await deliver_text(runtime, oa.id, "oa", "oNeverWrote", "hello?", "cold:1")
    assert r.state == "failed" and r.errcode == 45015 and r.reason == "window_closed"
    assert sim.stats()["calls"].get("wechat-api/cgi-bin/message/custom/send", 0) == 0


async def test_busy_leaves_the_message_retryable_and_the_retry_sends_it_once(runtime: Any, oa: TenantFixture,
                                                                             sim: Simulator) -> None:
    [openid] = customers_who_wrote(sim, 1)
    from datetime import UTC, datetime

    await windows.note_inbound(oa.id, "oa", openid, "message", datetime.now(UTC))
    client = await runtime.client(oa.id, "oa")
    await client.access_token()
    sim.faults(OA["app_id"], -1, -1, -1)
    first = await deliver_text(runtime, oa.id, "oa", openid, "重要通知", "notice:1")
    assert first.state == "retry"
    assert (await windows.state(oa.id, "oa", openid)).remaining == 5  # the slot was given back
    second = await deliver_text(runtime, oa.id, "oa", openid, "重要通知", "notice:1")
    assert second.state == "sent" and not second.duplicate
    third = await deliver_text(runtime, oa.id, "oa", openid, "重要通知", "notice:1")
    assert third.duplicate
    assert len(sim.messages(app_id=OA["app_id"], to=openid)) == 1


async def test_wecom_kf_messages_are_synced_once_with_the_cursor_kept(runtime: Any, acme: TenantFixture,
                                                                      sim: Simulator, redis: Any) -> None:

    from siyu.core.redis import arq_pool
    from siyu.wechat.jobs import kf_sync
    from siyu.wechat.tables import InboundEvent, KfCursor

    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "wecom", WECOM)
    sim.register("wecom", WECOM["corp_id"], WECOM["secret"], token=WECOM["token"], aes_key=WECOM["aes_key"],
                 open_kfids=["wkShop"])
    pushes = [sim.push(WECOM["corp_id"], f"c{i}", "kf_text", text=f"问题 {i}", open_kfid="wkShop") for i in range(3)]
    pool = await arq_pool()
    ctx = {"redis": pool, "wechat": runtime}
    try:
        stored = await kf_sync(ctx, acme.id, None, "wkShop", pushes[-1]["kf_token"])
        assert stored == 3
        assert await kf_sync(ctx, acme.id, None, "wkShop", pushes[-1]["kf_token"]) == 0  # the cursor moved on
        cursor = (await KfCursor.select(KfCursor.cursor).first())["cursor"]
        assert cursor
        more = sim.push(WECOM["corp_id"], "c0", "kf_text", text="还在吗？", open_kfid="wkShop")
        assert await kf_sync(ctx, acme.id, None, "wkShop", more["kf_token"]) == 1
    finally:
        await pool.aclose()
    rows = await InboundEvent.select(InboundEvent.kind, InboundEvent.external_id, InboundEvent.payload).where(
        InboundEvent.channel == "wecom").output(load_json=True)
    assert sorted(r["payload"]["details"]["Content"] for r in rows) == sorted(["问题 0", "问题 1", "问题 2", "还在吗？"])
    assert {r["kind"] for r in rows} == {"message"}
    assert all(r["external_id"].startswith("wm") for r in rows)
