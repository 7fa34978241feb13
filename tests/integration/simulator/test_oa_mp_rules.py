"""Official Account and Mini Program rules, answered exactly when WeChat would: customer-service windows
and quotas, following, consents, the monthly mass-send cap, one-time login codes, users, menus, QR codes."""

from __future__ import annotations

from typing import Any

from tests.integration.simulator.conftest import MP_ID, OA_ID, SECRET, Sim

HOURS_48 = 48 * 3600


async def follower(simc: Sim, person: str = "alice", **fields: Any) -> str:
    return str((await simc.push(OA_ID, person, "follow", **fields))["openid"])


async def test_five_messages_after_a_user_message_then_45047_and_a_new_message_reopens(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.advance(61)  # the follow's own 3 / 1 min is over
    await simc.push(OA_ID, "alice", "text", text="你好")
    assert [await simc.text(OA_ID, oid) for _ in range(6)] == [0, 0, 0, 0, 0, 45047]
    await simc.push(OA_ID, "alice", "text", text="还在吗")
    assert [await simc.text(OA_ID, oid) for _ in range(6)] == [0, 0, 0, 0, 0, 45047]
    refused = await simc.get("/_sim/refusals", app_id=OA_ID, to=oid)
    assert [r["errcode"] for r in refused] == [45047, 45047] and refused[0]["person"] == "alice"
    accepted = await simc.get("/_sim/messages", app_id=OA_ID, to=oid)
    assert len(accepted) == 10
    assert accepted[0]["endpoint"] == "cgi-bin/message/custom/send"
    assert accepted[0]["payload"] == {"touser": oid, "msgtype": "text", "text": {"content": "hi"}}
    assert set(accepted[0]) >= {"endpoint", "to", "payload", "accepted_at"}


async def test_follow_then_message_does_not_add_the_quotas_up(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.push(OA_ID, "alice", "text")
    assert [await simc.text(OA_ID, oid) for _ in range(6)] == [0, 0, 0, 0, 0, 45047]


async def test_the_48_hour_window_ends_exactly(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.advance(61)
    await simc.push(OA_ID, "alice", "text")
    await simc.advance(HOURS_48 - 2)
    assert await simc.text(OA_ID, oid) == 0  # just inside
    await simc.advance(3)  # 48 h + 1 s
    assert await simc.text(OA_ID, oid) == 45015


async def test_follow_allows_three_messages_within_a_minute(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    assert [await simc.text(OA_ID, oid) for _ in range(4)] == [0, 0, 0, 45047]
    await simc.advance(61)
    assert await simc.text(OA_ID, oid) == 45015


async def test_scan_by_a_follower_allows_three_within_a_minute(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.advance(61)
    assert await simc.text(OA_ID, oid) == 45015
    await simc.push(OA_ID, "alice", "scan", scene="spring")
    assert [await simc.text(OA_ID, oid) for _ in range(4)] == [0, 0, 0, 45047]


async def test_a_menu_click_opens_one_minute_never_the_48_hour_quota(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.advance(61)
    await simc.push(OA_ID, "alice", "click", key="MENU_CONTACT")
    assert [await simc.text(OA_ID, oid) for _ in range(4)] == [0, 0, 0, 45047]
    await simc.push(OA_ID, "alice", "click", key="MENU_CONTACT")
    assert await simc.text(OA_ID, oid) == 0
    await simc.advance(61)
    assert await simc.text(OA_ID, oid) == 45015  # a click never opened 5 / 48 h
    await simc.push(OA_ID, "alice", "view", url="https://example.com/")
    assert await simc.text(OA_ID, oid) == 45015  # a view opens nothing


async def test_unfollowed_users_are_out_of_window_and_template_needs_following(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    await simc.push(OA_ID, "alice", "text")
    template = {"touser": oid, "template_id": "TPL_ORDER", "data": {"thing1": {"value": "ok"}}}
    sent = await simc.call(OA_ID, "cgi-bin/message/template/send", template)
    assert sent["errcode"] == 0 and sent["msgid"]
    await simc.push(OA_ID, "alice", "unfollow")
    assert await simc.text(OA_ID, oid) == 45015
    assert (await simc.call(OA_ID, "cgi-bin/message/template/send", template))["errcode"] == 43004
    unknown = {**template, "touser": "o" + "x" * 27}
    assert (await simc.call(OA_ID, "cgi-bin/message/template/send", unknown))["errcode"] == 40003
    await simc.push(OA_ID, "alice", "text", expect=409)  # only followers write to an OA
    await simc.push(OA_ID, "alice", "unfollow", expect=409)


async def test_one_consent_is_one_send(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    oid = await follower(simc)
    send = {"touser": oid, "template_id": "TPL_A", "data": {"thing1": {"value": "x"}}}
    assert (await simc.call(OA_ID, "cgi-bin/message/subscribe/bizsend", send))["errcode"] == 43101
    answer = await simc.push(OA_ID, "alice", "subscribe_consent", accept=["TPL_A", "TPL_B"], reject=["TPL_C"])
    assert answer["consents"] == {"TPL_A": 1, "TPL_B": 1}
    await simc.push(OA_ID, "alice", "subscribe_consent", accept="TPL_A")
    codes = [(await simc.call(OA_ID, "cgi-bin/message/subscribe/bizsend", send))["errcode"] for _ in range(3)]
    assert codes == [0, 0, 43101]
    assert (await simc.call(OA_ID, "cgi-bin/message/subscribe/bizsend",
                            {**send, "template_id": "TPL_B"}))["errcode"] == 0
    assert (await simc.call(OA_ID, "cgi-bin/message/subscribe/bizsend",
                            {**send, "template_id": "TPL_C"}))["errcode"] == 43101
    people = await simc.get("/_sim/people", app_id=OA_ID, person="alice")
    assert people[0]["consents"] == {"TPL_A": 0, "TPL_B": 0}


async def test_mini_program_subscribe_messages_count_consents(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    login = await simc.push(MP_ID, "bob", "mp_login")
    send = {"touser": login["openid"], "template_id": "MP_TPL", "page": "pages/order", "data": {}}
    assert (await simc.call(MP_ID, "cgi-bin/message/subscribe/send", send))["errcode"] == 43101
    await simc.push(MP_ID, "bob", "subscribe_consent", accept=["MP_TPL"])
    assert (await simc.call(MP_ID, "cgi-bin/message/subscribe/send", send))["errcode"] == 0
    assert (await simc.call(MP_ID, "cgi-bin/message/subscribe/send", send))["errcode"] == 43101


async def test_mini_program_windows(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    oid = (await simc.push(MP_ID, "bob", "enter_tempsession", session_from="order-42"))["openid"]
    assert [await simc.text(MP_ID, oid) for _ in range(3)] == [0, 0, 45047]
    await simc.advance(61)
    assert await simc.text(MP_ID, oid) == 45015
    await simc.push(MP_ID, "bob", "text", text="在吗")
    assert [await simc.text(MP_ID, oid) for _ in range(6)] == [0, 0, 0, 0, 0, 45047]
    await simc.advance(HOURS_48 + 1)
    assert await simc.text(MP_ID, oid) == 45015
    link = {"touser": oid, "msgtype": "voice", "voice": {"media_id": "m"}}
    assert (await simc.call(MP_ID, "cgi-bin/message/custom/send", link))["errcode"] == 40008


async def test_the_fifth_mass_message_of_a_month_silently_skips_the_user(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    alice = await follower(simc, "alice")
    mass = {"filter": {"is_to_all": True}, "msgtype": "text", "text": {"content": "新品上市"}}
    for _ in range(4):
        answer = await simc.call(OA_ID, "cgi-bin/message/mass/sendall", mass)
        assert answer["errcode"] == 0 and answer["msg_id"]
    bob = await follower(simc, "bob")  # joins later: still has his 4
    fifth = await simc.call(OA_ID, "cgi-bin/message/mass/sendall", mass)
    assert fifth["errcode"] == 0  # WeChat accepts the job and skips alice without a word
    assert len(await simc.get("/_sim/messages", app_id=OA_ID, to=alice)) == 4
    assert len(await simc.get("/_sim/messages", app_id=OA_ID, to=bob)) == 1
    skipped = await simc.get("/_sim/refusals", app_id=OA_ID, to=alice)
    assert len(skipped) == 1 and skipped[0]["silent"] is True and skipped[0]["errcode"] is None
    assert skipped[0]["msg_id"] == fifth["msg_id"]
    jobs = await simc.get("/_sim/mass", app_id=OA_ID)
    assert jobs[-1]["sent_to"] == [bob]
    assert jobs[-1]["skipped"] == [{"openid": alice, "reason": "monthly mass-send cap (4)"}]
    await simc.advance(32 * 24 * 3600)  # a new natural month
    to_both = await simc.call(OA_ID, "cgi-bin/message/mass/send", {"touser": [alice, bob], **mass})
    assert to_both["errcode"] == 0
    assert len(await simc.get("/_sim/messages", app_id=OA_ID, to=alice)) == 5
    one = await simc.call(OA_ID, "cgi-bin/message/mass/send", {"touser": [alice], **mass})
    assert one["errcode"] == 40130


async def test_mass_clientmsgid_is_idempotent(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    await follower(simc)
    mass = {"filter": {"is_to_all": True}, "msgtype": "text", "text": {"content": "x"}, "clientmsgid": "c-1"}
    assert (await simc.call(OA_ID, "cgi-bin/message/mass/sendall", mass))["errcode"] == 0
    assert (await simc.call(OA_ID, "cgi-bin/message/mass/sendall", mass))["errcode"] == 45065


async def test_login_codes_are_one_time_and_live_five_minutes(simc: Sim) -> None:
    await simc.register("mp", MP_ID, open_platform="brand")
    await simc.register("oa", OA_ID, open_platform="brand")

    async def session(code: str, secret: str = SECRET) -> dict[str, Any]:
        r = await simc.http.get("/wechat-api/sns/jscode2session", params={
            "appid": MP_ID, "secret": secret, "js_code": code, "grant_type": "authorization_code"})
        return dict(r.json())

    login = await simc.push(MP_ID, "carol", "mp_login")
    assert login["delivered"] is False and login["attempts"] == 0  # wx.login pushes nothing
    answer = await session(login["code"])
    assert answer["openid"] == login["openid"] and answer["session_key"] and "errcode" not in answer
    oa_openid = await follower(simc, "carol")
    info = await simc.call(OA_ID, "cgi-bin/user/info", openid=oa_openid)
    assert answer["unionid"] == info["unionid"]  # one Open Platform account: one unionid
    assert oa_openid != answer["openid"]
    assert (await session(login["code"]))["errcode"] == 40163
    assert (await session("made-up-code"))["errcode"] == 40029
    late = await simc.push(MP_ID, "carol", "mp_login")
    assert (await session(late["code"], secret="wrong"))["errcode"] == 40125
    await simc.advance(301)
    assert (await session(late["code"]))["errcode"] == 40029


async def test_unionid_only_with_an_open_platform(simc: Sim) -> None:
    await simc.register("mp", MP_ID)
    login = await simc.push(MP_ID, "dave", "mp_login")
    assert "unionid" not in login
    r = await simc.http.get("/wechat-api/sns/jscode2session", params={
        "appid": MP_ID, "secret": SECRET, "js_code": login["code"], "grant_type": "authorization_code"})
    assert set(r.json()) == {"openid", "session_key"}


async def test_user_info_and_batchget(simc: Sim) -> None:
    await simc.register("oa", OA_ID, open_platform="brand")
    a = await follower(simc, "alice", scene="spring")
    b = await follower(simc, "bob")
    info = await simc.call(OA_ID, "cgi-bin/user/info", openid=a, lang="zh_CN")
    assert info["subscribe"] == 1 and info["openid"] == a and len(info["unionid"]) == 28
    assert info["subscribe_scene"] == "ADD_SCENE_QR_CODE" and info["qr_scene_str"] == "spring"
    assert "nickname" not in info  # WeChat stopped returning nicknames in 2021
    batch = await simc.call(OA_ID, "cgi-bin/user/info/batchget",
                            {"user_list": [{"openid": a, "lang": "zh_CN"}, {"openid": b}]})
    assert [u["openid"] for u in batch["user_info_list"]] == [a, b]
    too_many = {"user_list": [{"openid": a}] * 101}
    assert (await simc.call(OA_ID, "cgi-bin/user/info/batchget", too_many))["errcode"] == 40032
    await simc.push(OA_ID, "bob", "unfollow")
    gone = await simc.call(OA_ID, "cgi-bin/user/info", openid=b)
    assert gone["subscribe"] == 0 and gone["openid"] == b


async def test_user_get_pages_by_next_openid(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    people = [f"p{i:05d}" for i in range(10001)]
    r = await simc.http.post("/_sim/people", json={"app_id": OA_ID, "people": people})
    assert r.status_code == 200
    first = await simc.call(OA_ID, "cgi-bin/user/get")
    assert first["total"] == 10001 and first["count"] == 10000
    assert first["next_openid"] == first["data"]["openid"][-1]
    second = await simc.call(OA_ID, "cgi-bin/user/get", next_openid=first["next_openid"])
    assert second["count"] == 1 and second["data"]["openid"][0] not in first["data"]["openid"]
    third = await simc.call(OA_ID, "cgi-bin/user/get", next_openid=second["next_openid"])
    assert third == {"total": 10001, "count": 0, "next_openid": ""}


async def test_menu_create_get_delete(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    assert (await simc.call(OA_ID, "cgi-bin/menu/get"))["errcode"] == 46003
    menu = {"button": [{"type": "click", "name": "联系我们", "key": "MENU_CONTACT"},
                       {"name": "更多", "sub_button": [{"type": "view", "name": "官网", "url": "https://example.com"}]}]}
    assert (await simc.call(OA_ID, "cgi-bin/menu/create", menu))["errcode"] == 0
    assert (await simc.call(OA_ID, "cgi-bin/menu/get"))["menu"]["button"] == menu["button"]
    four = {"button": [{"type": "click", "name": f"b{i}", "key": f"k{i}"} for i in range(4)]}
    assert (await simc.call(OA_ID, "cgi-bin/menu/create", four))["errcode"] == 40016
    bad_type = {"button": [{"type": "teleport", "name": "x", "key": "k"}]}
    assert (await simc.call(OA_ID, "cgi-bin/menu/create", bad_type))["errcode"] == 40017
    no_key = {"button": [{"type": "click", "name": "x"}]}
    assert (await simc.call(OA_ID, "cgi-bin/menu/create", no_key))["errcode"] == 40019
    assert (await simc.call(OA_ID, "cgi-bin/menu/delete"))["errcode"] == 0
    assert (await simc.call(OA_ID, "cgi-bin/menu/get"))["errcode"] == 46003


async def test_qr_codes_remember_their_scene(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    qr = await simc.call(OA_ID, "cgi-bin/qrcode/create", {
        "expire_seconds": 604800, "action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "fair"}}})
    assert qr["expire_seconds"] == 604800 and qr["ticket"] and qr["url"].startswith("http://weixin.qq.com/q/")
    permanent = await simc.call(OA_ID, "cgi-bin/qrcode/create", {
        "action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 42}}})
    assert "expire_seconds" not in permanent
    by_ticket = await simc.push(OA_ID, "erin", "follow", ticket=qr["ticket"])
    assert by_ticket["message"]["EventKey"] == "qrscene_fair" and by_ticket["message"]["Ticket"] == qr["ticket"]
    by_scene = await simc.push(OA_ID, "frank", "follow", scene="42")
    assert by_scene["message"]["Ticket"] == permanent["ticket"]
    scan = await simc.push(OA_ID, "erin", "scan", scene="42")
    assert scan["message"]["Event"] == "SCAN" and scan["message"]["EventKey"] == "42"
    assert (await simc.call(OA_ID, "cgi-bin/user/info", openid=by_scene["openid"]))["qr_scene"] == 42
    bad = await simc.call(OA_ID, "cgi-bin/qrcode/create", {"action_name": "QR_LIMIT_SCENE",
                                                           "action_info": {"scene": {"scene_id": 100001}}})
    assert bad["errcode"] == 40097
    await simc.push(OA_ID, "gina", "follow", ticket="gQnothing", expect=400)


async def test_bad_push_fields_are_refused_without_side_effects(simc: Sim) -> None:
    await simc.register("oa", OA_ID)
    answer = await simc.push(OA_ID, "zoe", "follow", gender="female", expect=400)
    assert answer["code"] == "bad_field"
    await follower(simc, "zoe")
    assert (await simc.push(OA_ID, "zoe", "location", latitude="north", expect=400))["code"] == "bad_field"
    assert (await simc.push(OA_ID, "zoe", "click", expect=400))["code"] == "key_required"
    assert (await simc.push(OA_ID, "zoe", "follow", timeout_seconds=0, expect=400))["code"] == "bad_timeout"
