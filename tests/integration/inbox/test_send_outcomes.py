"""A reply is never delivered twice and never shows "sending" for good, whatever WeChat does: through the
real pipeline (simulator → gateway → jobs in a burst worker → simulator), with the simulator's injected
latency, token timeouts and errcodes. An answer that never came makes the message `unknown` ("may not
have been delivered"); only the rep sends it again (a new message, audited). The sweep settles what a
lost or dead job left."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.worker import Retry, Worker

from siyu import worker as worker_root
from siyu.core import db
from siyu.core.errors import Conflict, NotFound
from siyu.core.redis import JOB_SERIALIZATION
from siyu.core.settings import reset_settings
from siyu.inbox import actions
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_update_settings
from siyu.inbox.handoff import do_handoff
from siyu.tenants import services as tenants
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture, WebServer, signed_in
from tests.integration.contacts.test_enrich import World, world  # noqa: F401  (the fixture)
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import ACTOR, MakeRep, signed_in_as, viewer
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

SEND = "cgi-bin/message/custom/send"
# Generous against a loaded machine: a call that should answer has 3 s; a late answer comes 1.5 s after.
QUICK_TIMEOUT_MS = 3000
LATE_MS = 4500


async def run_jobs() -> int:
    """Burst workers until nothing is queued, deferred retries included (unlike `run_worker`, retries are
    allowed here); no job may fail. Returns how many tries were retried."""
    retried = 0
    while True:
        w = Worker(functions=worker_root.FUNCTIONS, redis_settings=worker_root.redis_settings(), burst=True,
                   **JOB_SERIALIZATION, handle_signals=False, poll_delay=0.05, max_jobs=10)
        await w.main()
        await w.close()
        assert w.jobs_failed == 0
        retried += w.jobs_retried
        if not w.jobs_complete and not w.jobs_retried:
            return retried


@pytest.fixture
def quick_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """WeChat calls give up after 3 s (default 10 s); each worker's runtime is made with it."""
    monkeypatch.setenv("SIYU_WECHAT_TIMEOUT_MS", str(QUICK_TIMEOUT_MS))
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
async def job_ctx(redis: Any) -> AsyncIterator[dict[str, Any]]:
    """A job's context as the worker gives it (its WeChat runtime made at startup)."""
    runtime = WeChatRuntime(redis)
    yield {"redis": redis, "wechat": runtime}
    await runtime.close()


@pytest.fixture
async def oa(acme: TenantFixture, sim: Simulator, web_server: WebServer) -> str:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    return link_both(sim, web_server, "oa", OA)


async def assigned_conversation(acme: TenantFixture, sim: Simulator, oa: str, rep: int, person: str = "dave",
                                notify: bool = False) -> dict[str, Any]:
    """A customer who wrote and asked for a person, now with `rep` (no customer notice unless `notify`)."""
    form = {"handoff_keywords": "人工", "unanswered_limit": "0", "sla_minutes": "5", "recent_days": "30"}
    await do_update_settings(acme.id, {**form, **({"notify_customer": "on"} if notify else {})}, ACTOR)
    openid = sim.push(oa, person, "follow")["openid"]
    sim.push(oa, person, "text", text="人工")
    await run_worker()
    row = await db.fetchrow("SELECT c.*, i.external_id FROM inbox_conversation c JOIN identity i ON i.id = c.identity "
                            "WHERE i.external_id = $1", openid)
    assert row["status"] == "assigned" and row["assignee"] == rep
    return dict(row)


async def message(message_id: int) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM inbox_message WHERE id = $1", message_id))


