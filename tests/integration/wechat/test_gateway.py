"""Inbound callbacks: WeChat's published sample vectors, every rejection (storing nothing), retries
stored once, normalised events, and the durable record before the answer."""

from __future__ import annotations

import time
from typing import Any

import pytest

from siyu.core import settings
from siyu.tenants import services as tenants
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, WECOM, Client, TenantFixture
from tests.wechat_payloads import Sender, event, text, xml_of


@pytest.fixture
def no_skew_check(monkeypatch: pytest.MonkeyPatch) -> Any:
    """WeChat's sample vectors are from 2014: replaying them needs the timestamp check off."""
    monkeypatch.setenv("SIYU_CALLBACK_MAX_SKEW", "0")
    settings.reset_settings()
    yield
    monkeypatch.undo()
    settings.reset_settings()


async def link(tenant: TenantFixture, kind: str, data: dict[str, str]) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), tenant.id, kind, data)


@pytest.fixture
async def oa(acme: TenantFixture) -> Sender:
    await link(acme, "oa", OA)
    return Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")


async def post(client: Client, cb: Any) -> Any:
    return await client.post(cb.url, content=cb.body, headers={"Content-Type": "text/xml"})


async def stored() -> list[dict[str, Any]]:
    return await InboundEvent.select().order_by(InboundEvent.id).output(load_json=True)


# --- WeChat's published sample vectors ---------------------------------------------------------------

OA_SAMPLE = {
    "token": "spamtest", "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "app_id": "wx2c2769f8efd9abc2",
    "timestamp": "1409735669", "nonce": "1320562132", "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    "body": "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]>"
            "</FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]>"
            "</Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655Hu"
            "D0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZky"
            "yXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy"
            "0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsN"
            "PfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>",
}

WECOM_SAMPLE = {
    "token": "QDG6eK", "aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "corp_id": "wx5823bf96d3bd56c7",
    "verify": {"msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "timestamp": "1409659589",
               "nonce": "263014780",
               "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="},
    "message": {"msg_signature": "477715d11cdb4164915debcba66cb864d751f3e6", "timestamp": "1409659813",
                "nonce": "1372623149"},
    "body": "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPd"
            "vo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGL"
            "YL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4z"
            "G4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6"
            "BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt>"
            "<AgentID><![CDATA[218]]></AgentID></xml>",
}


async def test_official_account_safe_mode_sample_vector(client: Client, acme: TenantFixture,
                                                        no_skew_check: Any) -> None:
    s = OA_SAMPLE
    await link(acme, "oa", {**OA, "app_id": s["app_id"], "token": s["token"], "aes_key": s["aes_key"]})
    query = {"timestamp": s["timestamp"], "nonce": s["nonce"], "msg_signature": s["msg_signature"],
             "encrypt_type": "aes"}
    r = await client.post("/wechat/acme/oa", params=query, content=s["body"].encode())
    assert r.status_code == 200 and r.text == "success"
    [row] = await stored()
    assert row["kind"] == "message" and row["msg_type"] == "text"
    assert row["external_id"] == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert row["dedup_key"] == "msg:6054768590064713728"
    assert row["payload"]["fields"]["Content"] == "abcdteT"
    assert row["payload"]["fields"]["ToUserName"] == "gh_10f6c3c3ac5a"


async def test_wecom_sample_vectors_for_url_verification_and_a_message(client: Client, acme: TenantFixture,
                                                                       no_skew_check: Any) -> None:
    s = WECOM_SAMPLE
    await link(acme, "wecom", {**WECOM, "corp_id": s["corp_id"], "token": s["token"], "aes_key": s["aes_key"],
                               "agent_id": "218"})
    r = await client.get("/wechat/acme/wecom", params=s["verify"])
    assert r.status_code == 200
    assert r.text == "1616140317555161061"  # the plaintext alone: no quotes, no newline
    r = await client.post("/wechat/acme/wecom", params=s["message"], content=s["body"].encode())
    assert r.status_code == 200 and r.text == ""
    [row] = await stored()
    assert row["channel"] == "wecom" and row["kind"] == "message"
    assert row["payload"]["fields"]["Content"] == "hello"
    assert row["payload"]["fields"]["FromUserName"] == "mycreate"
    assert row["dedup_key"] == "msg:4561255354251345929"


