"""Official Account and Mini Program endpoints with WeChat's rules: customer-service windows and quotas,
following, template / subscription / mass messages (consents, the monthly cap), users, menus, QR codes."""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

from siyu.simulator import rules
from siyu.simulator.api import MP, OA, OA_MP, Call, WeChatError, content_ok, endpoint, ok
from siyu.simulator.media import check_sendable
from siyu.simulator.state import Member, QrCode, SimApp, State
from siyu.simulator.wire import DEFAULT_TIMEOUT, deliver, seal

OA_CS_TYPES = {"text", "image", "voice", "video", "music", "news", "mpnews", "mpnewsarticle", "msgmenu",
               "wxcard", "miniprogrampage"}
MP_CS_TYPES = {"text", "image", "link", "miniprogrampage"}
MEDIA_MSGTYPES = {"image", "voice", "video"}


def _member(call: Call, openid_: Any) -> Member:
    call.to = str(openid_ or "")
    m = call.a.member_by_openid(call.to)
    if m is None:
        raise WeChatError(40003)
    return m


@endpoint("wechat-api", "cgi-bin/message/custom/send", "POST", OA_MP)
def custom_send(call: Call) -> dict[str, Any]:
    app, body = call.a, call.body
    m = _member(call, body.get("touser"))
    msgtype = str(body.get("msgtype", ""))
    if msgtype not in (OA_CS_TYPES if app.kind == "oa" else MP_CS_TYPES):
        raise WeChatError(40008)
    if not content_ok(body, msgtype):
        raise WeChatError(44004)
    if msgtype in MEDIA_MSGTYPES:  # a media id WeChat issued to this app, younger than 3 days
        check_sendable(call, body[msgtype].get("media_id"))
    if app.kind == "oa" and not m.following:
        raise WeChatError(rules.OA_OUT_OF_WINDOW)
    code = m.window.consume(call.now, rules.OA_OUT_OF_WINDOW, rules.OA_QUOTA_USED)
    if code:
        raise WeChatError(code)
    call.sim.accept(app, call.path, m.openid, body)
    return ok()


@endpoint("wechat-api", "cgi-bin/message/template/send", "POST", OA)
def template_send(call: Call) -> dict[str, Any]:
    body = call.body
    m = _member(call, body.get("touser"))
    if not body.get("template_id"):
        raise WeChatError(40037)
    if not m.following:
        raise WeChatError(43004)
    msgid = call.sim.next_msgid()
    call.sim.accept(call.a, call.path, m.openid, body, msgid=msgid)
    _announce(call.a, call.now, {"Event": "TEMPLATESENDJOBFINISH", "MsgID": msgid, "Status": "success"}, m.openid)
    return ok(msgid=msgid)


def _subscribe_send(call: Call) -> dict[str, Any]:
    body = call.body
    m = _member(call, body.get("touser"))
    template_id = str(body.get("template_id", ""))
    if not template_id:
        raise WeChatError(40037)
    if m.consents[template_id] <= 0:  # one consent = one send
        raise WeChatError(43101)
    m.consents[template_id] -= 1
    msgid = call.sim.next_msgid()
    call.sim.accept(call.a, call.path, m.openid, body, msgid=msgid)
    return ok(msgid=msgid)


@endpoint("wechat-api", "cgi-bin/message/subscribe/bizsend", "POST", OA)
def subscribe_bizsend(call: Call) -> dict[str, Any]:
    return _subscribe_send(call)


@endpoint("wechat-api", "cgi-bin/message/subscribe/send", "POST", MP)
def subscribe_send(call: Call) -> dict[str, Any]:
    return _subscribe_send(call)


MASS_TYPES = {"text", "mpnews", "voice", "image", "mpvideo", "wxcard"}


