"""A 1:1 message through the customer's WeCom rep (`add_msg_template`) is a task until the rep confirms it in the
WeCom client: the thread says "waiting for the rep to confirm", then "sent" or "not sent" and why, as Siyu learns
it from WeChat (`get_groupmsg_send_result`, asked by the wechat ledger's `owner_tasks` with a growing pause; the
simulator answers as WeChat does: 0 not sent yet, 1 sent, 2 no longer their contact, 3 the receive limit)."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.core import db, effects
from siyu.core.redis import arq_pool
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.handoff import do_handoff
from siyu.wechat import owner_tasks
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import WECOM, Client, TenantFixture
from tests.integration.contacts.test_enrich import World, world  # noqa: F401  (the fixture)
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import MakeRep, signed_in_as

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

RESULT = "cgi-bin/externalcontact/get_groupmsg_send_result"


async def _task_sent(acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any,  # noqa: F811
                     person: str = "gina") -> tuple[Client, int, int, dict[str, Any]]:
    """A rep writes through the owner's WeCom while the reply window is closed; the task is created. Returns the
    rep's page, the conversation, the message and the simulator's task."""
    rep = await make_rep("Zhang San", wecom_userid="zhangsan")
    await world.wecom_push(person, "add_contact", user_id="zhangsan", remark=person)
    await world.oa_push(person, "follow")
    await run_worker()
    oa = await db.fetchrow("SELECT id, contact FROM identity WHERE tenant = $1 AND channel = 'oa'", acme.id)
    owner = await db.fetchrow("SELECT id FROM owner WHERE tenant = $1 AND contact = $2", acme.id, oa["contact"])
    conv = await do_handoff(acme.id, oa["id"])
    await run_worker()
    await db.execute("UPDATE wechat_reply_window SET event_at = now() - interval '2 hours', user_msg_at = NULL")
    page = await signed_in_as(client_factory, rep)
    asked = await page.form(f"/inbox/conversations/{conv['id']}/wecom-task",
                            {"owner": str(owner["id"]), "text": "新品到了，给您留了一件"}, htmx=True)
    assert asked.status_code == 200, asked.text
    await run_worker()
    [message] = await db.fetch("SELECT id, status, delivery FROM inbox_message WHERE msg_type = 'wecom_task'")
    assert (message["status"], message["delivery"]) == ("sent", "waiting")
    [task] = world.sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])
    return page, int(conv["id"]), int(message["id"]), task


async def _ask_when_due() -> None:
    """Time passes until the next question is due; the inbox's sweep asks it (a job per task)."""
    await db.execute("UPDATE wechat_outbound SET task_next_check_at = now() WHERE task_state = 'waiting'")
    await inbox_jobs.sweep({})  # its jobs go through the effects pool the inbox fixtures install
    await effects.flush()
    await run_worker()


async def _ledger(message_id: int) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM wechat_outbound WHERE idempotency_key = $1",
                                  f"inbox:task:{message_id}"))