async def ledger(key: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM wechat_outbound WHERE idempotency_key = $1", key))


def copies(sim: Simulator, app_id: str, text: str, endpoint: str = SEND) -> int:
    return sum(text in str(m["payload"]) for m in sim.messages(app_id=app_id, endpoint=endpoint))


async def test_eleven_seconds_late_the_customer_has_one_copy_and_the_thread_says_it_may_not_have_arrived(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, client_factory: Any) -> None:
    """Regression: WeChat answered `message/custom/send` after 11 s, the client gave up after 10 s, the
    timeout was retried as "busy" and the customer received the reply again on every retry. Now: one
    copy, the ledger and the thread say it may not have been delivered, re-runs and the sweep send
    nothing, and the rep may send it again — once, as a new message, audited."""
    rep = await make_rep("Li Na")
    conv = await assigned_conversation(acme, sim, oa, rep)
    sim.faults(oa, endpoint_latency_ms={SEND: 11_000})  # the default client timeout (10 s) is shorter
    me = await viewer(acme.id, rep)
    message_id = await actions.do_reply(acme.id, me, conv["id"], "您的包裹今天送到")
    await run_jobs()

    assert copies(sim, oa, "您的包裹今天送到") == 1
    row = await ledger(f"inbox:msg:{message_id}")
    assert row["state"] == "unknown" and row["reason"] == "outcome_unknown" and row["attempts"] == 1
    sent = await message(message_id)
    assert (sent["status"], sent["error"], sent["outbound_id"]) == ("unknown", "outcome_unknown", row["id"])

    # The job again, the sweep (even long after): nothing more goes out.
    assert await inbox_jobs.send_message({}, acme.id, message_id) == "nothing to send"
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '1 hour' WHERE id = $1", message_id)
    await inbox_jobs.sweep({})
    await run_jobs()
    assert copies(sim, oa, "您的包裹今天送到") == 1
    assert (await message(message_id))["status"] == "unknown"

    page = await signed_in_as(client_factory, rep)
    url = f"/inbox/conversations/{conv['id']}"
    shown = (await page.get(url)).text
    assert "May not have been delivered" in shown and "WeChat did not answer in time" in shown
    assert f'action="/inbox/conversations/{conv["id"]}/messages/{message_id}/send-again' in shown
    zh = (await page.get(url, headers={"Accept-Language": "zh-CN"})).text
    assert "可能未送达" in zh and "再发一次" in zh

    sim.faults(oa, clear=True)
    again = await page.form(f"{url}/messages/{message_id}/send-again", htmx=True)
    assert again.status_code == 200, again.text
    assert "Sent again as a new message." in again.text
    twice = await page.form(f"{url}/messages/{message_id}/send-again", htmx=True)
    assert twice.status_code == 409  # a second press sends nothing more
    await run_jobs()
    [new] = await db.fetch("SELECT * FROM inbox_message WHERE body = '您的包裹今天送到' AND id <> $1", message_id)
    assert new["status"] == "sent" and (await message(message_id))["resent_as"] == new["id"]
    assert (await ledger(f"inbox:msg:{new['id']}"))["state"] == "sent"  # its own key
    assert copies(sim, oa, "您的包裹今天送到") == 2  # the second one because the rep chose it
    [audit] = await db.fetch("SELECT actor, target_id, changes FROM audit_log WHERE action = 'conversation.send_again'")
    assert (audit["actor"], audit["target_id"]) == (rep, str(conv["id"]))
    assert json.loads(audit["changes"]) == {"message": message_id, "new": new["id"], "type": "text"}


async def test_send_again_is_only_for_unknown_messages_in_scope(
        acme: TenantFixture, globex: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep,
        client_factory: Any, quick_timeout: None) -> None:
    rep = await make_rep("Li Na")
    conv = await assigned_conversation(acme, sim, oa, rep)
    other_conv = await assigned_conversation(acme, sim, oa, rep, person="erin")
    me = await viewer(acme.id, rep)
    delivered = await actions.do_reply(acme.id, me, conv["id"], "已送达的消息")
    await run_jobs()
    sim.faults(oa, endpoint_latency_ms={SEND: LATE_MS})
    late = await actions.do_reply(acme.id, me, conv["id"], "回答迟到的消息")
    await run_jobs()
    sim.faults(oa, clear=True)
    assert (await message(late))["status"] == "unknown"

    with pytest.raises(Conflict):
        await actions.do_send_again(acme.id, me, conv["id"], delivered)  # it was sent: nothing to choose
    url = f"/inbox/conversations/{conv['id']}/messages/{late}/send-again"
    missing = await (await signed_in(client_factory, globex.admin_email)).form(
        "/inbox/conversations/999999/messages/999999/send-again", htmx=True)
    assert missing.status_code == 404
    other_rep = await signed_in_as(client_factory, await make_rep("Wang Wu"))
    for outsider in (other_rep, await signed_in(client_factory, globex.admin_email)):
        foreign = await outsider.form(url, htmx=True)  # another rep's or another tenant's: like a missing one
        assert (foreign.status_code, foreign.text) == (404, missing.text)
    # Each id crossed on its own: a message of another conversation, in the rep's own conversation.
    page = await signed_in_as(client_factory, rep)
    crossed = await page.form(f"/inbox/conversations/{other_conv['id']}/messages/{late}/send-again", htmx=True)
    assert (crossed.status_code, crossed.text) == (404, missing.text)
    with pytest.raises(NotFound):
        await actions.do_send_again(acme.id, me, conv["id"], 10**12)
    plain = await page.form(url)  # without htmx: back to the conversation
    assert plain.status_code == 303 and plain.headers["location"].startswith(f"/inbox/conversations/{conv['id']}")
    await run_jobs()
    assert copies(sim, oa, "回答迟到的消息") == 2
    assert len(await db.fetch("SELECT id FROM audit_log WHERE action = 'conversation.send_again'")) == 1


async def test_a_token_endpoint_that_times_out_retries_the_reply_which_goes_once(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, redis: Any) -> None:
    """Regression: the token refresh timed out (here: 11 s against the default 10 s), the error killed the
    send job, and the reply showed "sending" for good. The send was never attempted, so the job tries
    again and it goes once."""
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    await redis.delete(*[k async for k in redis.scan_iter("siyu:wx:token:*")])  # the next send needs a token
    sim.faults(oa, token_timeouts=1, token_timeout_ms=11_000)
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "稍等，我查一下")
    assert await run_jobs() == 1  # one retry
    assert (await message(message_id))["status"] == "sent"
    assert copies(sim, oa, "稍等，我查一下") == 1
    row = await ledger(f"inbox:msg:{message_id}")
    assert (row["state"], row["attempts"]) == ("sent", 2)