def _mass(call: Call, targets: list[Member]) -> dict[str, Any]:
    """Each follower gets at most 4 mass messages per natural month; WeChat skips the others silently."""
    app, body, sim = call.a, call.body, call.sim
    msgtype = str(body.get("msgtype", ""))
    if msgtype not in MASS_TYPES:
        raise WeChatError(40008)
    if not content_ok(body, msgtype):
        raise WeChatError(44004)
    client_msg_id = str(body.get("clientmsgid", ""))
    if client_msg_id and client_msg_id in app.client_msg_ids:
        raise WeChatError(45065, f"clientmsgid exist, msg_id {app.client_msg_ids[client_msg_id]}")
    msg_id = sim.next_msgid() % 10**10
    sent: list[str] = []
    skipped: list[dict[str, str]] = []
    for m in targets:
        if not m.following:
            skipped.append({"openid": m.openid, "reason": "not following"})
        elif not rules.mass_allowed(m.mass_by_month, call.now):
            skipped.append({"openid": m.openid, "reason": "monthly mass-send cap (4)"})
        else:
            sent.append(m.openid)
            sim.accept(app, call.path, m.openid, body, msg_id=msg_id)
    for s in skipped:
        sim.refuse(app.app_id, call.path, s["openid"], body, None, s["reason"], silent=True, msg_id=msg_id)
    if client_msg_id:
        app.client_msg_ids[client_msg_id] = msg_id
    app.mass_jobs.append({"msg_id": msg_id, "endpoint": call.path, "payload": body, "sent_to": sent,
                          "skipped": skipped, "created_at": call.now})
    _announce(app, call.now, {"Event": "MASSSENDJOBFINISH", "MsgID": msg_id, "Status": "send success",
                              "TotalCount": len(targets), "FilterCount": len(sent), "SentCount": len(sent),
                              "ErrorCount": 0})
    return ok("send job submission success", msg_id=msg_id, msg_data_id=msg_id * 10 + 1)


_pushing: set[asyncio.Task[object]] = set()


def _announce(app: SimApp, now: float, fields: dict[str, Any], sender: str = "mphelper") -> None:
    """A job's result pushed to the account's callback URL after the API answered, as WeChat does
    (MASSSENDJOBFINISH, TEMPLATESENDJOBFINISH): from the system sender, once the job is done."""
    if not app.callback_url:
        return
    message = {"ToUserName": app.original_id, "FromUserName": sender, "CreateTime": int(now), "MsgType": "event",
               **fields}
    task = asyncio.get_running_loop().create_task(deliver(app.callback_url, seal(app, message, now), DEFAULT_TIMEOUT))
    _pushing.add(task)
    task.add_done_callback(_pushing.discard)


@endpoint("wechat-api", "cgi-bin/message/mass/sendall", "POST", OA)
def mass_sendall(call: Call) -> dict[str, Any]:
    # Tags are not simulated: a tag_id filter reaches every follower, like is_to_all.
    followers = sorted((m for m in call.a.members.values() if m.following), key=lambda m: m.follow_seq)
    return _mass(call, followers)


@endpoint("wechat-api", "cgi-bin/message/mass/send", "POST", OA)
def mass_send(call: Call) -> dict[str, Any]:
    touser = call.body.get("touser")
    if not isinstance(touser, list) or len(touser) < 2:
        raise WeChatError(40130)
    if len(touser) > 10000:
        raise WeChatError(40032)
    targets = [_member(call, oid) for oid in touser]
    call.to = ""
    return _mass(call, targets)


@endpoint("wechat-api", "cgi-bin/message/mass/get", "POST", OA)
def mass_get(call: Call) -> dict[str, Any]:
    msg_id = call.body.get("msg_id")
    job = next((j for j in call.a.mass_jobs if str(j["msg_id"]) == str(msg_id)), None)
    if job is None:
        raise WeChatError(40097)
    return {"msg_id": job["msg_id"], "msg_status": "SEND_SUCCESS"}


# --- OA: users ------------------------------------------------------------------------------------

def _user_info(app: SimApp, m: Member, sim: State, lang: str) -> dict[str, Any]:
    uid = app.unionid(m.person)
    if not m.following:
        info: dict[str, Any] = {"subscribe": 0, "openid": m.openid}
        if uid:
            info["unionid"] = uid
        return info
    # Since 2021-12-27 user/info no longer returns nickname / headimgurl.
    info = {"subscribe": 1, "openid": m.openid, "language": sim.people[m.person].language or lang,
            "subscribe_time": m.subscribe_time}
    if uid:
        info["unionid"] = uid
    info.update({"remark": m.remark, "groupid": 0, "tagid_list": [], "subscribe_scene": m.subscribe_scene,
                 "qr_scene": m.qr_scene, "qr_scene_str": m.qr_scene_str})
    return info


@endpoint("wechat-api", "cgi-bin/user/info", "GET", OA)
def user_info(call: Call) -> dict[str, Any]:
    m = _member(call, call.query.get("openid"))
    return _user_info(call.a, m, call.sim, call.query.get("lang", "zh_CN"))


