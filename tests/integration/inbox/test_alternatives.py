"""When WeChat's reply window is closed, the composer's legal alternatives that Siyu carries out itself: a
1:1 message through the WeCom rep who added the customer (`add_msg_template`, a task the rep confirms in
the WeCom app), and the Official Account's service-notice template. Through the real pipeline: the
simulator's people share one unionid across the Official Account and WeCom, so the customer is one
contact with an owner."""

from __future__ import annotations

import json
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.redis import arq_pool
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_update_settings
from siyu.inbox.handoff import do_handoff
from siyu.tenants import services as tenants
from siyu.wechat import consents
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture, WebServer
from tests.integration.contacts.test_enrich import World, world  # noqa: F401  (the fixture)
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import ACTOR, MakeRep, signed_in_as
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def _identity(tenant_id: int, channel: str) -> dict[str, Any]:
    [row] = await db.fetch("SELECT * FROM identity WHERE tenant = $1 AND channel = $2", tenant_id, channel)
    return dict(row)


async def test_a_rep_writes_through_the_owners_wecom_when_the_window_is_closed(
        acme: TenantFixture, world: World, sim: Simulator, client_factory: Any, make_rep: MakeRep) -> None:  # noqa: F811
    rep = await make_rep("Zhang San", wecom_userid="zhangsan")
    added = await world.wecom_push("gina", "add_contact", user_id="zhangsan", remark="Gina")
    await world.oa_push("gina", "follow")
    await run_worker()
    oa, wecom = await _identity(acme.id, "oa"), await _identity(acme.id, "wecom")
    assert oa["contact"] == wecom["contact"]  # one person: the unionid joined them
    [owner] = await contacts.owners_of(acme.id, oa["contact"])
    conv = await do_handoff(acme.id, oa["id"])
    assert conv["assignee"] == rep  # the owner rule
    await run_worker()
    # The follow's short window has passed: WeChat would refuse a customer-service message now.
    await db.execute("UPDATE wechat_reply_window SET event_at = now() - interval '2 hours', user_msg_at = NULL")

    page = await signed_in_as(client_factory, rep)
    shown = await page.get(f"/inbox/conversations/{conv['id']}")
    assert shown.status_code == 200
    assert "Replies are blocked" in shown.text
    assert "Send the text in the reply box below through Zhang San's WeCom" in shown.text
    assert f'data-owner="{owner["id"]}"' in shown.text

    blocked = await page.form(f"/inbox/conversations/{conv['id']}/reply", {"text": "新品到了"}, htmx=True)
    assert blocked.status_code == 409  # the plain reply stays refused
    asked = await page.form(f"/inbox/conversations/{conv['id']}/wecom-task",
                            {"owner": str(owner["id"]), "text": "新品到了，给您留了一件"}, htmx=True)
    assert asked.status_code == 200, asked.text
    assert "1:1 via WeCom" in asked.text
    await run_worker()

    [task] = sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])
    assert task["sender"] == "zhangsan" and task["external_userid"] == [added["external_userid"]]
    assert task["payload"]["text"]["content"] == "新品到了，给您留了一件" and task["status"] == "pending"
    [message] = await db.fetch("SELECT * FROM inbox_message WHERE msg_type = 'wecom_task'")
    assert (message["status"], message["author_label"], message["direction"]) == ("sent", "Zhang San", "out")
    shown = await page.get(f"/inbox/conversations/{conv['id']}")
    assert "Waiting for Zhang San to confirm it in WeCom" in shown.text
    out = await db.fetch("SELECT payload FROM timeline_event WHERE kind = 'message_out' AND channel = 'wecom'")
    assert len(out) == 1 and '"via": "wecom_task"' in out[0]["payload"]
    audit = await db.fetch("SELECT action FROM audit_log WHERE action = 'conversation.wecom_task'")
    assert len(audit) == 1

    # Run the job again: no second task.
    pool = await arq_pool()
    try:
        assert await inbox_jobs.send_owner_task({"redis": pool}, acme.id, message["id"], owner["id"]) == "nothing to send"
    finally:
        await pool.aclose()
    assert len(sim._get("/_sim/wecom/tasks", app_id=WECOM["corp_id"])) == 1
    # The rep confirms it in WeCom: now it reaches the customer.
    sim._post(f"/_sim/wecom/tasks/{task['msgid']}/confirm", {})
    assert len(sim.messages(app_id=WECOM["corp_id"], endpoint="cgi-bin/externalcontact/add_msg_template")) == 1

    # Someone else's owner, a missing owner, no text: refused with the field named, nothing written.
    await world.wecom_push("hank", "add_contact", user_id="zhangsan")
    await run_worker()
    other = await db.fetchrow("SELECT id FROM owner WHERE contact <> $1", oa["contact"])
    for data in ({"owner": str(other["id"]), "text": "hi"}, {"owner": "x", "text": "hi"},
                 {"owner": str(owner["id"]), "text": "  "}):
        bad = await page.form(f"/inbox/conversations/{conv['id']}/wecom-task", data, htmx=True)
        assert bad.status_code == 400, (data, bad.text)
    assert len(await db.fetch("SELECT id FROM inbox_message WHERE msg_type = 'wecom_task'")) == 1
    assert OA["app_id"]  # the OA conversation stayed where it was
    assert (await db.fetchrow("SELECT status FROM inbox_conversation WHERE id = $1", conv["id"]))["status"] == "assigned"