async def test_errcode_minus_one_is_retried_and_the_reply_goes_once(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    sim.faults(oa, -1, -1, -1)  # the client's own two retries are not enough: the job tries again
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "系统繁忙后的回复")
    assert await run_jobs() == 1
    assert (await message(message_id))["status"] == "sent"
    assert copies(sim, oa, "系统繁忙后的回复") == 1
    assert [r["errcode"] for r in sim.refusals(app_id=oa, endpoint=SEND)] == [-1, -1, -1]


async def test_45011_is_retried_after_wechats_minute_and_a_second_run_sends_nothing(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, job_ctx: dict[str, Any]) -> None:
    """Regression: a rate limit was retried after 2 s although WeChat says "retry next minute"."""
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    await run_jobs()
    sim.faults(oa, 45011)
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "限流之后")
    with pytest.raises(Retry) as later:
        await inbox_jobs.send_message({**job_ctx, "job_try": 1}, acme.id, message_id)
    assert (later.value.defer_score or 0) >= 60_000
    row = await ledger(f"inbox:msg:{message_id}")
    assert (row["state"], row["errcode"]) == ("retry", 45011)
    assert (await message(message_id))["status"] == "sending"
    assert await inbox_jobs.send_message({**job_ctx, "job_try": 2}, acme.id, message_id) == "sent"
    assert await inbox_jobs.send_message({**job_ctx, "job_try": 3}, acme.id, message_id) == "nothing to send"
    assert copies(sim, oa, "限流之后") == 1