@endpoint("wechat-api", "cgi-bin/user/info/batchget", "POST", OA)
def user_info_batchget(call: Call) -> dict[str, Any]:
    users = call.body.get("user_list")
    if not isinstance(users, list) or not users or len(users) > rules.BATCHGET_MAX:
        raise WeChatError(40032)
    members = [_member(call, u.get("openid") if isinstance(u, dict) else None) for u in users]
    call.to = ""
    return {"user_info_list": [_user_info(call.a, m, call.sim, "zh_CN") for m in members]}


@endpoint("wechat-api", "cgi-bin/user/get", "GET", OA)
def user_get(call: Call) -> dict[str, Any]:
    followers = sorted((m for m in call.a.members.values() if m.following), key=lambda m: m.follow_seq)
    after = 0
    if call.query.get("next_openid"):
        after = _member(call, call.query["next_openid"]).follow_seq
        call.to = ""
    page = [m.openid for m in followers if m.follow_seq > after][:rules.USER_GET_PAGE]
    answer: dict[str, Any] = {"total": len(followers), "count": len(page)}
    if page:
        answer["data"] = {"openid": page}
    answer["next_openid"] = page[-1] if page else ""
    return answer


# --- OA: menu and QR codes ------------------------------------------------------------------------

BUTTON_TYPES = {"click", "view", "miniprogram", "scancode_push", "scancode_waitmsg", "pic_sysphoto",
                "pic_photo_or_album", "pic_weixin", "location_select", "media_id", "article_id",
                "article_view_limited"}


def _check_button(b: Any, top: bool) -> None:
    if not isinstance(b, dict):
        raise WeChatError(47001)
    name = str(b.get("name", ""))
    if not name or len(name.encode()) > (16 if top else 60):
        raise WeChatError(40018)
    subs = b.get("sub_button")
    if top and subs:
        if not isinstance(subs, list) or len(subs) > 5:
            raise WeChatError(40023)
        for s in subs:
            _check_button(s, top=False)
        return
    kind = b.get("type")
    if kind not in BUTTON_TYPES:
        raise WeChatError(40017)
    if kind in ("click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album",
                "pic_weixin", "location_select") and not (0 < len(str(b.get("key", "")).encode()) <= 128):
        raise WeChatError(40019)
    if kind == "view" and not (0 < len(str(b.get("url", "")).encode()) <= 1024):
        raise WeChatError(40020)


@endpoint("wechat-api", "cgi-bin/menu/create", "POST", OA)
def menu_create(call: Call) -> dict[str, Any]:
    buttons = call.body.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise WeChatError(40016)
    for b in buttons:
        _check_button(b, top=True)
    call.a.menu_id += 1
    call.a.menu = {"button": buttons}
    return ok()


@endpoint("wechat-api", "cgi-bin/menu/get", "GET", OA)
def menu_get(call: Call) -> dict[str, Any]:
    if call.a.menu is None:
        raise WeChatError(46003)
    return {"menu": {**call.a.menu, "menuid": call.a.menu_id}}


@endpoint("wechat-api", "cgi-bin/menu/delete", "GET", OA)
def menu_delete(call: Call) -> dict[str, Any]:
    call.a.menu = None
    return ok()


QR_ACTIONS = {"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"}


@endpoint("wechat-api", "cgi-bin/qrcode/create", "POST", OA)
def qrcode_create(call: Call) -> dict[str, Any]:
    body = call.body
    action = body.get("action_name")
    scene = (body.get("action_info") or {}).get("scene") or {}
    if action not in QR_ACTIONS or not isinstance(scene, dict):
        raise WeChatError(40097)
    if "STR" in str(action):
        value = str(scene.get("scene_str", ""))
        if not 1 <= len(value) <= 64:
            raise WeChatError(40097)
    else:
        try:
            number = int(scene.get("scene_id", 0))
        except (TypeError, ValueError):
            raise WeChatError(40097) from None
        limit = 100000 if "LIMIT" in str(action) else 2**32 - 1
        if not 1 <= number <= limit:
            raise WeChatError(40097)
        value = str(number)
    permanent = "LIMIT" in str(action)
    expire = None if permanent else min(max(int(body.get("expire_seconds") or 60), 60), 2592000)
    ticket = "gQ" + base64.b64encode(secrets.token_bytes(45)).decode()
    call.a.qrcodes[ticket] = QrCode(ticket=ticket, scene=value, action_name=str(action), created_at=call.now,
                                    expires_at=None if expire is None else call.now + expire)
    answer: dict[str, Any] = {"ticket": ticket}
    if expire is not None:
        answer["expire_seconds"] = expire
    answer["url"] = f"http://weixin.qq.com/q/{secrets.token_urlsafe(18)}"
    return answer