async def test_a_rep_sends_a_service_notice_template_when_the_window_is_closed(
        acme: TenantFixture, sim: Simulator, web_server: WebServer, client_factory: Any, make_rep: MakeRep) -> None:
    rep = await make_rep("Li Na")
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    oa = link_both(sim, web_server, "oa", OA)
    sim.push(oa, "ivy", "follow")
    await run_worker()
    conv = await do_handoff(acme.id, (await _identity(acme.id, "oa"))["id"])
    await run_worker()
    await db.execute("UPDATE wechat_reply_window SET event_at = now() - interval '2 hours', user_msg_at = NULL")
    page = await signed_in_as(client_factory, rep)
    url = f"/inbox/conversations/{conv['id']}"

    # No template set yet: the pane says who can set it, and the service refuses before writing anything.
    assert "Service notices need the Official Account's template" in (await page.get(url)).text
    unset = await page.form(f"{url}/notice", {"text": "您的订单已发货"}, htmx=True)
    assert unset.status_code == 409 and "No service-notice template yet" in unset.text
    with pytest.raises(InvalidInput) as bad:
        await do_update_settings(acme.id, {"notice_template_id": "not a template!", "notice_text_key": "thing1"}, ACTOR)
    assert bad.value.errors[0].field == "notice_template_id"
    with pytest.raises(InvalidInput) as same:
        await do_update_settings(acme.id, {"notice_template_id": "TPL_service_01", "notice_text_key": "thing1",
                                           "notice_time_key": "thing1"}, ACTOR)
    assert same.value.errors[0].field == "notice_time_key"
    await do_update_settings(acme.id, {"notice_template_id": "TPL_service_01", "notice_text_key": "thing1",
                                       "notice_time_key": "time2", "unanswered_limit": "3", "sla_minutes": "5",
                                       "recent_days": "30", "notify_customer": "on"}, ACTOR)

    assert "as a service notice (template, up to 20 characters)" in (await page.get(url)).text
    too_long = await page.form(f"{url}/notice", {"text": "这是一条超过二十个字符的服务通知内容，模板装不下"}, htmx=True)
    assert too_long.status_code == 400 and "1 to 20 characters" in too_long.text
    sent = await page.form(f"{url}/notice", {"text": "您的订单已发货"}, htmx=True)
    assert sent.status_code == 200, sent.text
    await run_worker()
    [template] = sim.messages(app_id=oa, endpoint="cgi-bin/message/template/send")
    body = template["payload"]
    assert body["template_id"] == "TPL_service_01" and body["data"]["thing1"] == {"value": "您的订单已发货"}
    assert len(body["data"]["time2"]["value"]) == len("2026-11-21 12:00")
    [message] = await db.fetch("SELECT * FROM inbox_message WHERE msg_type = 'template'")
    assert message["status"] == "sent"
    assert "Service notice" in (await page.get(url)).text
    pool = await arq_pool()
    try:
        assert await inbox_jobs.send_template_notice({"redis": pool}, acme.id, message["id"]) == "nothing to send"
    finally:
        await pool.aclose()
    assert len(sim.messages(app_id=oa, endpoint="cgi-bin/message/template/send")) == 1

    # The customer unfollows: WeChat refuses (43004) and the thread says why in words.
    sim.push(oa, "ivy", "unfollow")
    await run_worker()
    await page.form(f"{url}/notice", {"text": "还在吗"}, htmx=True)
    await run_worker()
    failed = await db.fetchrow("SELECT status, error FROM inbox_message WHERE msg_type = 'template' AND body = '还在吗'")
    assert (failed["status"], failed["error"]) == ("failed", "43004")
    assert "The customer no longer follows the Official Account." in (await page.get(url)).text