async def test_the_last_try_fails_the_message_with_the_reason_in_words(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, client_factory: Any,
        job_ctx: dict[str, Any]) -> None:
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    sim.faults(oa, -1, -1, -1)
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "总是繁忙")
    last = {**job_ctx, "job_try": inbox_jobs.SEND_TRIES}
    assert await inbox_jobs.send_message(last, acme.id, message_id) == "failed"
    failed = await message(message_id)
    assert (failed["status"], failed["error"]) == ("failed", "-1")
    row = await ledger(f"inbox:msg:{message_id}")
    assert (row["state"], row["reason"]) == ("failed", "gave_up")  # final: no later run sends it
    assert await inbox_jobs.send_message({**job_ctx, "job_try": 1}, acme.id, message_id) == "nothing to send"
    assert copies(sim, oa, "总是繁忙") == 0
    assert (await actions.window_for(acme.id, conv)).remaining == 5  # the window got its place back
    page = await signed_in_as(client_factory, rep)
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    assert "WeChat was busy." in shown and "Try again in a few seconds." in shown  # words and what to do
    assert f"/messages/{message_id}/send-again" in shown and ">Try again</button>" in shown  # busy: it can help

    # The rep tries again: a new message under a new ledger key (audited), and only once.
    tried = await page.form(f"/inbox/conversations/{conv['id']}/messages/{message_id}/send-again", {}, htmx=True)
    assert tried.status_code == 200, tried.text
    assert "Tried again as a new message." in tried.text
    again = await page.form(f"/inbox/conversations/{conv['id']}/messages/{message_id}/send-again", {}, htmx=True)
    assert again.status_code == 409
    [new] = await db.fetch("SELECT id, body, status FROM inbox_message WHERE id > $1 AND direction = 'out'",
                           message_id)
    assert (new["body"], new["status"]) == ("总是繁忙", "sending")
    assert (await message(message_id))["resent_as"] == new["id"]
    assert await inbox_jobs.send_message({**job_ctx, "job_try": 1}, acme.id, new["id"]) == "sent"
    assert copies(sim, oa, "总是繁忙") == 1
    audit = await db.fetch("SELECT action FROM audit_log WHERE action = 'conversation.try_again'")
    assert len(audit) == 1


async def test_a_refusal_that_stays_is_explained_and_not_offered_again(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, client_factory: Any,
        job_ctx: dict[str, Any]) -> None:
    """Regression: a reply WeChat refused showed "error 40096" (or another bare code) with nothing to do. Now
    each errcode reads in words with what to do, and "Try again" is offered only where it can help."""
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    sim.faults(oa, 43004)  # WeChat: the customer no longer follows
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "还在吗")
    assert await inbox_jobs.send_message(job_ctx, acme.id, message_id) == "failed"
    assert (await message(message_id))["error"] == "43004"
    page = await signed_in_as(client_factory, rep)
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    assert "The customer no longer follows the Official Account." in shown
    assert "reach them on another channel" in shown
    assert "error 43004" not in shown and ">Try again</button>" not in shown
    refused = await page.form(f"/inbox/conversations/{conv['id']}/messages/{message_id}/send-again", {}, htmx=True)
    assert refused.status_code == 409 and "Trying again cannot help" in refused.text
    assert await db.fetch("SELECT id FROM inbox_message WHERE id > $1", message_id) == []

    sim.faults(oa, 40096)  # a code the inbox had no words for
    other = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "再试")
    assert await inbox_jobs.send_message(job_ctx, acme.id, other) == "failed"
    shown = (await page.get(f"/inbox/conversations/{conv['id']}")).text
    assert "WeCom does not know this customer (the external_userid is not valid)." in shown
    assert "error 40096" not in shown


