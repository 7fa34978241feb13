"""What simulated customers do: each action changes WeChat's state (following, windows, consents, WeCom
contacts, 微信客服 messages) and becomes WeChat's push, delivered by `wire` to the app's callback URL."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siyu.simulator import media as sim_media
from siyu.simulator import rules
from siyu.simulator.state import Contact, FollowInfo, Member, OneTimeCode, SimApp, State
from siyu.simulator.wire import DEFAULT_TIMEOUT, deliver, open_reply, report_login, seal


class PushRefused(Exception):
    """The simulated customer cannot do that (e.g. write to an OA they do not follow)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Ctx:
    sim: State
    app: SimApp
    person: str
    data: dict[str, Any]
    now: float
    extra: dict[str, Any] = field(default_factory=dict)  # goes into the push's answer

    def create_time(self) -> int:
        """The simulated second, bumped past this person's previous push: WeChat's event dedup key is
        FromUserName + CreateTime, so two pushes of one person must not share a second."""
        ct = max(int(self.now), self.app.last_create_time.get(self.person, 0) + 1)
        self.app.last_create_time[self.person] = ct
        return ct

    def text(self, *names: str, default: str = "") -> str:
        for n in names:
            if self.data.get(n) not in (None, ""):
                return str(self.data[n])
        return default


Action = Callable[[Ctx], "dict[str, Any] | None"]


def _member(ctx: Ctx, must_follow: bool = False) -> Member:
    m = ctx.sim.member(ctx.app, ctx.person)
    ctx.extra["openid"] = m.openid
    uid = ctx.app.unionid(ctx.person)
    if uid:
        ctx.extra["unionid"] = uid
    if must_follow and ctx.app.kind == "oa" and not m.following:
        raise PushRefused(409, "not_following", f"{ctx.person} does not follow {ctx.app.app_id}")
    return m


def _base(ctx: Ctx, m: Member, msgtype: str) -> dict[str, Any]:
    return {"ToUserName": ctx.app.original_id, "FromUserName": m.openid, "CreateTime": ctx.create_time(),
            "MsgType": msgtype}


def _event(ctx: Ctx, m: Member, event: str) -> dict[str, Any]:
    return {**_base(ctx, m, "event"), "Event": event}


def _media_id() -> str:
    return secrets.token_urlsafe(48)[:64]


def _scene_and_ticket(ctx: Ctx) -> tuple[str, str]:
    """The QR code a scan/follow went through: by its ticket, or by scene (the newest code with that
    scene, else a ticket made up on the spot)."""
    ticket = ctx.text("ticket")
    if ticket:
        qr = ctx.app.qrcodes.get(ticket)
        if qr is None or (qr.expires_at is not None and qr.expires_at < ctx.now):
            raise PushRefused(400, "unknown_ticket", "no live QR code has that ticket")
        return qr.scene, qr.ticket
    scene = ctx.text("scene", "scene_str", "scene_id")
    if not scene:
        return "", ""
    live = [q for q in ctx.app.qrcodes.values()
            if q.scene == scene and (q.expires_at is None or q.expires_at >= ctx.now)]
    if live:
        return scene, max(live, key=lambda q: q.created_at).ticket
    return scene, "gQ" + secrets.token_urlsafe(60)


def oa_follow(ctx: Ctx) -> dict[str, Any]:
    m = _member(ctx)
    if m.following:
        raise PushRefused(409, "already_following", f"{ctx.person} already follows {ctx.app.app_id}")
    scene, ticket = _scene_and_ticket(ctx)
    ctx.sim.follow(ctx.app, m, scene=ctx.text("subscribe_scene"), qr=scene)
    m.window.open("event", ctx.now, rules.EVENT_WINDOW)
    msg = _event(ctx, m, "subscribe")
    if scene:
        msg.update({"EventKey": f"qrscene_{scene}", "Ticket": ticket})
    return msg


def oa_unfollow(ctx: Ctx) -> dict[str, Any]:
    m = _member(ctx, must_follow=True)
    m.following = False
    m.window.close()
    return _event(ctx, m, "unsubscribe")


