"""WeCom: external contacts, welcome codes (20 s, once), mass tasks, 微信客服 sync_msg paging and send_msg
windows."""

from __future__ import annotations

from typing import Any

from tests.integration.simulator.conftest import CORP_ID, Sim

HOURS_48 = 48 * 3600


async def test_external_contacts_and_follow_users(simc: Sim) -> None:
    await simc.register("wecom", CORP_ID, open_platform="brand", follow_users=["wangfang", "liwei"])
    added = await simc.push(CORP_ID, "alice", "add_contact", user_id="liwei", state="fair2026")
    ext = added["external_userid"]
    assert ext.startswith("wm") and len(ext) == 32 and added["welcome_code"]
    got = await simc.call(CORP_ID, "cgi-bin/externalcontact/get", external_userid=ext)
    assert got["errcode"] == 0
    assert got["external_contact"]["external_userid"] == ext and got["external_contact"]["type"] == 1
    assert got["external_contact"]["name"] and got["external_contact"]["unionid"] == added["unionid"]
    assert [(f["userid"], f["state"]) for f in got["follow_user"]] == [("liwei", "fair2026")]
    listed = await simc.call(CORP_ID, "cgi-bin/externalcontact/list", userid="liwei")
    assert listed["external_userid"] == [ext]
    assert (await simc.call(CORP_ID, "cgi-bin/externalcontact/list", userid="wangfang"))["errcode"] == 84061
    users = await simc.call(CORP_ID, "cgi-bin/externalcontact/get_follow_user_list")
    assert users["follow_user"] == ["wangfang", "liwei"]
    await simc.push(CORP_ID, "alice", "add_contact", user_id="liwei", expect=409)
    await simc.push(CORP_ID, "alice", "edit_contact", user_id="liwei", remark="VIP")
    await simc.push(CORP_ID, "alice", "del_follow_user", user_id="liwei")
    assert (await simc.call(CORP_ID, "cgi-bin/externalcontact/get", external_userid=ext))["errcode"] == 84061
    unknown = await simc.call(CORP_ID, "cgi-bin/externalcontact/get", external_userid="wmnobody")
    assert unknown["errcode"] == 40096
    await simc.push(CORP_ID, "alice", "delete_contact", user_id="liwei", expect=409)


async def welcome(simc: Sim, code: str) -> int:
    answer = await simc.call(CORP_ID, "cgi-bin/externalcontact/send_welcome_msg",
                             {"welcome_code": code, "text": {"content": "您好，我是您的专属顾问"}})
    return int(answer["errcode"])


async def test_welcome_codes_last_20_seconds_and_work_once(simc: Sim) -> None:
    await simc.register("wecom", CORP_ID)
    first = await simc.push(CORP_ID, "alice", "add_contact")
    await simc.advance(19)
    assert await welcome(simc, first["welcome_code"]) == 0
    assert await welcome(simc, first["welcome_code"]) == 41051  # once
    late = await simc.push(CORP_ID, "bob", "add_contact")
    await simc.advance(21)
    assert await welcome(simc, late["welcome_code"]) == 41051  # 20 s
    assert await welcome(simc, "not-a-code") == 41051
    sent = await simc.get("/_sim/messages", app_id=CORP_ID, endpoint="cgi-bin/externalcontact/send_welcome_msg")
    assert [(m["to"], m["person"], m["userid"]) for m in sent] == [(first["external_userid"], "alice", "zhangsan")]
    none = await simc.push(CORP_ID, "carol", "add_contact", welcome_code=False)
    assert "welcome_code" not in none and "WelcomeCode" not in none["message"]


async def test_mass_tasks_wait_for_the_rep(simc: Sim) -> None:
    await simc.register("wecom", CORP_ID)
    a = (await simc.push(CORP_ID, "alice", "add_contact", user_id="zhangsan"))["external_userid"]
    b = (await simc.push(CORP_ID, "bob", "add_contact", user_id="lisi"))["external_userid"]
    answer = await simc.call(CORP_ID, "cgi-bin/externalcontact/add_msg_template", {
        "chat_type": "single", "sender": "zhangsan", "external_userid": [a, b],
        "text": {"content": "春季新品"}})
    assert answer["errcode"] == 0 and answer["msgid"] and answer["fail_list"] == [b]
    tasks = await simc.get("/_sim/wecom/tasks", app_id=CORP_ID)
    assert [(t["msgid"], t["status"], t["external_userid"]) for t in tasks] == [(answer["msgid"], "pending", [a])]
    assert await simc.get("/_sim/messages", app_id=CORP_ID) == []  # nothing reaches anyone before the rep confirms
    r = await simc.http.post(f"/_sim/wecom/tasks/{answer['msgid']}/confirm")
    assert r.status_code == 200 and r.json()["status"] == "sent"
    assert [m["to"] for m in await simc.get("/_sim/messages", app_id=CORP_ID)] == [a]
    assert (await simc.http.post(f"/_sim/wecom/tasks/{answer['msgid']}/confirm")).status_code == 409
    empty = await simc.call(CORP_ID, "cgi-bin/externalcontact/add_msg_template", {"sender": "zhangsan"})
    assert empty["errcode"] == 44004