async def test_official_account_url_verification_echoes_echostr(client: Client, oa: Sender) -> None:
    ts, nonce = str(int(time.time())), "4242"
    from tests.wechat_payloads import sign

    ok = await client.get("/wechat/acme/oa", params={"signature": sign(oa.token, ts, nonce), "timestamp": ts,
                                                     "nonce": nonce, "echostr": "8127361823"})
    assert ok.status_code == 200 and ok.text == "8127361823"
    bad = await client.get("/wechat/acme/oa", params={"signature": "0" * 40, "timestamp": ts, "nonce": nonce,
                                                      "echostr": "8127361823"})
    assert bad.status_code == 403 and "8127361823" not in bad.text


# --- rejections store nothing ----------------------------------------------------------------------

async def test_unknown_tenant_or_unlinked_account_answers_404(client: Client, oa: Sender) -> None:
    cb = oa.callback(text("oUser", "hi", 1))
    for path in ("/wechat/nobody/oa", "/wechat/acme/mp", "/wechat/acme/wecom", "/wechat/acme/sms"):
        r = await client.post(f"{path}?{cb.url.split('?')[1]}", content=cb.body)
        assert r.status_code == 404, path
    assert await stored() == []


async def test_bad_signature_is_refused(client: Client, oa: Sender, caplog: pytest.LogCaptureFixture) -> None:
    cb = oa.callback(text("oUser", "hi", 1))
    cb.query["msg_signature"] = "f" * 40
    r = await post(client, cb)
    assert r.status_code == 403
    assert await stored() == []
    assert "bad msg_signature" in caplog.text


async def test_a_token_of_another_account_cannot_sign(client: Client, oa: Sender) -> None:
    forged = Sender("acme", "oa", OA["app_id"], "SomeoneElsesToken", OA["aes_key"], "safe")
    assert (await post(client, forged.callback(text("oUser", "hi", 1)))).status_code == 403
    assert await stored() == []


async def test_stale_or_future_timestamps_are_refused(client: Client, oa: Sender) -> None:
    for ts in (int(time.time()) - 301, int(time.time()) + 301):
        r = await post(client, oa.callback(text("oUser", "hi", ts), timestamp=ts))
        assert r.status_code == 403
    r = await post(client, oa.callback(text("oUser", "hi", 7), timestamp=int(time.time()) - 200))
    assert r.status_code == 200
    assert len(await stored()) == 1


async def test_replayed_old_callback_is_refused(client: Client, oa: Sender) -> None:
    """A captured, correctly signed callback replayed an hour later."""
    old = oa.callback(text("oUser", "hi", 99), timestamp=int(time.time()) - 3600)
    assert (await post(client, old)).status_code == 403
    assert await stored() == []


async def test_payload_for_another_appid_is_refused(client: Client, oa: Sender) -> None:
    cb = oa.callback(text("oUser", "hi", 1), app_id="wx9999999999999999")
    r = await post(client, cb)
    assert r.status_code == 400 and "AppID" in r.text
    assert await stored() == []


@pytest.mark.parametrize("body", [
    b"", b"not xml at all", b"<xml><Encrypt>unterminated", b"<root><Encrypt>x</Encrypt></root>",
    b"<xml><ToUserName>x</ToUserName></xml>",
])
async def test_malformed_xml_is_refused(client: Client, oa: Sender, body: bytes) -> None:
    cb = oa.callback(text("oUser", "hi", 1))
    r = await client.post(cb.url, content=body)
    assert r.status_code == 400
    assert await stored() == []


async def test_ciphertext_that_does_not_decrypt_is_refused(client: Client, oa: Sender) -> None:
    from tests.wechat_payloads import sign

    ts, nonce, encrypt = str(int(time.time())), "1", "bm90IGEgY2lwaGVydGV4dA=="
    body = f"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
    r = await client.post("/wechat/acme/oa", params={"timestamp": ts, "nonce": nonce, "encrypt_type": "aes",
                                                     "msg_signature": sign(oa.token, ts, nonce, encrypt)},
                          content=body)
    assert r.status_code == 400
    assert await stored() == []