async def test_the_sweep_settles_a_reply_whose_worker_died_mid_call(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, job_ctx: dict[str, Any]) -> None:
    """Regression: a worker killed while WeChat held the request left the ledger pending (later unknown)
    and the message "sending" forever. The sweep makes both say unknown; nothing is sent again."""
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    sim.faults(oa, endpoint_latency_ms={SEND: 8000})
    message_id = await actions.do_reply(acme.id, await viewer(acme.id, rep), conv["id"], "进程中途退出")
    running = asyncio.create_task(inbox_jobs.send_message(job_ctx, acme.id, message_id))
    for _ in range(140):  # until WeChat has carried it out (its answer is still 8 s away)
        await asyncio.sleep(0.05)
        if copies(sim, oa, "进程中途退出"):
            break
    running.cancel()  # the worker dies here
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (await ledger(f"inbox:msg:{message_id}"))["state"] == "sending"
    sim.faults(oa, clear=True)
    await inbox_jobs.sweep({})
    await run_jobs()
    assert (await message(message_id))["status"] == "sending"  # too fresh: its run may still be alive
    await db.execute("UPDATE wechat_outbound SET attempted_at = now() - interval '10 minutes'")
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '10 minutes' WHERE id = $1", message_id)
    result = await inbox_jobs.sweep({})
    assert result["sends"] == 1
    await run_jobs()
    assert (await message(message_id))["status"] == "unknown"
    assert (await ledger(f"inbox:msg:{message_id}"))["state"] == "unknown"
    assert (await inbox_jobs.sweep({}))["sends"] == 0
    assert copies(sim, oa, "进程中途退出") == 1


async def test_the_sweep_sends_a_reply_whose_job_was_lost_once_and_gives_up_on_an_old_one(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, redis: Any) -> None:
    """Regression: a send job lost with Redis left its reply "sending" forever. A reply never sent is sent
    by the sweep (once, however often it runs); one never sent for half an hour fails instead (nothing
    went out), and then no job sends it."""
    rep = await make_rep()
    conv = await assigned_conversation(acme, sim, oa, rep)
    me = await viewer(acme.id, rep)
    lost = await actions.do_reply(acme.id, me, conv["id"], "丢失的任务")
    too_old = await actions.do_reply(acme.id, me, conv["id"], "太久的任务")
    await redis.flushdb()  # Redis lost its queue
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '5 minutes' WHERE id = $1", lost)
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '31 minutes' WHERE id = $1", too_old)
    for _ in range(2):
        await inbox_jobs.sweep({})
        await run_jobs()
    assert (await message(lost))["status"] == "sent" and copies(sim, oa, "丢失的任务") == 1
    failed = await message(too_old)
    assert (failed["status"], failed["error"]) == ("failed", "gave_up") and copies(sim, oa, "太久的任务") == 0
    assert await inbox_jobs.send_message({}, acme.id, too_old) == "nothing to send"


async def test_the_bots_reply_and_the_customer_notice_end_unknown_once(
        acme: TenantFixture, sim: Simulator, web_server: WebServer, make_rep: MakeRep, quick_timeout: None) -> None:
    """The bot's answer (Mini Program) and the "a person will answer you" notice are thread lines that
    mirror their sends too: a late answer leaves one copy and a line that says unknown."""
    from siyu.wechat.services import do_create_rule

    await make_rep("Zhao Liu")
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    mp = link_both(sim, web_server, "mp", MP, message_mode="safe", push_format="json")
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "发货",
                                          "reply": "下单后 48 小时内发货。"})
    await do_update_settings(acme.id, {"handoff_keywords": "人工", "unanswered_limit": "0", "sla_minutes": "5",
                                       "recent_days": "30", "notify_customer": "on"}, ACTOR)
    sim.push(mp, "dora", "text", text="你好")
    await run_jobs()
    await run_jobs()
    sim.faults(mp, endpoint_latency_ms={SEND: LATE_MS})
    sim.push(mp, "dora", "text", text="什么时候发货？")
    await run_jobs()
    sim.push(mp, "dora", "text", text="人工")
    await run_jobs()
    lines = await db.fetch("SELECT id, body, status, error, source_key FROM inbox_message WHERE author_label = 'bot' "
                           "ORDER BY id")
    assert [(r["source_key"].split(":")[0], r["status"], r["error"]) for r in lines] == [
        ("bot", "unknown", "outcome_unknown"), ("notice", "unknown", "outcome_unknown")]
    assert copies(sim, mp, "48 小时内发货") == 1 and len(sim.messages(app_id=mp, endpoint=SEND)) == 2
    sim.faults(mp, clear=True)
    asked = await db.fetchrow("SELECT id FROM inbox_message WHERE body = '什么时候发货？'")
    conv_id, ref = lines[1]["source_key"].split(":")[1:]
    assert await inbox_jobs.bot_reply({}, acme.id, asked["id"]) == "recorded before"
    assert await inbox_jobs.notify_customer({}, acme.id, int(conv_id), ref) == "recorded before"
    await db.execute("UPDATE inbox_message SET created_at = now() - interval '1 hour'")
    await inbox_jobs.sweep({})
    await run_jobs()
    assert len(sim.messages(app_id=mp, endpoint=SEND)) == 2


