"""Pushes to a real HTTP receiver on a loopback port, checked with wechatpy the way a WeChat developer
must check them: signatures, decryption, parsing. Retries, passive replies, URL verification."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from wechatpy import create_reply
from wechatpy.crypto import WeChatCrypto
from wechatpy.events import (
    ClickEvent,
    ScanEvent,
    SubscribeScanEvent,
    UnsubscribeEvent,
    ViewEvent,
)
from wechatpy.messages import (
    ImageMessage,
    LinkMessage,
    LocationMessage,
    TextMessage,
    VideoMessage,
    VoiceMessage,
)
from wechatpy.work.crypto import WeChatCrypto as WorkCrypto
from wechatpy.work.events import ChangeExternalContactEvent, KFMsgOrEventEvent

from tests.integration.simulator.conftest import AES_KEY, CORP_ID, MP_ID, OA_ID, SECRET, TOKEN, Sim
from tests.integration.simulator.receiver import AppKeys, Received, Receiver, open_push


def keys(kind: str, app_id: str, mode: str = "safe", push_format: str = "xml") -> AppKeys:
    return AppKeys(kind, app_id, TOKEN, AES_KEY, mode, push_format)


async def test_oa_safe_mode_pushes_are_wechats_signed_encrypted_xml(simc: Sim, receiver: Receiver) -> None:
    app = await simc.register("oa", OA_ID, callback_url=receiver.url, message_mode="safe", original_id="gh_0a0a0a0a0a0a")
    k = keys("oa", OA_ID)
    follow = await simc.push(OA_ID, "alice", "follow", scene="tenant42")
    assert follow["delivered"] is True and follow["attempts"] == 1 and follow["status_codes"] == [200]
    assert follow["answer"] == "success" and follow["reply"] is None
    fields, msg = open_push(k, receiver.requests[0])
    assert isinstance(msg, SubscribeScanEvent) and msg.scene_id == "tenant42" and msg.ticket
    assert fields["ToUserName"] == app["original_id"] == "gh_0a0a0a0a0a0a"
    assert fields["FromUserName"] == follow["openid"] == receiver.requests[0].query["openid"]
    assert receiver.requests[0].path == "/wechat/acme/oa"
    assert receiver.requests[0].headers["content-type"] == "text/xml"

    actions: list[tuple[str, dict[str, Any], type]] = [
        ("scan", {"scene": "tenant42"}, ScanEvent), ("text", {"text": "你好 <b>&]]>"}, TextMessage),
        ("image", {}, ImageMessage), ("voice", {}, VoiceMessage), ("video", {}, VideoMessage),
        ("location", {"label": "外滩"}, LocationMessage), ("link", {"url": "https://example.com/a"}, LinkMessage),
        ("click", {"key": "MENU_CONTACT"}, ClickEvent), ("view", {"url": "https://example.com/"}, ViewEvent),
        ("unfollow", {}, UnsubscribeEvent)]
    for i, (action, fields_in, cls) in enumerate(actions, start=1):
        answer = await simc.push(OA_ID, "alice", action, **fields_in)
        assert answer["delivered"] is True, answer
        _, msg = open_push(k, receiver.requests[i])
        assert isinstance(msg, cls), (action, msg)
    assert open_push(k, receiver.requests[2])[1].content == "你好 <b>&]]>"  # CDATA survives "]]>"
    assert open_push(k, receiver.requests[3])[1].media_id
    assert open_push(k, receiver.requests[6])[1].label == "外滩"
    assert open_push(k, receiver.requests[8])[1].key == "MENU_CONTACT"
    times = [int(open_push(k, r)[0]["CreateTime"]) for r in receiver.requests]
    assert times == sorted(times) and len(set(times)) == len(times)  # FromUserName+CreateTime stays unique
    msg_ids = [open_push(k, r)[0].get("MsgId") for r in receiver.requests[2:8]]
    assert all(msg_ids) and len(set(msg_ids)) == 6


async def test_oa_plain_mode(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url, message_mode="plain", aes_key="")
    answer = await simc.push(OA_ID, "bob", "follow")
    assert answer["delivered"] is True
    fields, msg = open_push(keys("oa", OA_ID, "plain"), receiver.requests[0])
    assert msg.event == "subscribe" and "EventKey" not in fields
    assert receiver.requests[0].text.startswith("<xml><ToUserName><![CDATA[gh_")


async def test_oa_compatible_mode_carries_plaintext_and_ciphertext(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url, message_mode="compatible")
    await simc.push(OA_ID, "bob", "follow")
    await simc.push(OA_ID, "bob", "text", text="兼容模式")
    fields, msg = open_push(keys("oa", OA_ID, "compatible"), receiver.requests[1])
    assert msg.content == "兼容模式" and fields["Content"] == "兼容模式"


async def test_mini_program_json_pushes(simc: Sim, receiver: Receiver) -> None:
    await simc.register("mp", MP_ID, callback_url=receiver.url, push_format="json", message_mode="safe")
    k = keys("mp", MP_ID, "safe", "json")
    await simc.push(MP_ID, "carol", "text", text="小程序客服")
    await simc.push(MP_ID, "carol", "enter_tempsession", session_from="order-7")
    await simc.push(MP_ID, "carol", "miniprogrampage", page_path="pages/item?id=3")
    await simc.push(MP_ID, "carol", "subscribe_consent", accept=["T1"])
    await simc.push(MP_ID, "carol", "subscribe_consent", accept=["T1", "T2"], reject="T3")
    assert receiver.requests[0].headers["content-type"] == "application/json"
    text, _ = open_push(k, receiver.requests[0])
    assert text["MsgType"] == "text" and text["Content"] == "小程序客服" and isinstance(text["MsgId"], int)
    assert isinstance(text["CreateTime"], int)
    enter, _ = open_push(k, receiver.requests[1])
    assert (enter["Event"], enter["SessionFrom"]) == ("user_enter_tempsession", "order-7")
    page, _ = open_push(k, receiver.requests[2])
    assert page["MsgType"] == "miniprogrampage" and page["PagePath"] == "pages/item?id=3" and page["AppId"] == MP_ID
    one, _ = open_push(k, receiver.requests[3])
    assert one["List"] == {"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": "0"}
    several, _ = open_push(k, receiver.requests[4])
    assert [(x["TemplateId"], x["SubscribeStatusString"]) for x in several["List"]] == [
        ("T1", "accept"), ("T2", "accept"), ("T3", "reject")]


async def test_mini_program_compatible_json(simc: Sim, receiver: Receiver) -> None:
    await simc.register("mp", MP_ID, callback_url=receiver.url, push_format="json", message_mode="compatible")
    await simc.push(MP_ID, "carol", "image")
    fields, _ = open_push(keys("mp", MP_ID, "compatible", "json"), receiver.requests[0])
    assert fields["MsgType"] == "image" and fields["PicUrl"].startswith("http")


async def test_oa_subscribe_consent_xml(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)
    await simc.push(OA_ID, "dan", "subscribe_consent", accept=["TA", "TB"], reject=["TC"])
    fields, _ = open_push(keys("oa", OA_ID), receiver.requests[0])
    items = fields["SubscribeMsgPopupEvent"]["List"]
    assert fields["Event"] == "subscribe_msg_popup_event"
    assert [(i["TemplateId"], i["SubscribeStatusString"], i["PopupScene"]) for i in items] == [
        ("TA", "accept", "2"), ("TB", "accept", "2"), ("TC", "reject", "2")]


async def test_wecom_pushes(simc: Sim, receiver: Receiver) -> None:
    app = await simc.register("wecom", CORP_ID, callback_url=receiver.url, agent_id="1000005")
    k = keys("wecom", CORP_ID)
    added = await simc.push(CORP_ID, "erin", "add_contact", user_id="zhangsan", state="tenant42")
    fields, msg = open_push(k, receiver.requests[0])
    assert isinstance(msg, ChangeExternalContactEvent) and msg.change_type == "add_external_contact"
    assert (msg.user_id, msg.external_user_id, msg.state) == ("zhangsan", added["external_userid"], "tenant42")
    assert msg.welcome_code == added["welcome_code"] and fields["FromUserName"] == "sys"
    assert "<AgentID><![CDATA[1000005]]></AgentID>" in receiver.requests[0].text
    await simc.push(CORP_ID, "erin", "edit_contact", user_id="zhangsan")
    await simc.push(CORP_ID, "erin", "delete_contact", user_id="zhangsan", source="DELETE_BY_TRANSFER")
    changes = [open_push(k, r)[1] for r in receiver.requests[1:3]]
    assert [c.change_type for c in changes] == ["edit_external_contact", "del_external_contact"]
    assert open_push(k, receiver.requests[2])[0]["Source"] == "DELETE_BY_TRANSFER"
    kf = await simc.push(CORP_ID, "erin", "kf_text", text="客服在吗")
    fields, msg = open_push(k, receiver.requests[3])
    assert isinstance(msg, KFMsgOrEventEvent) and msg.token == kf["kf_token"]
    assert fields["OpenKfId"] == app["open_kfids"][0] and "Content" not in fields  # content only via sync_msg


async def test_retry_with_the_same_body_when_the_first_answer_is_late(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)

    async def slow_first(req: Received, n: int) -> tuple[int, str]:
        if n == 2:  # the text's first attempt
            await asyncio.sleep(1.0)
        return 200, ""

    await simc.push(OA_ID, "fay", "follow")
    receiver.answer = slow_first
    answer = await simc.push(OA_ID, "fay", "text", text="重试", timeout_seconds=0.4)
    assert answer["delivered"] is True and answer["attempts"] == 2
    assert answer["status_codes"] == [None, 200] and answer["attempt_log"][0]["error"] == "timeout"
    assert answer["elapsed_ms"] >= 400
    first, second = receiver.requests[1], receiver.requests[2]
    assert first.body == second.body and first.query == second.query  # same MsgId, CreateTime, signature
    assert open_push(keys("oa", OA_ID), second)[1].id == answer["msg_id"]


async def test_5xx_and_dead_servers_get_three_attempts(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)

    async def fail_twice(req: Received, n: int) -> tuple[int, str]:
        return (503, "busy") if n <= 2 else (200, "success")

    receiver.answer = fail_twice
    answer = await simc.push(OA_ID, "gus", "follow")
    assert (answer["delivered"], answer["attempts"], answer["status_codes"]) == (True, 3, [503, 503, 200])

    async def always_500(req: Received, n: int) -> tuple[int, str]:
        return 500, "oops"

    receiver.answer = always_500
    answer = await simc.push(OA_ID, "gus", "text")
    assert (answer["delivered"], answer["attempts"], answer["status_codes"]) == (False, 3, [500, 500, 500])
    assert len(receiver.requests) == 6

    await receiver.stop()  # nobody listens any more
    answer = await simc.push(OA_ID, "gus", "text", timeout_seconds=1)
    assert answer["delivered"] is False and answer["attempts"] == 3 and answer["status_codes"] == [None] * 3
    assert answer["error"]


async def test_answers_that_are_not_acknowledgements(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)

    async def nonsense(req: Received, n: int) -> tuple[int, str]:
        return (200, '{"ok": true}') if n == 1 else (404, "not found")

    receiver.answer = nonsense
    answer = await simc.push(OA_ID, "hal", "follow")
    assert answer["delivered"] is False and answer["attempts"] == 1 and answer["reply_error"]
    answer = await simc.push(OA_ID, "hal", "text")
    assert answer["delivered"] is False and answer["attempts"] == 1 and answer["error"] == "HTTP 404"


async def test_encrypted_passive_reply_is_decrypted_and_recorded(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)
    crypto = WeChatCrypto(TOKEN, AES_KEY, OA_ID)
    k = keys("oa", OA_ID)

    async def reply(req: Received, n: int) -> tuple[int, str]:
        _, msg = open_push(k, req)
        xml = create_reply(f"收到：{msg.content}", msg).render()
        return 200, crypto.encrypt_message(xml, req.query["nonce"], req.query["timestamp"])

    await simc.push(OA_ID, "ivy", "follow")
    receiver.answer = reply
    answer = await simc.push(OA_ID, "ivy", "text", text="订单")
    assert answer["delivered"] is True and answer["reply_error"] is None
    assert answer["reply"]["MsgType"] == "text" and answer["reply"]["Content"] == "收到：订单"
    assert answer["reply"]["ToUserName"] == answer["openid"]
    recorded = await simc.get("/_sim/messages", app_id=OA_ID, endpoint="passive_reply")
    assert [(m["to"], m["person"], m["payload"]["Content"]) for m in recorded] == [
        (answer["openid"], "ivy", "收到：订单")]


async def test_plaintext_reply_in_plain_mode_and_a_wrong_one_in_safe_mode(simc: Sim, receiver: Receiver) -> None:
    async def plain_reply(req: Received, n: int) -> tuple[int, str]:
        _, msg = open_push(keys("oa", OA_ID, mode), req)
        return 200, create_reply("hello", msg).render()

    mode = "plain"
    await simc.register("oa", OA_ID, callback_url=receiver.url, message_mode="plain", aes_key="")
    receiver.answer = plain_reply
    answer = await simc.push(OA_ID, "jo", "follow")
    assert answer["delivered"] is True and answer["reply"]["Content"] == "hello" and answer["reply_error"] is None

    mode = "safe"
    await simc.register("oa", OA_ID, callback_url=receiver.url, message_mode="safe")
    answer = await simc.push(OA_ID, "jo", "follow")
    assert answer["reply"]["Content"] == "hello" and "safe mode" in answer["reply_error"]


async def test_url_verification_handshakes(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID, callback_url=receiver.url)
    await simc.register("wecom", CORP_ID, callback_url=receiver.url)

    async def echo_oa(req: Received, n: int) -> tuple[int, str]:
        assert req.method == "GET" and set(req.query) == {"signature", "timestamp", "nonce", "echostr"}
        return 200, req.query["echostr"]

    receiver.answer = echo_oa
    result = (await simc.http.post("/_sim/verify", json={"app_id": OA_ID})).json()
    assert result["passed"] is True and result["status"] == 200

    async def decrypt_wecom(req: Received, n: int) -> tuple[int, str]:
        q = req.query
        assert set(q) == {"msg_signature", "timestamp", "nonce", "echostr"}
        plain = WorkCrypto(TOKEN, AES_KEY, CORP_ID).check_signature(
            q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"])
        return 200, plain

    receiver.answer = decrypt_wecom
    result = (await simc.http.post("/_sim/verify", json={"app_id": CORP_ID})).json()
    assert result["passed"] is True and result["answer"] == result["expected"]

    async def echo_ciphertext(req: Received, n: int) -> tuple[int, str]:
        return 200, req.query["echostr"]  # the classic mistake: WeCom wants the plaintext

    receiver.answer = echo_ciphertext
    result = (await simc.http.post("/_sim/verify", json={"app_id": CORP_ID})).json()
    assert result["passed"] is False


async def test_pushes_only_go_to_loopback_and_need_keys(simc: Sim, receiver: Receiver) -> None:
    await simc.register("oa", OA_ID)
    answer = await simc.push(OA_ID, "kim", "follow")
    assert answer["delivered"] is False and answer["attempts"] == 0 and answer["error"]
    r = await simc.http.post("/_sim/apps", json={"kind": "oa", "app_id": OA_ID, "secret": SECRET,
                                                 "callback_url": "http://192.168.1.20:8000/wechat/acme/oa"})
    assert r.status_code == 400
    await simc.register("oa", OA_ID, callback_url=receiver.url, token="")
    answer = await simc.push(OA_ID, "kim", "follow", expect=409)
    assert answer["code"] == "no_crypto"
    await simc.push("wxunknown", "kim", "follow", expect=404)
    await simc.push(OA_ID, "kim", "teleport", expect=400)
    await simc.push(OA_ID, "", "follow", expect=400)
    assert receiver.requests == []


async def test_push_through_the_simulator_http_server(simulator_base: str, receiver: Receiver) -> None:
    """The same push through the real `siyu simulator` process the suite runs."""
    async with httpx.AsyncClient(base_url=simulator_base, timeout=30) as http:
        r = await http.post("/_sim/apps", json={"kind": "oa", "app_id": OA_ID, "secret": SECRET, "token": TOKEN,
                                                "aes_key": AES_KEY, "callback_url": receiver.url})
        assert r.status_code == 200
        r = await http.post("/_sim/push", json={"app_id": OA_ID, "person": "lu", "action": "follow"})
        assert r.status_code == 200 and r.json()["delivered"] is True, r.text
        pushed = json.loads(r.text)
    _, msg = open_push(keys("oa", OA_ID), receiver.requests[0])
    assert msg.event == "subscribe" and msg.source == pushed["openid"]