async def test_xml_with_a_dtd_or_entities_is_refused(client: Client, acme: TenantFixture) -> None:
    await link(acme, "oa", {**OA, "mode": "plain"})
    plain = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")
    bomb = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<xml><ToUserName>gh</ToUserName><FromUserName>oUser</FromUserName><CreateTime>1</CreateTime>'
            '<MsgType>text</MsgType><Content>&b;</Content><MsgId>5</MsgId></xml>')
    cb = plain.callback(text("oUser", "x", 5))
    r = await client.post(cb.url, content=bomb.encode())
    assert r.status_code == 400 and "DTD" in r.text
    assert await stored() == []


async def test_body_over_one_mebibyte_is_refused(client: Client, oa: Sender) -> None:
    cb = oa.callback(text("oUser", "x" * (1024 * 1024 + 10), 1))
    r = await post(client, cb)
    assert r.status_code == 413
    assert await stored() == []


async def test_plain_message_to_a_safe_mode_account_is_refused(client: Client, oa: Sender) -> None:
    plain = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")
    r = await post(client, plain.callback(text("oUser", "hi", 1)))
    assert r.status_code == 400 and "Encrypt missing" in r.text
    assert await stored() == []


async def test_mp_malformed_json_is_refused(client: Client, acme: TenantFixture) -> None:
    await link(acme, "mp", MP)
    mp = Sender("acme", "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")
    cb = mp.callback({"ToUserName": "gh_mp", "FromUserName": "oMp", "CreateTime": int(time.time()),
                      "MsgType": "text", "Content": "hi", "MsgId": 3})
    r = await client.post(cb.url, content=b'{"ToUserName": "gh_mp", "Encrypt": ')
    assert r.status_code == 400
    assert await stored() == []
    ok = await client.post(cb.url, content=cb.body)
    assert ok.status_code == 200 and ok.text == "success"
    [row] = await stored()
    assert row["channel"] == "mp" and row["payload"]["fields"]["Content"] == "hi"


# --- retries: stored once, processed once -------------------------------------------------------------

