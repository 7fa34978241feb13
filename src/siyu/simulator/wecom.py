"""WeCom endpoints with WeChat's rules: external contacts, mass tasks a sales rep confirms, welcome codes
(20 s, once), 微信客服 sync_msg paging and send_msg windows."""

from __future__ import annotations

import secrets
from typing import Any

from siyu.simulator import rules
from siyu.simulator.api import WECOM, Call, WeChatError, content_ok, endpoint, ok
from siyu.simulator.media import check_sendable
from siyu.simulator.state import Contact, SimApp, State


def _contact(call: Call, ext: Any) -> Contact:
    call.to = str(ext or "")
    c = call.a.contact_by_external(call.to)
    if c is None:
        raise WeChatError(40096)
    return c


@endpoint("wecom-api", "cgi-bin/externalcontact/get_follow_user_list", "GET", WECOM)
def get_follow_user_list(call: Call) -> dict[str, Any]:
    users = list(call.a.follow_users)
    for c in call.a.contacts.values():
        users += [u for u in c.follow if u not in users]
    return ok(follow_user=users)


@endpoint("wecom-api", "cgi-bin/externalcontact/list", "GET", WECOM)
def external_list(call: Call) -> dict[str, Any]:
    userid = call.query.get("userid", "")
    ids = [c.external_userid for c in call.a.contacts.values() if userid in c.follow]
    if not ids:
        raise WeChatError(84061)
    return ok(external_userid=ids)


@endpoint("wecom-api", "cgi-bin/externalcontact/get", "GET", WECOM)
def external_get(call: Call) -> dict[str, Any]:
    c = _contact(call, call.query.get("external_userid"))
    if not c.follow:
        raise WeChatError(84061)
    p = call.sim.people[c.person]
    contact: dict[str, Any] = {"external_userid": c.external_userid, "name": p.nickname, "type": 1,
                               "avatar": p.avatar, "gender": p.gender}
    uid = call.a.unionid(c.person)
    if uid:
        contact["unionid"] = uid
    follow = []
    for f in c.follow.values():
        row: dict[str, Any] = {"userid": f.userid, "remark": f.remark, "description": f.description,
                               "createtime": f.createtime, "tags": [dict(t) for t in f.tags], "remark_mobiles": [],
                               "add_way": f.add_way, "oper_userid": c.external_userid}
        if f.state:
            row["state"] = f.state
        follow.append(row)
    return ok(external_contact=contact, follow_user=follow, next_cursor="")


@endpoint("wecom-api", "cgi-bin/externalcontact/add_msg_template", "POST", WECOM)
def add_msg_template(call: Call) -> dict[str, Any]:
    """Creates a task the sales rep must confirm in the WeCom client (control: confirm it)."""
    body, app = call.body, call.a
    if body.get("chat_type", "single") not in ("single", "group"):
        raise WeChatError(40058)
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    attachments = body.get("attachments") or []
    if not str(text.get("content", "")).strip() and not attachments:
        raise WeChatError(44004)
    sender = str(body.get("sender", ""))
    wanted = body.get("external_userid")
    if wanted is not None and not isinstance(wanted, list):
        raise WeChatError(40058)
    if not sender and not wanted:
        raise WeChatError(40058, "sender or external_userid required")
    pool = [c for c in app.contacts.values() if c.follow and (not sender or sender in c.follow)]
    known = {c.external_userid for c in pool}
    targets = [e for e in wanted if e in known] if wanted else sorted(known)
    fail_list = [e for e in (wanted or []) if e not in known]
    msgid = "msg" + secrets.token_urlsafe(24)
    app.tasks.append({"msgid": msgid, "sender": sender, "external_userid": targets, "fail_list": fail_list,
                      "payload": body, "status": "pending", "created_at": call.now, "confirmed_at": None,
                      "results": {}})
    return ok(fail_list=fail_list, msgid=msgid)


def confirm_task_now(sim: State, app: SimApp, task: dict[str, Any]) -> None:
    """The rep confirms a task in the WeCom client: each customer still their contact and under this month's
    receive limit gets it (status 1); the others do not (2: not their contact any more, 3: the limit)."""
    now = sim.now()
    month = rules.month_key(now)
    results: dict[str, dict[str, Any]] = {}
    for ext in task["external_userid"]:
        c = app.contact_by_external(ext)
        if c is None or (task["sender"] and task["sender"] not in c.follow):
            results[ext] = {"status": 2, "send_time": 0}
        elif c.mass_received.get(month, 0) >= rules.mass_received_cap(now):
            results[ext] = {"status": 3, "send_time": 0}
        else:
            c.mass_received[month] = c.mass_received.get(month, 0) + 1
            sim.accept(app, "cgi-bin/externalcontact/add_msg_template", ext, task["payload"], msgid=task["msgid"],
                       sender=task["sender"])
            results[ext] = {"status": 1, "send_time": int(now)}
    task.update(status="sent", confirmed_at=now, results=results)


def _due_confirmations(sim: State, app: SimApp) -> None:
    if app.task_confirm_after is None:
        return
    for task in app.tasks:
        if task["status"] == "pending" and sim.now() - task["created_at"] >= app.task_confirm_after:
            confirm_task_now(sim, app, task)


def _task(call: Call) -> dict[str, Any]:
    msgid = str(call.body.get("msgid", ""))
    task = next((t for t in call.a.tasks if t["msgid"] == msgid), None)
    if task is None:
        raise WeChatError(41063, "msgid not found")
    _due_confirmations(call.sim, call.a)
    return task