async def sync(simc: Sim, **body: Any) -> dict[str, Any]:
    return await simc.call(CORP_ID, "cgi-bin/kf/sync_msg", body)


async def test_kf_sync_msg_pages_with_a_cursor(simc: Sim) -> None:
    app = await simc.register("wecom", CORP_ID)
    kfid = app["open_kfids"][0]
    pushed = [await simc.push(CORP_ID, f"c{i}", "kf_text", text=f"问题 {i}") for i in range(5)]
    token = pushed[-1]["kf_token"]
    assert pushed[0]["message"]["Event"] == "kf_msg_or_event" and pushed[0]["message"]["OpenKfId"] == kfid

    page1 = await sync(simc, cursor="", token=token, limit=2, open_kfid=kfid)
    assert page1["errcode"] == 0 and page1["has_more"] == 1 and len(page1["msg_list"]) == 2
    page2 = await sync(simc, cursor=page1["next_cursor"], token=token, limit=2, open_kfid=kfid)
    page3 = await sync(simc, cursor=page2["next_cursor"], token=token, limit=2, open_kfid=kfid)
    assert (page2["has_more"], page3["has_more"], len(page3["msg_list"])) == (1, 0, 1)
    contents = [m["text"]["content"] for p in (page1, page2, page3) for m in p["msg_list"]]
    assert contents == [f"问题 {i}" for i in range(5)]
    first = page1["msg_list"][0]
    assert first["origin"] == 3 and first["msgtype"] == "text" and first["open_kfid"] == kfid
    assert first["external_userid"] == pushed[0]["external_userid"] and first["msgid"] == pushed[0]["kf_msgid"]
    again = await sync(simc, cursor=page3["next_cursor"], token=token)
    assert again["msg_list"] == [] and again["has_more"] == 0 and again["next_cursor"] == page3["next_cursor"]

    assert (await sync(simc, cursor="", token="ENCforged"))["errcode"] == 95007
    assert (await sync(simc, cursor="garbage!", token=token))["errcode"] == 40058
    assert (await sync(simc, cursor="", token=token, limit=1001))["errcode"] == 40058
    assert (await sync(simc, cursor="", token=token, open_kfid="wkother"))["errcode"] == 95000
    await simc.advance(601)
    assert (await sync(simc, cursor="", token=token))["errcode"] == 95007  # the Token lives 10 minutes


async def test_kf_sync_msg_keeps_three_days_and_rate_limits_without_a_token(simc: Sim) -> None:
    await simc.register("wecom", CORP_ID)
    await simc.push(CORP_ID, "old", "kf_text", text="三天前")
    await simc.advance(3 * 24 * 3600 + 1)
    fresh = await simc.push(CORP_ID, "new", "kf_text", text="今天")
    page = await sync(simc, cursor="", token=fresh["kf_token"])
    assert [m["text"]["content"] for m in page["msg_list"]] == ["今天"]
    codes = [(await sync(simc, cursor=""))["errcode"] for _ in range(11)]
    assert codes == [0] * 10 + [45009]


async def kf_send(simc: Sim, touser: str, open_kfid: str) -> int:
    answer = await simc.call(CORP_ID, "cgi-bin/kf/send_msg", {
        "touser": touser, "open_kfid": open_kfid, "msgtype": "text", "text": {"content": "您好"}})
    return int(answer["errcode"])


async def test_kf_send_msg_window(simc: Sim) -> None:
    app = await simc.register("wecom", CORP_ID, open_kfids=["wkAAA", "wkBBB"])
    ext = (await simc.push(CORP_ID, "alice", "add_contact"))["external_userid"]
    assert await kf_send(simc, ext, "wkAAA") == 95018  # never wrote to 微信客服
    await simc.push(CORP_ID, "alice", "kf_text", open_kfid="wkAAA", text="在吗")
    assert [await kf_send(simc, ext, "wkAAA") for _ in range(6)] == [0, 0, 0, 0, 0, 95001]
    assert await kf_send(simc, ext, "wkBBB") == 95018  # the window belongs to one 微信客服 account
    assert await kf_send(simc, ext, "wkZZZ") == 95000
    await simc.push(CORP_ID, "alice", "kf_text", open_kfid="wkAAA", text="还有一个问题")
    assert await kf_send(simc, ext, "wkAAA") == 0
    await simc.advance(HOURS_48 + 1)
    assert await kf_send(simc, ext, "wkAAA") == 95018
    accepted = await simc.get("/_sim/messages", app_id=CORP_ID, endpoint="cgi-bin/kf/send_msg")
    assert len(accepted) == 6 and accepted[0]["open_kfid"] == "wkAAA" and accepted[0]["to"] == ext
    assert app["open_kfids"] == ["wkAAA", "wkBBB"]
    accounts = await simc.call(CORP_ID, "cgi-bin/kf/account/list")
    assert [a["open_kfid"] for a in accounts["account_list"]] == ["wkAAA", "wkBBB"]