async def test_the_thread_follows_a_task_from_waiting_to_sent(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    page, conv, message_id, task = await _task_sent(acme, world, make_rep, client_factory)
    url = f"/inbox/conversations/{conv}"
    assert "Waiting for Zhang San to confirm it in WeCom" in (await page.get(url)).text
    row = await _ledger(message_id)
    assert row["task_state"] == "waiting" and row["task_next_check_at"] is not None  # first question in 30 s
    await _ask_when_due()  # the rep has not confirmed yet
    row = await _ledger(message_id)
    assert (row["task_state"], row["task_checks"]) == ("waiting", 1)
    assert (row["task_next_check_at"] - row["task_checked_at"]).total_seconds() >= 29  # a pause before the next
    assert "Waiting for Zhang San to confirm it in WeCom" in (await page.get(url)).text

    world.sim._post(f"/_sim/wecom/tasks/{task['msgid']}/confirm", {})  # the rep sends it from WeCom
    await _ask_when_due()
    [message] = await db.fetch("SELECT delivery, error FROM inbox_message WHERE id = $1", message_id)
    assert (message["delivery"], message["error"]) == ("delivered", "")
    shown = (await page.get(url)).text
    assert "Sent by Zhang San through WeCom" in shown and "Waiting for Zhang San" not in shown
    row = await _ledger(message_id)
    assert (row["task_state"], row["task_next_check_at"]) == ("sent", None) and row["task_sent_at"] is not None

    # Settled: asking again (a re-run, another domain polling the same key) answers from the ledger.
    asked = world.sim.stats()["calls"].get(f"wecom-api/{RESULT}", 0)
    runtime = WeChatRuntime(await arq_pool())
    try:
        result = await owner_tasks.poll_owner_task(runtime, acme.id, f"inbox:task:{message_id}")
        assert result is not None and result.status == "sent"
        assert await inbox_jobs.check_owner_task({"wechat": runtime}, acme.id, message_id) == "nothing to ask"
        assert await owner_tasks.poll_owner_task(runtime, acme.id, "inbox:msg:1") is None  # not a task
    finally:
        await runtime.close()
    assert world.sim.stats()["calls"].get(f"wecom-api/{RESULT}", 0) == asked
    await _ask_when_due()
    assert world.sim.stats()["calls"].get(f"wecom-api/{RESULT}", 0) == asked  # nothing is due any more


async def test_a_task_the_rep_never_confirms_ends_as_not_sent_after_three_days(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    page, conv, message_id, _ = await _task_sent(acme, world, make_rep, client_factory)
    await _ask_when_due()
    assert (await _ledger(message_id))["task_state"] == "waiting"
    await db.execute("UPDATE wechat_outbound SET sent_at = now() - interval '3 days 1 minute' "
                     "WHERE idempotency_key = $1", f"inbox:task:{message_id}")
    await _ask_when_due()
    [message] = await db.fetch("SELECT delivery, error FROM inbox_message WHERE id = $1", message_id)
    assert (message["delivery"], message["error"]) == ("not_delivered", "rep_did_not_confirm")
    shown = (await page.get(f"/inbox/conversations/{conv}")).text
    assert "Not sent: The rep did not send the task in WeCom within 3 days" in shown
    assert "group-message assistant" in shown  # what to do


@pytest.mark.parametrize(("before_confirming", "reason", "words"), [
    ("del_follow_user", "not_their_contact", "is not (or no longer) a contact of that rep"),
    ("limit", "receive_limit", "reps this month as WeCom allows"),
])
async def test_a_task_that_cannot_reach_the_customer_says_why(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any,  # noqa: F811
        before_confirming: str, reason: str, words: str) -> None:
    page, conv, message_id, task = await _task_sent(acme, world, make_rep, client_factory)
    if before_confirming == "limit":  # the customer already had this month's corp mass messages
        world.sim._post("/_sim/people", {"app_id": WECOM["corp_id"], "people": ["gina"], "user_id": "zhangsan",
                                         "mass_received_this_month": 31})
    else:  # the customer deleted the rep
        world.sim.push(WECOM["corp_id"], "gina", "del_follow_user", user_id="zhangsan")
    world.sim._post(f"/_sim/wecom/tasks/{task['msgid']}/confirm", {})
    await _ask_when_due()
    [message] = await db.fetch("SELECT delivery, error FROM inbox_message WHERE id = $1", message_id)
    assert (message["delivery"], message["error"]) == ("not_delivered", reason)
    assert words in (await page.get(f"/inbox/conversations/{conv}")).text


async def test_wechat_busy_while_asking_puts_the_question_off(
        acme: TenantFixture, world: World, make_rep: MakeRep, client_factory: Any) -> None:  # noqa: F811
    _, _, message_id, task = await _task_sent(acme, world, make_rep, client_factory)
    world.sim._post(f"/_sim/wecom/tasks/{task['msgid']}/confirm", {})
    world.sim.faults(WECOM["corp_id"], -1, -1, -1)  # busy on every try of one question
    await _ask_when_due()
    row = await _ledger(message_id)
    assert (row["task_state"], row["task_checks"]) == ("waiting", 1)
    assert (row["task_next_check_at"] - row["task_checked_at"]).total_seconds() >= 29
    await _ask_when_due()  # WeChat answers again
    assert (await _ledger(message_id))["task_state"] == "sent"
    [message] = await db.fetch("SELECT delivery FROM inbox_message WHERE id = $1", message_id)
    assert message["delivery"] == "delivered"
