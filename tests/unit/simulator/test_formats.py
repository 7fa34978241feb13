"""WeChat's wire formats as the simulator writes them, checked with wechatpy; the scenario grammar."""

from __future__ import annotations

import pytest
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import check_signature

from siyu.simulator.cli import Step, parse_scenario
from siyu.simulator.state import SimApp
from siyu.simulator.wire import json_shape, open_reply, plain_signature, seal, to_xml, xml_to_dict

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_xml_uses_cdata_for_text_and_bare_numbers() -> None:
    xml = to_xml({"ToUserName": "gh_x", "CreateTime": 1700000000, "Content": "a]]>b <&>", "Location_X": 31.2,
                  "Outer": {"List": [{"TemplateId": "T1"}, {"TemplateId": "T2"}]}})
    assert "<CreateTime>1700000000</CreateTime>" in xml and "<Location_X>31.2</Location_X>" in xml
    assert "<ToUserName><![CDATA[gh_x]]></ToUserName>" in xml
    parsed = xml_to_dict(xml)
    assert parsed["Content"] == "a]]>b <&>"
    assert parsed["Outer"]["List"] == [{"TemplateId": "T1"}, {"TemplateId": "T2"}]


def test_a_text_message_parses_with_wechatpy() -> None:
    msg = parse_message(to_xml({"ToUserName": "gh_x", "FromUserName": "o" * 28, "CreateTime": 1700000000,
                                "MsgType": "text", "Content": "你好", "MsgId": 24371234567890123}))
    assert (msg.type, msg.content, msg.id) == ("text", "你好", 24371234567890123)


def test_json_popup_list_is_an_object_for_one_and_an_array_for_several() -> None:
    base = {"ToUserName": "gh", "FromUserName": "o", "CreateTime": 1, "MsgType": "event",
            "Event": "subscribe_msg_popup_event"}
    one = json_shape({**base, "SubscribeMsgPopupEvent": {"List": [
        {"TemplateId": "A", "SubscribeStatusString": "accept", "PopupScene": 0}]}})
    assert one["List"] == {"TemplateId": "A", "SubscribeStatusString": "accept", "PopupScene": "0"}
    assert "SubscribeMsgPopupEvent" not in one and one["CreateTime"] == "1"
    two = json_shape({**base, "SubscribeMsgPopupEvent": {"List": [{"TemplateId": "A"}, {"TemplateId": "B"}]}})
    assert isinstance(two["List"], list) and len(two["List"]) == 2


def test_plain_signature_is_wechats() -> None:
    sig = plain_signature("tok", "1700000000", "123")
    assert check_signature("tok", sig, "1700000000", "123") is None


def test_safe_mode_envelope_decrypts_with_wechatpy() -> None:
    app = SimApp(kind="oa", app_id="wx1", secret="s", token="tok", aes_key=AES_KEY, message_mode="safe",
                 original_id="gh_1")
    msg = {"ToUserName": "gh_1", "FromUserName": "o" * 28, "CreateTime": 1700000000, "MsgType": "event",
           "Event": "subscribe"}
    out = seal(app, msg, 1700000000.0, openid="o" * 28)
    assert list(out.query) == ["signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature"]
    assert out.body.startswith("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[")
    plain = WeChatCrypto("tok", AES_KEY, "wx1").decrypt_message(
        out.body, out.query["msg_signature"], out.query["timestamp"], out.query["nonce"])
    assert xml_to_dict(plain) == {k: str(v) for k, v in msg.items()}


def test_replies() -> None:
    app = SimApp(kind="oa", app_id="wx1", secret="s", token="tok", aes_key=AES_KEY, message_mode="safe")
    assert open_reply(app, "success") == (True, None, None)
    assert open_reply(app, "  ") == (True, None, None)
    assert open_reply(app, "ok")[0] is False
    reply = "<xml><ToUserName>o1</ToUserName><FromUserName>gh</FromUserName><CreateTime>1</CreateTime>" \
            "<MsgType>text</MsgType><Content>hi</Content></xml>"
    sealed = WeChatCrypto("tok", AES_KEY, "wx1").encrypt_message(reply, "42", "1700000000")
    ok, parsed, problem = open_reply(app, sealed)
    assert ok and problem is None and parsed is not None and parsed["Content"] == "hi"
    forged = sealed.replace("<Nonce><![CDATA[42]]></Nonce>", "<Nonce><![CDATA[43]]></Nonce>")
    ok, parsed, problem = open_reply(app, forged)
    assert ok and parsed is None and problem is not None and "verify" in problem


def test_scenario_grammar() -> None:
    assert parse_scenario("200 customers follow, 50 write 你好") == [Step("follow", 200), Step("write", 50, "你好")]
    assert parse_scenario("3 scan spring，2 click MENU_A, 1 customer write \"hi, there\"") == [
        Step("scan", 3, "spring"), Step("click", 2, "MENU_A"), Step("write", 1, "hi, there")]
    assert parse_scenario("5 people follow") == [Step("follow", 5)]
    assert parse_scenario("30 customers buy, 5 refund") == [Step("buy", 30), Step("refund", 5)]
    assert parse_scenario("10 buy CANDLE-FIG") == [Step("buy", 10, "CANDLE-FIG")]


@pytest.mark.parametrize("text", ["", "customers follow", "10 dance", "0 follow", "5 write", "5 click",
                                  "5 follow spring", "5 refund half", "0 buy"])
def test_scenario_grammar_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scenario(text)