@endpoint("wecom-api", "cgi-bin/externalcontact/get_groupmsg_task", "POST", WECOM)
def get_groupmsg_task(call: Call) -> dict[str, Any]:
    """Per member: 0 not sent yet, 2 sent."""
    task = _task(call)
    return ok(next_cursor="", task_list=[{"userid": task["sender"], "status": 2 if task["status"] == "sent" else 0,
                                          "send_time": int(task["confirmed_at"] or 0)}])


@endpoint("wecom-api", "cgi-bin/externalcontact/get_groupmsg_send_result", "POST", WECOM)
def get_groupmsg_send_result(call: Call) -> dict[str, Any]:
    """Per customer: 0 not sent, 1 sent, 2 not their contact, 3 the receive limit."""
    task = _task(call)
    userid = str(call.body.get("userid", ""))
    if task["sender"] and userid != task["sender"]:
        return ok(next_cursor="", send_list=[])
    send_list = [{"external_userid": ext, "userid": task["sender"],
                  **task["results"].get(ext, {"status": 0, "send_time": 0})} for ext in task["external_userid"]]
    return ok(next_cursor="", send_list=send_list)


@endpoint("wecom-api", "cgi-bin/externalcontact/send_welcome_msg", "POST", WECOM)
def send_welcome_msg(call: Call) -> dict[str, Any]:
    body, app = call.body, call.a
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    if not str(text.get("content", "")).strip() and not body.get("attachments"):
        raise WeChatError(44004)
    code = app.welcome_codes.get(str(body.get("welcome_code", "")))
    if code is not None:
        call.to = code.external_userid
    err = rules.one_time_code_error(code.issued_at if code else None, bool(code and code.used), call.now,
                                    rules.WELCOME_CODE_TTL, unknown=41051, spent=41051, expired=41051)
    if err or code is None:
        raise WeChatError(err or 41051)
    code.used = True
    call.sim.accept(app, call.path, code.external_userid, body, userid=code.userid)
    return ok()


# --- WeCom: 微信客服 ---------------------------------------------------------------------------------

@endpoint("wecom-api", "cgi-bin/kf/account/list", "ANY", WECOM)
def kf_account_list(call: Call) -> dict[str, Any]:
    return ok(account_list=[{"open_kfid": k, "name": f"客服{i + 1}",
                             "avatar": f"https://wework.qpic.cn/wwhead/sim/{k}/0"}
                            for i, k in enumerate(call.a.open_kfids)])


@endpoint("wecom-api", "cgi-bin/kf/sync_msg", "POST", WECOM)
def kf_sync_msg(call: Call) -> dict[str, Any]:
    app, body, now = call.a, call.body, call.now
    try:
        limit = int(body.get("limit", rules.KF_SYNC_MAX_LIMIT))
    except (TypeError, ValueError):
        raise WeChatError(40058) from None
    if not 1 <= limit <= rules.KF_SYNC_MAX_LIMIT:
        raise WeChatError(40058, "invalid limit")
    open_kfid = str(body.get("open_kfid", ""))
    if open_kfid and open_kfid not in app.open_kfids:
        raise WeChatError(95000)
    token_ = str(body.get("token", ""))
    if token_:
        issued = app.kf_tokens.get(token_)
        if issued is None or now - issued > rules.KF_TOKEN_TTL:
            raise WeChatError(95007)
    else:
        minute = int(now // 60)
        app.kf_untokened_calls[minute] = app.kf_untokened_calls.get(minute, 0) + 1
        if app.kf_untokened_calls[minute] > rules.KF_SYNC_WITHOUT_TOKEN_PER_MINUTE:
            raise WeChatError(45009, "api freq out of limit (kf/sync_msg without token)")
    after = rules.decode_cursor(str(body.get("cursor", "")))
    if after is None:
        raise WeChatError(40058, "invalid cursor")
    eligible = [r for r in app.kf_log if r["seq"] > after and now - r["msg"]["send_time"] <= rules.KF_SYNC_HORIZON
                and (not open_kfid or r["msg"]["open_kfid"] == open_kfid)]
    page = eligible[:limit]
    next_seq = page[-1]["seq"] if page else after
    return ok(next_cursor=rules.encode_cursor(next_seq), has_more=int(len(eligible) > len(page)),
              msg_list=[r["msg"] for r in page])


KF_TYPES = {"text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location",
            "business_card", "ca_link"}


@endpoint("wecom-api", "cgi-bin/kf/send_msg", "POST", WECOM)
def kf_send_msg(call: Call) -> dict[str, Any]:
    body, app = call.body, call.a
    open_kfid = str(body.get("open_kfid", ""))
    if open_kfid not in app.open_kfids:
        raise WeChatError(95000)
    c = _contact(call, body.get("touser"))
    msgtype = str(body.get("msgtype", ""))
    if msgtype not in KF_TYPES:
        raise WeChatError(40008)
    if not content_ok(body, msgtype):
        raise WeChatError(44004)
    if msgtype in ("image", "voice", "video", "file"):  # a media id of this corp, younger than 3 days
        check_sendable(call, body[msgtype].get("media_id"))
    window = c.kf_windows.get(open_kfid)
    if window is None:
        raise WeChatError(rules.KF_OUT_OF_WINDOW)
    code = window.consume(call.now, rules.KF_OUT_OF_WINDOW, rules.KF_QUOTA_USED)
    if code:
        raise WeChatError(code)
    msgid = str(body.get("msgid") or secrets.token_hex(16))
    call.sim.accept(app, call.path, c.external_userid, body, msgid=msgid, open_kfid=open_kfid)
    return ok(msgid=msgid)
