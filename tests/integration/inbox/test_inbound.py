"""From a customer's message to a rep's reply, through the real pipeline: the simulator pushes signed,
encrypted callbacks to a live Siyu server; the jobs (gateway batch → contacts → inbox) run in a worker;
handoff triggers, the bot's unanswered count, the customer notice, replies through the send-once ledger
inside WeChat's reply windows (at their edges), and re-runs that change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.core import db
from siyu.core.errors import Conflict, InvalidInput
from siyu.core.redis import arq_pool
from siyu.inbox import actions
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.config import do_update_settings
from siyu.inbox.handoff import handle_inbound
from siyu.tenants import services as tenants
from siyu.wechat.services import do_create_rule
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, WECOM, Simulator, TenantFixture, WebServer
from tests.integration.contacts.test_inbound import run_worker
from tests.integration.inbox.conftest import ACTOR, MakeRep, viewer
from tests.integration.wechat.test_end_to_end import link_both

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def oa(acme: TenantFixture, sim: Simulator, web_server: WebServer) -> str:
    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)
    return link_both(sim, web_server, "oa", OA)


async def conversation() -> dict[str, Any]:
    [row] = await db.fetch("SELECT * FROM inbox_conversation")
    return dict(row)


async def thread(conversation_id: int) -> list[tuple[str, str, str]]:
    rows = await db.fetch("SELECT direction, status, body FROM inbox_message WHERE conversation = $1 ORDER BY id",
                          conversation_id)
    return [(r["direction"], r["status"], r["body"]) for r in rows]


async def test_a_customer_asks_for_a_human_and_the_rep_replies(acme: TenantFixture, sim: Simulator, oa: str,
                                                               make_rep: MakeRep) -> None:
    rep = await make_rep("Li Na")
    sim.push(oa, "alice", "follow")
    sim.push(oa, "alice", "text", text="你好")
    await run_worker()
    conv = await conversation()
    assert conv["status"] == "bot" and conv["unanswered"] == 1
    sim.push(oa, "alice", "text", text="我要转人工")
    await run_worker()
    conv = await conversation()
    assert conv["status"] == "assigned" and conv["assignee"] == rep and conv["handoff_reason"] == "keyword"
    # The customer was told who answers (the window had room), once.
    notices = [m["payload"] for m in sim.messages(app_id=oa, endpoint="cgi-bin/message/custom/send")]
    assert len(notices) == 1 and "Li Na" in str(notices[0])

    me = await viewer(acme.id, rep)
    message_id = await actions.do_reply(acme.id, me, conv["id"], "您好，我是 Li Na，请问有什么可以帮您？")
    await run_worker()
    sent = [m["payload"] for m in sim.messages(app_id=oa, endpoint="cgi-bin/message/custom/send")]
    assert len(sent) == 2 and "请问有什么可以帮您" in str(sent[1])
    assert ("out", "sent", "您好，我是 Li Na，请问有什么可以帮您？") in await thread(conv["id"])
    # Run the send job again: nothing is sent twice.
    assert await inbox_jobs.send_message({}, acme.id, message_id) == "nothing to send"
    assert len(sim.messages(app_id=oa, endpoint="cgi-bin/message/custom/send")) == 2
    # Re-running the inbox's part of every stored callback adds nothing.
    before = await thread(conv["id"])
    assert await handle_inbound([r["id"] for r in await InboundEvent.select(InboundEvent.id)]) == 0
    assert await thread(conv["id"]) == before
    kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM timeline_event ORDER BY id")]
    assert {"handoff", "assignment", "message_out"} <= set(kinds)

    await actions.do_resolve(acme.id, me, conv["id"])
    assert (await conversation())["status"] == "resolved"
    sim.push(oa, "alice", "text", text="还有一个问题")  # back: to the rep who resolved it (online, room)
    await run_worker()
    back = await conversation()
    assert back["status"] == "assigned" and back["assignee"] == rep


async def test_the_bot_hands_over_after_three_messages_it_could_not_answer(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await make_rep()
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "价格",
                                        "reply": "价格表已发送"})
    sim.push(oa, "bob", "follow")
    for text in ("在吗", "价格多少", "嗯", "好的"):  # the rule answers the 2nd, which resets the count
        sim.push(oa, "bob", "text", text=text)
        await run_worker()
    conv = await conversation()
    assert conv["status"] == "bot" and conv["unanswered"] == 2
    sim.push(oa, "bob", "text", text="？")
    await run_worker()
    conv = await conversation()
    assert conv["status"] == "assigned" and conv["handoff_reason"] == "unanswered"


async def test_a_menu_button_for_a_human_and_a_vip_go_straight_to_a_rep(
        acme: TenantFixture, sim: Simulator, oa: str, make_rep: MakeRep) -> None:
    await make_rep()
    await do_update_settings(acme.id, {"handoff_keywords": "人工", "handoff_menu_keys": "TALK_TO_HUMAN",
                                       "unanswered_limit": "0", "sla_minutes": "5", "recent_days": "30",
                                       "notify_customer": "on"}, ACTOR)
    sim.push(oa, "carol", "follow")
    sim.push(oa, "carol", "click", key="MENU_PRICES")
    await run_worker()
    assert await db.fetch("SELECT id FROM inbox_conversation") == []  # an ordinary button starts nothing
    sim.push(oa, "carol", "click", key="TALK_TO_HUMAN")
    await run_worker()
    conv = await conversation()
    assert conv["status"] == "assigned" and conv["handoff_reason"] == "menu"


async def test_replies_stop_exactly_where_wechat_would_refuse(acme: TenantFixture, sim: Simulator, oa: str,
                                                              make_rep: MakeRep) -> None:
    rep = await make_rep()
    await do_update_settings(acme.id, {"handoff_keywords": "人工", "unanswered_limit": "0", "sla_minutes": "5",
                                       "recent_days": "30"}, ACTOR)  # no customer notices: all 5 are the rep's
    sim.push(oa, "dave", "follow")
    sim.push(oa, "dave", "text", text="人工")
    await run_worker()
    conv = await conversation()
    me = await viewer(acme.id, rep)
    state = await actions.window_for(acme.id, conv)
    assert state.can_send and state.remaining == 5
    for i in range(5):
        await actions.do_reply(acme.id, me, conv["id"], f"reply {i}")
    await run_worker()
    assert len(sim.messages(app_id=oa, endpoint="cgi-bin/message/custom/send")) == 5
    with pytest.raises(Conflict) as refused:  # the 6th: refused by Siyu before anything is written
        await actions.do_reply(acme.id, me, conv["id"], "reply 6")
    assert "5 replies" in refused.value.message
    assert len([m for m in await thread(conv["id"]) if m[0] == "out"]) == 5
    assert sim.refusals(app_id=oa) == []  # WeChat never had to refuse anything
    # A new message from the customer opens a fresh window with a fresh quota.
    sim.push(oa, "dave", "text", text="谢谢")
    await run_worker()
    assert (await actions.window_for(acme.id, conv)).remaining == 5
    with pytest.raises(InvalidInput):
        await actions.do_reply(acme.id, me, conv["id"], "长" * 700)  # over WeChat's 2048 bytes


async def test_the_bot_stays_quiet_while_a_rep_has_the_customer(acme: TenantFixture, sim: Simulator, oa: str,
                                                                make_rep: MakeRep) -> None:
    rep = await make_rep()
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "价格",
                                          "reply": "价格表已发送"})
    sim.push(oa, "erin", "follow")
    assert sim.push(oa, "erin", "text", text="价格？")["reply"]["Content"] == "价格表已发送"
    sim.push(oa, "erin", "text", text="转人工")
    await run_worker()
    assert (await conversation())["status"] == "assigned"
    assert sim.push(oa, "erin", "text", text="价格多少？")["reply"] is None  # the rep answers, not the bot
    await run_worker()
    await actions.do_resolve(acme.id, await viewer(acme.id, rep), (await conversation())["id"])
    assert sim.push(oa, "erin", "text", text="价格？")["reply"]["Content"] == "价格表已发送"


async def test_the_bot_answers_on_the_mini_program_and_wecom_kf_with_customer_service_messages(
        acme: TenantFixture, sim: Simulator, web_server: WebServer, make_rep: MakeRep) -> None:
    """No passive replies there: the keyword rule's reply goes out as a customer-service message (MP) or a
    微信客服 message (WeCom), once per customer message, and the bot's count of unanswered messages stays 0."""
    await make_rep()
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    await tenants.do_link_channel(ACTOR, acme.id, "wecom", WECOM)
    mp = link_both(sim, web_server, "mp", MP, message_mode="safe", push_format="json")
    wc = link_both(sim, web_server, "wecom", WECOM, open_kfids=["wkShop"])
    rule = await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "发货",
                                               "reply": "下单后 48 小时内发货。"})
    sim.push(mp, "dora", "enter_tempsession", session_from="product_88")
    sim.push(mp, "dora", "text", text="什么时候发货？")
    sim.push(wc, "eve", "kf_text", text="请问多久发货", open_kfid="wkShop")
    await run_worker()

    mp_sent = sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send")
    assert len(mp_sent) == 1 and "48 小时内发货" in str(mp_sent[0]["payload"])
    kf_sent = sim.messages(app_id=wc, endpoint="cgi-bin/kf/send_msg")
    assert len(kf_sent) == 1 and "48 小时内发货" in str(kf_sent[0]["payload"])
    assert "wkShop" in str(kf_sent[0]["payload"])
    rows = await db.fetch("SELECT * FROM inbox_conversation ORDER BY channel")
    assert [(r["channel"], r["status"], r["unanswered"]) for r in rows] == [("mp", "bot", 0), ("wecom", "bot", 0)]
    for row in rows:
        assert ("out", "sent", "下单后 48 小时内发货。") in await thread(row["id"])
    assert (await db.fetchrow("SELECT hits FROM wechat_auto_reply WHERE id = $1", rule))["hits"] == 2

    # Run every bot job again: nothing is sent or recorded twice.
    asked = await db.fetch("SELECT id FROM inbox_message WHERE direction = 'in'")
    pool = await arq_pool()
    try:
        for m in asked:
            assert await inbox_jobs.bot_reply({"redis": pool}, acme.id, m["id"]) == "recorded before"
    finally:
        await pool.aclose()
    assert len(sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send")) == 1
    assert len(sim.messages(app_id=wc, endpoint="cgi-bin/kf/send_msg")) == 1
    assert len(await db.fetch("SELECT id FROM inbox_message WHERE author_label = 'bot'")) == 2

    # Something the rules do not know counts as unanswered; a person who has the customer is not talked over.
    sim.push(mp, "dora", "text", text="人工")
    await run_worker()
    mp_conv = await db.fetchrow("SELECT * FROM inbox_conversation WHERE channel = 'mp'")
    assert mp_conv["status"] == "assigned"
    sim.push(mp, "dora", "text", text="还是发货的问题")
    await run_worker()
    texts = [str(m["payload"]) for m in sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send")]
    assert sum("48 小时内发货" in t for t in texts) == 1