def oa_scan(ctx: Ctx) -> dict[str, Any]:
    m = _member(ctx)
    if not m.following:  # a non-follower scanning a parametric QR code follows through it
        ctx.extra["followed"] = True
        return oa_follow(ctx)
    scene, ticket = _scene_and_ticket(ctx)
    if not scene:
        raise PushRefused(400, "scene_required", "scan needs a scene or a ticket")
    m.window.open("event", ctx.now, rules.EVENT_WINDOW)
    return {**_event(ctx, m, "SCAN"), "EventKey": scene, "Ticket": ticket}


def _user_message(ctx: Ctx, msgtype: str, fields: dict[str, Any]) -> dict[str, Any]:
    m = _member(ctx, must_follow=True)
    m.window.open("message", ctx.now, rules.MESSAGE_WINDOW)  # a new user message: a fresh 5 / 48 h
    msgid = ctx.sim.next_msgid()
    ctx.extra["msg_id"] = msgid
    return {**_base(ctx, m, msgtype), **fields, "MsgId": msgid}


def user_text(ctx: Ctx) -> dict[str, Any]:
    return _user_message(ctx, "text", {"Content": ctx.text("text", "content", default="你好")})


def _issued(ctx: Ctx, kind: str, field: str = "media_id", sample_field: str = "sample") -> str:
    """The media id of what the customer sends: the caller's own (WeChat never issued it: media/get answers
    40007), or a new one the simulator issues for a sample (`sample`, `size_bytes` pads it for size tests)."""
    given = ctx.text(field)
    if given:
        return given
    return sim_media.issue(ctx.app, kind, ctx.now, ctx.text(sample_field), int(ctx.data.get("size_bytes") or 0),
                           ctx.text("file_name"))


def user_image(ctx: Ctx) -> dict[str, Any]:
    # PicUrl is a link WeChat puts in the message; Siyu must never fetch it (only media/get by MediaId).
    return _user_message(ctx, "image", {
        "PicUrl": ctx.text("pic_url", default=f"http://mmbiz.qpic.cn/mmbiz_jpg/{secrets.token_hex(16)}/0"),
        "MediaId": _issued(ctx, "image")})


def user_voice(ctx: Ctx) -> dict[str, Any]:
    fields: dict[str, Any] = {"MediaId": _issued(ctx, "voice"), "Format": ctx.text("format", default="amr")}
    if ctx.text("recognition"):
        fields["Recognition"] = ctx.text("recognition")
    return _user_message(ctx, "voice", fields)


def user_video(ctx: Ctx, msgtype: str = "video") -> dict[str, Any]:
    return _user_message(ctx, msgtype, {"MediaId": _issued(ctx, "video"),
                                        "ThumbMediaId": _issued(ctx, "image", "thumb_media_id", "thumb_sample")})


def user_shortvideo(ctx: Ctx) -> dict[str, Any]:
    return user_video(ctx, "shortvideo")


def user_location(ctx: Ctx) -> dict[str, Any]:
    return _user_message(ctx, "location", {
        "Location_X": float(ctx.data.get("latitude", 31.230416)),
        "Location_Y": float(ctx.data.get("longitude", 121.473701)),
        "Scale": int(ctx.data.get("scale", 15)), "Label": ctx.text("label", default="上海市黄浦区")})


def user_link(ctx: Ctx) -> dict[str, Any]:
    return _user_message(ctx, "link", {"Title": ctx.text("title", default="链接"),
                                       "Description": ctx.text("description", default=""),
                                       "Url": ctx.text("url", default="https://example.com/")})


def oa_click(ctx: Ctx) -> dict[str, Any]:
    key = ctx.text("key")
    if not key:
        raise PushRefused(400, "key_required", "click needs the button's key")
    m = _member(ctx, must_follow=True)
    m.window.open("event", ctx.now, rules.EVENT_WINDOW)  # 3 / 1 min; never the 5 / 48 h quota
    return {**_event(ctx, m, "CLICK"), "EventKey": key}


def oa_view(ctx: Ctx) -> dict[str, Any]:
    url = ctx.text("url")
    if not url:
        raise PushRefused(400, "url_required", "view needs the button's url")
    m = _member(ctx, must_follow=True)
    return {**_event(ctx, m, "VIEW"), "EventKey": url}