async def test_three_deliveries_of_one_message_make_one_event_and_one_job(client: Client, oa: Sender,
                                                                          redis: Any, app: Any) -> None:
    cb = oa.callback(text("oUser", "你好", 24371234567890123))
    answers = [await post(client, cb) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    await app.state.ingestor.settle()
    [row] = await stored()
    assert row["deliveries"] == 3
    assert row["dedup_key"] == "msg:24371234567890123"
    jobs = await redis.keys("arq:job:wechat.inbound*")
    assert jobs == [f"arq:job:wechat.inbound-batch:{row['id']}".encode()]


async def test_concurrent_retries_in_one_batch_are_stored_once(client: Client, oa: Sender, app: Any) -> None:
    import asyncio

    cb = oa.callback(text("oUser", "同时", 555))
    others = [oa.callback(text(f"o{i}", "hi", 600 + i)) for i in range(20)]
    answers = await asyncio.gather(*[post(client, c) for c in [cb, cb, cb, *others]])
    assert all(a.status_code == 200 and a.text == "success" for a in answers)
    await app.state.ingestor.settle()
    rows = await stored()
    assert len(rows) == 21
    assert {r["dedup_key"]: r["deliveries"] for r in rows}["msg:555"] == 3


async def test_retried_event_without_msgid_is_recognised_by_sender_time_and_event(client: Client,
                                                                                  oa: Sender) -> None:
    at = int(time.time())
    follow = event("oUser", "subscribe", at=at)
    for _ in range(3):
        await post(client, oa.callback(follow))  # WeChat re-signs each retry with a new nonce
    await post(client, oa.callback(event("oUser", "unsubscribe", at=at)))  # same second, other event
    rows = await stored()
    assert [(r["kind"], r["deliveries"]) for r in rows] == [("follow", 3), ("unfollow", 1)]


async def test_the_event_is_durable_before_the_answer_even_when_redis_is_down(client: Client, oa: Sender,
                                                                              app: Any) -> None:
    async def redis_down(ids: list[int]) -> None:
        raise ConnectionError("redis is down")

    real, app.state.ingestor._enqueue = app.state.ingestor._enqueue, redis_down
    try:
        r = await post(client, oa.callback(text("oUser", "kept", 77)))
        await app.state.ingestor.settle()
    finally:
        app.state.ingestor._enqueue = real
    assert r.status_code == 200 and r.text == "success"
    [row] = await stored()
    assert row["processed_at"] is None  # the sweeper will hand it to a worker


async def test_a_database_failure_answers_500_so_wechat_retries(client: Client, oa: Sender, app: Any) -> None:
    async def broken(batch: Any) -> None:
        raise ConnectionError("database is down")

    real, app.state.ingestor._write = app.state.ingestor._write, broken
    try:
        r = await post(client, oa.callback(text("oUser", "retry me", 78)))
    finally:
        app.state.ingestor._write = real
    assert r.status_code == 500 and r.text != "success"


# --- normalised events --------------------------------------------------------------------------------

async def test_official_account_events_are_normalised(client: Client, oa: Sender) -> None:
    at = int(time.time())
    callbacks = [
        event("o1", "subscribe", at=at, EventKey="qrscene_spring_fair", Ticket="T1"),
        event("o2", "subscribe", at=at),
        event("o1", "SCAN", at=at + 1, EventKey="store_42", Ticket="T2"),
        event("o1", "CLICK", at=at + 2, EventKey="MENU_CONTACT"),
        event("o1", "VIEW", at=at + 3, EventKey="https://brand.example/shop"),
        event("o1", "unsubscribe", at=at + 4),
        {"ToUserName": "gh_x", "FromUserName": "o3", "CreateTime": at, "MsgType": "image",
         "PicUrl": "http://img", "MediaId": "m1", "MsgId": 11},
        {"ToUserName": "gh_x", "FromUserName": "o3", "CreateTime": at, "MsgType": "location", "Location_X": "31.2",
         "Location_Y": "121.4", "Scale": 15, "Label": "Shanghai", "MsgId": 12},
        {"ToUserName": "gh_x", "FromUserName": "o3", "CreateTime": at, "MsgType": "link", "Title": "t",
         "Description": "d", "Url": "https://x", "MsgId": 13},
        {"ToUserName": "gh_x", "FromUserName": "o3", "CreateTime": at, "MsgType": "voice", "MediaId": "v",
         "Format": "amr", "MsgId": 14},
        {"ToUserName": "gh_x", "FromUserName": "o3", "CreateTime": at, "MsgType": "video", "MediaId": "v",
         "ThumbMediaId": "t", "MsgId": 15},
        event("o4", "subscribe_msg_popup_event", at=at, SubscribeMsgPopupEvent={
            "List": {"TemplateId": "TPL1", "SubscribeStatusString": "accept", "PopupScene": 2}}),
    ]
    for fields in callbacks:
        assert (await post(client, oa.callback(fields))).status_code == 200
    rows = {(r["external_id"], r["kind"], r["msg_type"]): r for r in await stored()}
    assert rows[("o1", "follow", "event")]["payload"]["details"]["scene"] == "spring_fair"
    assert rows[("o2", "follow", "event")]["payload"]["details"]["scene"] == ""
    assert rows[("o1", "scan", "event")]["payload"]["details"]["scene"] == "store_42"
    assert rows[("o1", "menu_click", "event")]["payload"]["details"]["key"] == "MENU_CONTACT"
    assert rows[("o1", "menu_view", "event")]["payload"]["details"]["url"] == "https://brand.example/shop"
    assert ("o1", "unfollow", "event") in rows
    assert {k[2] for k in rows if k[1] == "message"} == {"image", "location", "link", "voice", "video"}
    assert rows[("o3", "message", "location")]["payload"]["details"]["Label"] == "Shanghai"
    consent = rows[("o4", "subscription_consent", "event")]["payload"]["details"]["templates"]
    assert consent == [{"template_id": "TPL1", "status": "accept", "scene": "2"}]


async def test_mini_program_json_pushes_are_normalised(client: Client, acme: TenantFixture) -> None:
    await link(acme, "mp", MP)
    mp = Sender("acme", "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")
    at = int(time.time())
    for fields in [
        {"ToUserName": "gh_mp", "FromUserName": "oMp1", "CreateTime": at, "MsgType": "event",
         "Event": "user_enter_tempsession", "SessionFrom": "product_88"},
        {"ToUserName": "gh_mp", "FromUserName": "oMp1", "CreateTime": at, "MsgType": "miniprogrampage",
         "MsgId": 21, "Title": "Bag", "AppId": "wx00", "PagePath": "pages/p?id=88", "ThumbUrl": ""},
        {"ToUserName": "gh_mp", "FromUserName": "oMp2", "CreateTime": at, "MsgType": "event",
         "Event": "subscribe_msg_popup_event",
         "List": [{"TemplateId": "A", "SubscribeStatusString": "accept", "PopupScene": "0"},
                  {"TemplateId": "B", "SubscribeStatusString": "reject", "PopupScene": "0"}]},
    ]:
        assert (await post(client, mp.callback(fields))).text == "success"
    rows = {r["kind"]: r for r in await stored()}
    assert rows["session_enter"]["payload"]["details"]["session_from"] == "product_88"
    assert rows["message"]["msg_type"] == "miniprogrampage"
    assert [t["template_id"] for t in rows["subscription_consent"]["payload"]["details"]["templates"]] == ["A", "B"]


async def test_wecom_contact_changes_and_kf_notifications_are_normalised(client: Client,
                                                                         acme: TenantFixture) -> None:
    await link(acme, "wecom", WECOM)
    wc = Sender("acme", "wecom", WECOM["corp_id"], WECOM["token"], WECOM["aes_key"])
    at = int(time.time())
    base = {"ToUserName": WECOM["corp_id"], "FromUserName": "sys", "CreateTime": at, "MsgType": "event",
            "Event": "change_external_contact"}
    for fields in [
        {**base, "ChangeType": "add_external_contact", "UserID": "zhangsan", "ExternalUserID": "wmAAA",
         "State": "spring_fair", "WelcomeCode": "WELCOME1"},
        {**base, "ChangeType": "edit_external_contact", "UserID": "zhangsan", "ExternalUserID": "wmAAA"},
        {**base, "ChangeType": "del_follow_user", "UserID": "zhangsan", "ExternalUserID": "wmAAA"},
        {**base, "ChangeType": "del_external_contact", "UserID": "lisi", "ExternalUserID": "wmBBB",
         "Source": "DELETE_BY_TRANSFER"},
        {"ToUserName": WECOM["corp_id"], "CreateTime": at, "MsgType": "event", "Event": "kf_msg_or_event",
         "Token": "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR", "OpenKfId": "wkAJ2GCAAA"},
    ]:
        r = await post(client, wc.callback(fields))
        assert r.status_code == 200 and r.text == ""
    rows = {r["kind"]: r for r in await stored()}
    added = rows["wecom_contact_added"]
    assert added["external_id"] == "wmAAA"
    assert added["payload"]["details"] | {} == {**added["payload"]["details"], "user_id": "zhangsan",
                                                "state": "spring_fair", "welcome_code": "WELCOME1"}
    assert {"wecom_contact_edited", "wecom_follow_user_deleted", "wecom_contact_deleted",
            "kf_notification"} <= set(rows)
    assert rows["kf_notification"]["payload"]["details"]["open_kfid"] == "wkAJ2GCAAA"


async def test_plain_and_compatible_modes(client: Client, acme: TenantFixture) -> None:
    await link(acme, "oa", {**OA, "mode": "compatible"})
    compat = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "compatible")
    plain = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "plain")
    assert (await post(client, compat.callback(text("oC", "encrypted", 31)))).text == "success"
    assert (await post(client, plain.callback(text("oC", "plain", 32)))).text == "success"
    assert [r["payload"]["fields"]["Content"] for r in await stored()] == ["encrypted", "plain"]


async def test_xml_fixture_builder_matches_wechat_shape() -> None:
    assert xml_of({"A": "x", "B": 1}) == "<xml><A><![CDATA[x]]></A><B>1</B></xml>"