async def test_a_service_notice_answered_late_ends_unknown_once(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep, client_factory: Any,
        quick_timeout: None) -> None:
    rep = await make_rep("Li Na")
    conv = await assigned_conversation(acme, sim, oa, rep)
    await db.execute("UPDATE wechat_reply_window SET event_at = now() - interval '2 hours', user_msg_at = NULL")
    await do_update_settings(acme.id, {"notice_template_id": "TPL_service_01", "notice_text_key": "thing1",
                                       "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30"}, ACTOR)
    sim.faults(oa, endpoint_latency_ms={"cgi-bin/message/template/send": LATE_MS})
    page = await signed_in_as(client_factory, rep)
    url = f"/inbox/conversations/{conv['id']}"
    assert (await page.form(f"{url}/notice", {"text": "您的订单已发货"}, htmx=True)).status_code == 200
    await run_jobs()
    [notice] = await db.fetch("SELECT * FROM inbox_message WHERE msg_type = 'template'")
    assert notice["status"] == "unknown"
    assert await inbox_jobs.send_template_notice({}, acme.id, notice["id"]) == "nothing to send"
    assert len(sim.messages(app_id=oa, endpoint="cgi-bin/message/template/send")) == 1
    # Sent again the same way: a service notice, under a new key.
    sim.faults(oa, clear=True)
    assert (await page.form(f"{url}/messages/{notice['id']}/send-again", htmx=True)).status_code == 200
    await run_jobs()
    rows = await db.fetch("SELECT msg_type, status FROM inbox_message WHERE msg_type = 'template' ORDER BY id")
    assert [(r["msg_type"], r["status"]) for r in rows] == [("template", "unknown"), ("template", "sent")]
    assert len(sim.messages(app_id=oa, endpoint="cgi-bin/message/template/send")) == 2



async def test_a_wecom_task_answered_late_is_unknown_and_sent_again_through_the_same_rep(
        acme: TenantFixture, world: World, sim: Simulator, client_factory: Any, make_rep: MakeRep,  # noqa: F811
        quick_timeout: None) -> None:
    rep = await make_rep("Zhang San", wecom_userid="zhangsan")
    await world.wecom_push("gina", "add_contact", user_id="zhangsan", remark="Gina")
    await world.oa_push("gina", "follow")
    await run_worker()
    [oa_identity] = await db.fetch("SELECT id, contact FROM identity WHERE channel = 'oa'")
    conv = await do_handoff(acme.id, oa_identity["id"])
    await run_worker()
    [owner] = await db.fetch("SELECT id FROM owner")
    sim.faults(WECOM["corp_id"], endpoint_latency_ms={"cgi-bin/externalcontact/add_msg_template": LATE_MS})
    me = await viewer(acme.id, rep)
    task_id = await actions.do_send_via_owner(acme.id, me, conv["id"], owner["id"], "新品到了")
    await run_jobs()
    task = await message(task_id)
    assert (task["status"], task["via_owner"]) == ("unknown", owner["id"])
    assert len(sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])) == 1
    assert await inbox_jobs.send_owner_task({}, acme.id, task_id) == "nothing to send"

    sim.faults(WECOM["corp_id"], clear=True)
    again = await actions.do_send_again(acme.id, me, conv["id"], task_id)
    await run_jobs()
    resent = await message(again)
    assert (resent["status"], resent["msg_type"], resent["via_owner"]) == ("sent", "wecom_task", owner["id"])
    tasks = sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])
    assert len(tasks) == 2 and all(t["sender"] == "zhangsan" for t in tasks)
    with pytest.raises(Conflict):
        await actions.do_send_again(acme.id, me, conv["id"], task_id)