def _template_ids(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def subscribe_consent(ctx: Ctx) -> dict[str, Any]:
    accept, reject = _template_ids(ctx.data.get("accept")), _template_ids(ctx.data.get("reject"))
    if not accept and not reject:
        raise PushRefused(400, "templates_required", "subscribe_consent needs accept and/or reject template ids")
    m = _member(ctx)
    for t in accept:
        m.consents[t] += 1  # one consent, one send
    scene = int(ctx.data.get("popup_scene", 0 if ctx.app.kind == "mp" else 2))
    items = [{"TemplateId": t, "SubscribeStatusString": status, "PopupScene": scene}
             for status, ids in (("accept", accept), ("reject", reject)) for t in ids]
    ctx.extra["consents"] = dict(m.consents)
    return {**_event(ctx, m, "subscribe_msg_popup_event"), "SubscribeMsgPopupEvent": {"List": items}}


def mp_login(ctx: Ctx) -> None:
    m = _member(ctx)
    code = secrets.token_urlsafe(24)[:32]
    m.session_key = secrets.token_urlsafe(18)[:24]
    ctx.app.js_codes[code] = OneTimeCode(person=ctx.person, issued_at=ctx.now)
    ctx.extra.update({"code": code, "expires_in": rules.JS_CODE_TTL})
    return None


def mp_text(ctx: Ctx) -> dict[str, Any]:
    return user_text(ctx)


def mp_image(ctx: Ctx) -> dict[str, Any]:
    return user_image(ctx)


def mp_page(ctx: Ctx) -> dict[str, Any]:
    return _user_message(ctx, "miniprogrampage", {
        "Title": ctx.text("title", default="小程序页面"), "AppId": ctx.app.app_id,
        "PagePath": ctx.text("page_path", "page", default="pages/index/index"),
        "ThumbUrl": ctx.text("thumb_url", default=""), "ThumbMediaId": ctx.text("thumb_media_id", default="")})


def mp_enter_tempsession(ctx: Ctx) -> dict[str, Any]:
    m = _member(ctx)
    m.window.open("tempsession", ctx.now, rules.TEMPSESSION_WINDOW)
    return {**_event(ctx, m, "user_enter_tempsession"), "SessionFrom": ctx.text("session_from", default="")}


def _contact(ctx: Ctx) -> Contact:
    c = ctx.sim.contact(ctx.app, ctx.person)
    ctx.extra["external_userid"] = c.external_userid
    uid = ctx.app.unionid(ctx.person)
    if uid:
        ctx.extra["unionid"] = uid
    return c


def _rep(ctx: Ctx) -> str:
    return ctx.text("user_id", "userid", default=ctx.app.follow_users[0] if ctx.app.follow_users else "zhangsan")


def _change(ctx: Ctx, c: Contact, change: str, userid: str) -> dict[str, Any]:
    return {"ToUserName": ctx.app.app_id, "FromUserName": "sys", "CreateTime": ctx.create_time(),
            "MsgType": "event", "Event": "change_external_contact", "ChangeType": change, "UserID": userid,
            "ExternalUserID": c.external_userid}


def _rep_notes(ctx: Ctx, f: FollowInfo) -> None:
    """What the rep writes about the customer in the WeCom client: remark, description, tags."""
    if "remark" in ctx.data:
        f.remark = str(ctx.data["remark"])
    if "description" in ctx.data:
        f.description = str(ctx.data["description"])
    if "tags" in ctx.data:
        tags = ctx.data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, dict) and t.get("tag_name") for t in tags):
            raise ValueError("tags must be a list of {group_name, tag_name, type}")
        f.tags = [{"group_name": str(t.get("group_name", "")), "tag_name": str(t["tag_name"]),
                   "type": int(t.get("type", 1)), **({"tag_id": str(t["tag_id"])} if t.get("tag_id") else {})}
                  for t in tags]