async def test_a_mini_program_subscription_message_uses_the_customers_counted_consents(
        acme: TenantFixture, sim: Simulator, web_server: WebServer, client_factory: Any, make_rep: MakeRep) -> None:
    rep = await make_rep("Chen Jing")
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    mp = link_both(sim, web_server, "mp", MP, message_mode="safe", push_format="json")
    sim.push(mp, "jack", "text", text="你好")
    await run_worker()
    conv = await do_handoff(acme.id, (await _identity(acme.id, "mp"))["id"])
    assert conv["assignee"] == rep
    await run_worker()
    await db.execute("UPDATE wechat_reply_window SET event_at = NULL, user_msg_at = now() - interval '3 days'")
    await do_update_settings(acme.id, {"mp_notice_template_id": "TPL_mp_sub_01", "mp_notice_text_key": "thing1",
                                       "mp_notice_time_key": "time3", "unanswered_limit": "3", "sla_minutes": "5",
                                       "recent_days": "30"}, ACTOR)
    page = await signed_in_as(client_factory, rep)
    url = f"/inbox/conversations/{conv['id']}"

    # No consent yet: the pane says so and the service refuses before writing anything.
    assert "this customer has no consent left" in (await page.get(url)).text
    refused = await page.form(f"{url}/notice", {"text": "您关注的商品到货了"}, htmx=True)
    assert refused.status_code == 409 and "no consent left" in refused.text
    assert await db.fetch("SELECT id FROM inbox_message WHERE msg_type = 'subscribe'") == []

    # The customer allows it twice (and turns another template down): two consents, counted once each.
    sim.push(mp, "jack", "subscribe_consent", accept="TPL_mp_sub_01")
    sim.push(mp, "jack", "subscribe_consent", accept="TPL_mp_sub_01", reject="TPL_other")
    await run_worker()
    openid = (await _identity(acme.id, "mp"))["external_id"]
    assert await consents.remaining(acme.id, "mp", openid, "TPL_mp_sub_01") == 2
    stored = await db.fetch("SELECT id, tenant, channel, external_id, payload FROM wechat_inbound_event "
                            "WHERE kind = 'subscription_consent'")
    assert await consents.note_inbound([{**dict(r), "payload": json.loads(r["payload"])} for r in stored]) == 0
    assert await consents.remaining(acme.id, "mp", openid, "TPL_mp_sub_01") == 2

    assert "2 consent(s) left" in (await page.get(url)).text
    sent = await page.form(f"{url}/notice", {"text": "您关注的商品到货了"}, htmx=True)
    assert sent.status_code == 200, sent.text
    await run_worker()
    [message] = sim.messages(app_id=mp, endpoint="cgi-bin/message/subscribe/send")
    assert message["payload"]["template_id"] == "TPL_mp_sub_01"
    assert message["payload"]["data"]["thing1"] == {"value": "您关注的商品到货了"} and "time3" in message["payload"]["data"]
    assert await consents.remaining(acme.id, "mp", openid, "TPL_mp_sub_01") == 1
    assert "Subscription message" in (await page.get(url)).text

    # Siyu's count says 5 where WeChat has 1 left: the second send goes, the third is refused with 43101,
    # and the count follows WeChat (none left) instead of trying again.
    await db.execute("UPDATE wechat_subscribe_consent SET remaining = 5")
    for text in ("第二条", "第三条"):
        await page.form(f"{url}/notice", {"text": text}, htmx=True)
        await run_worker()
    states = [(r["body"], r["status"], r["error"]) for r in await db.fetch(
        "SELECT body, status, error FROM inbox_message WHERE msg_type = 'subscribe' ORDER BY id")]
    assert states == [("您关注的商品到货了", "sent", ""), ("第二条", "sent", ""), ("第三条", "failed", "43101")]
    assert await consents.remaining(acme.id, "mp", openid, "TPL_mp_sub_01") == 0
    assert "The customer has not agreed to receive this message." in (await page.get(url)).text