def wecom_add_contact(ctx: Ctx) -> dict[str, Any]:
    c, userid = _contact(ctx), _rep(ctx)
    if userid in c.follow:
        raise PushRefused(409, "already_a_contact", f"{ctx.person} is already a contact of {userid}")
    state = ctx.text("state")
    c.follow[userid] = FollowInfo(userid=userid, createtime=int(ctx.now), state=state,
                                  add_way=int(ctx.data.get("add_way", 1)))
    _rep_notes(ctx, c.follow[userid])
    msg = _change(ctx, c, "add_external_contact", userid)
    if state:
        msg["State"] = state
    if ctx.data.get("welcome_code", True) is not False:  # False: an admin-configured welcome exists
        code = secrets.token_urlsafe(32)
        ctx.app.welcome_codes[code] = OneTimeCode(person=ctx.person, issued_at=ctx.now,
                                                  external_userid=c.external_userid, userid=userid)
        msg["WelcomeCode"] = code
        ctx.extra["welcome_code"] = code
    return msg


def _existing_relation(ctx: Ctx) -> tuple[Contact, str]:
    c, userid = _contact(ctx), _rep(ctx)
    if userid not in c.follow:
        raise PushRefused(409, "not_a_contact", f"{ctx.person} is not a contact of {userid}")
    return c, userid


def wecom_edit_contact(ctx: Ctx) -> dict[str, Any]:
    c, userid = _existing_relation(ctx)
    _rep_notes(ctx, c.follow[userid])
    return _change(ctx, c, "edit_external_contact", userid)


def wecom_delete_contact(ctx: Ctx) -> dict[str, Any]:
    """The sales rep deletes the customer."""
    c, userid = _existing_relation(ctx)
    del c.follow[userid]
    msg = _change(ctx, c, "del_external_contact", userid)
    if ctx.text("source"):
        msg["Source"] = ctx.text("source")
    return msg


def wecom_del_follow_user(ctx: Ctx) -> dict[str, Any]:
    """The customer deletes the sales rep."""
    c, userid = _existing_relation(ctx)
    del c.follow[userid]
    return _change(ctx, c, "del_follow_user", userid)


def _kf_message(ctx: Ctx, msgtype: str, body: dict[str, Any]) -> dict[str, Any]:
    """The customer writes to a 微信客服 account: the message waits for kf/sync_msg; the callback only
    says "something is there" with a Token valid for 10 minutes."""
    open_kfid = ctx.text("open_kfid", default=ctx.app.open_kfids[0] if ctx.app.open_kfids else "")
    if open_kfid not in ctx.app.open_kfids:
        raise PushRefused(400, "unknown_open_kfid", f"{open_kfid!r} is not a 微信客服 account of this corp")
    c = _contact(ctx)
    msgid = f"from_msgid_{ctx.sim.next_msgid()}"
    message = {"msgid": msgid, "open_kfid": open_kfid, "external_userid": c.external_userid,
               "send_time": int(ctx.now), "origin": 3, "msgtype": msgtype, msgtype: body}
    ctx.app.kf_seq += 1
    ctx.app.kf_log.append({"seq": ctx.app.kf_seq, "msg": message})
    c.kf_windows.setdefault(open_kfid, rules.Window()).open("message", ctx.now, rules.KF_WINDOW)
    token = "ENC" + secrets.token_urlsafe(33)[:44]
    ctx.app.kf_tokens[token] = ctx.now
    ctx.extra.update({"kf_msgid": msgid, "kf_token": token, "open_kfid": open_kfid})
    return {"ToUserName": ctx.app.app_id, "CreateTime": ctx.create_time(), "MsgType": "event",
            "Event": "kf_msg_or_event", "Token": token, "OpenKfId": open_kfid}


def wecom_kf_text(ctx: Ctx) -> dict[str, Any]:
    return _kf_message(ctx, "text", {"content": ctx.text("text", "content", default="你好")})


def wecom_kf_media(kind: str) -> Action:
    def act(ctx: Ctx) -> dict[str, Any]:
        media_id = _issued(ctx, kind)
        ctx.extra["media_id"] = media_id
        return _kf_message(ctx, kind, {"media_id": media_id})
    return act


ACTIONS: dict[str, dict[str, Action]] = {
    "oa": {"follow": oa_follow, "unfollow": oa_unfollow, "scan": oa_scan, "text": user_text, "image": user_image,
           "voice": user_voice, "video": user_video, "shortvideo": user_shortvideo, "location": user_location,
           "link": user_link,
           "click": oa_click, "view": oa_view, "subscribe_consent": subscribe_consent},
    "mp": {"mp_login": mp_login, "text": mp_text, "image": mp_image, "miniprogrampage": mp_page,
           "enter_tempsession": mp_enter_tempsession, "subscribe_consent": subscribe_consent},
    "wecom": {"add_contact": wecom_add_contact, "edit_contact": wecom_edit_contact,
              "delete_contact": wecom_delete_contact, "del_follow_user": wecom_del_follow_user,
              "kf_text": wecom_kf_text, "kf_image": wecom_kf_media("image"), "kf_voice": wecom_kf_media("voice"),
              "kf_video": wecom_kf_media("video"), "kf_file": wecom_kf_media("file")},
}


def crypto_problem(app: SimApp) -> str | None:
    if not app.token:
        return "the app has no callback Token"
    if (app.kind == "wecom" or app.message_mode != "plain") and len(app.aes_key) != 43:
        return "the app needs a 43-character EncodingAESKey for its message mode"
    return None


async def push(sim: State, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One action of one simulated customer, delivered like WeChat. Answers (HTTP status, JSON)."""
    app = sim.apps.get(str(data.get("app_id", "")))
    if app is None:
        return 404, {"error": "unknown app_id", "code": "unknown_app"}
    person = str(data.get("person", "")).strip()
    if not person:
        return 400, {"error": "person is required", "code": "person_required"}
    action = ACTIONS[app.kind].get(str(data.get("action", "")))
    if action is None:
        return 400, {"error": f"action must be one of {sorted(ACTIONS[app.kind])} for a {app.kind} app",
                     "code": "unknown_action"}
    try:
        timeout = float(data.get("timeout_seconds", DEFAULT_TIMEOUT))
    except (TypeError, ValueError):
        timeout = -1
    if not 0 < timeout <= 60:
        return 400, {"error": "timeout_seconds must be in (0, 60]", "code": "bad_timeout"}
    will_push = bool(app.callback_url) and action is not mp_login
    if will_push and not rules.is_loopback_url(app.callback_url):
        return 400, {"error": "callback_url must be a loopback address", "code": "not_loopback"}
    if will_push and (problem := crypto_problem(app)):
        return 409, {"error": problem, "code": "no_crypto"}
    ctx = Ctx(sim=sim, app=app, person=person, data=data, now=sim.now())
    try:
        sim.person(person, **{k: data.get(k) for k in ("nickname", "avatar", "language", "gender")})
        message = action(ctx)
    except PushRefused as exc:
        return exc.status, {"error": exc.message, "code": exc.code}
    except (TypeError, ValueError) as exc:
        return 400, {"error": f"bad field: {exc}", "code": "bad_field"}
    result: dict[str, Any] = {"app_id": app.app_id, "person": person, "action": data["action"], **ctx.extra,
                              "message": message}
    if action is mp_login and app.backend_login_url:
        backend = await report_login(app.backend_login_url, app.backend_api_key, str(ctx.extra["code"]), timeout)
        return 200, {**result, "backend": backend, "delivered": backend["error"] is None, "attempts": 1}
    if message is None:
        return 200, {**result, "delivered": False, "attempts": 0}
    if not app.callback_url:
        return 200, {**result, "delivered": False, "attempts": 0, "error": "the app has no callback_url"}
    out = seal(app, message, ctx.now, openid=str(ctx.extra.get("openid", "")))
    outcome = await deliver(app.callback_url, out, timeout)
    result.update({"query": out.query, "body": out.body, **outcome, "delivered": False, "reply": None,
                   "reply_error": None})
    if outcome["answer_status"] == 200:
        acknowledged, reply, problem = open_reply(app, outcome["answer"] or "")
        result.update({"delivered": acknowledged, "reply": reply, "reply_error": problem})
        if reply is not None and problem is None:
            to = str(reply.get("ToUserName", ""))
            sim.accept(app, "passive_reply", to, reply)
    elif outcome["answer_status"] is not None:
        result["error"] = f"HTTP {outcome['answer_status']}"
    else:
        result["error"] = outcome["attempt_log"][-1]["error"] if outcome["attempt_log"] else "no attempt"
    return 200, result
