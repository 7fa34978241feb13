"""The narrow read other domains use to ask WeChat about one person: an OA follower's user info and a WeCom
external contact with the reps who added them. Plain, normalised dicts: callers depend on these keys, not
on WeChat's JSON (which grows and drops fields over the years).

Errors stay the client's typed ones, re-exported here so callers need no other module of `wechat`:
busy / rate limited (try later), not allowed (never retried), configuration problems (the tenant admin
must act). "WeChat does not know this person" (an unknown openid, or a customer no rep has any more) is
`WeChatUnknownPerson`, a kind of not allowed: asking again will not help.
"""

from __future__ import annotations

from typing import Any

from siyu.core.errors import NotFound, WeChatError
from siyu.wechat.client import WeChatBusy, WeChatConfigProblem, WeChatNotAllowed, WeChatRateLimited
from siyu.wechat.outbound import WeChatRuntime, runtime_of

__all__ = ["NotFound", "WeChatBusy", "WeChatConfigProblem", "WeChatError", "WeChatNotAllowed",
           "WeChatRateLimited", "WeChatRuntime", "WeChatUnknownPerson", "oa_user", "runtime_of",
           "wecom_contact"]

MAX_PAGES = 20  # externalcontact/get pages its follow users by 500: 10 000 reps on one customer is plenty


class WeChatUnknownPerson(WeChatNotAllowed):
    """40003 invalid openid, 46004 no such user, 40096 invalid external_userid, 84061 not an external
    contact (no rep has them any more): WeChat will answer the same tomorrow."""

    REASONS = {40003: "unknown_openid", 46004: "unknown_user", 40096: "unknown_external_userid",
               84061: "not_an_external_contact"}



def _typed(exc: WeChatError) -> WeChatError:
    if type(exc) is WeChatError and exc.errcode in WeChatUnknownPerson.REASONS:
        return WeChatUnknownPerson(exc.errcode, exc.errmsg)
    return exc


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _unionid(value: Any) -> str:
    uid = _str(value).strip()
    return uid if 0 < len(uid) <= 64 else ""


async def oa_user(runtime: WeChatRuntime, tenant_id: int, openid: str, lang: str = "zh_CN") -> dict[str, Any]:
    """`cgi-bin/user/info` of an Official Account follower: unionid ("" when the OA is not bound to an Open
    Platform account), language, subscribe (bool), subscribe_scene, subscribe_time (unix seconds), qr_scene,
    qr_scene_str, remark, tagid_list. Since 2021-12 WeChat sends no nickname or avatar; a non-follower
    yields only subscribe False (and unionid). Raises NotFound when the tenant has no OA linked."""
    client = await runtime.client(tenant_id, "oa")
    try:
        info = await client.user_info(openid, lang=lang)
    except WeChatError as exc:
        raise _typed(exc) from None
    snapshot = _int(info.get("is_snapshotuser")) == 1  # a page-snapshot visitor: not a person (R10)
    return {
        "unionid": "" if snapshot else _unionid(info.get("unionid")),
        "language": _str(info.get("language")),
        "subscribe": _int(info.get("subscribe")) == 1,
        "subscribe_scene": _str(info.get("subscribe_scene")),
        "subscribe_time": _int(info.get("subscribe_time")),
        "qr_scene": _int(info.get("qr_scene")),
        "qr_scene_str": _str(info.get("qr_scene_str")),
        "remark": _str(info.get("remark")),
        "tagid_list": [_int(t) for t in info.get("tagid_list") or [] if _int(t)],
    }


def _follow_user(raw: dict[str, Any]) -> dict[str, Any]:
    tags = [{"group_name": _str(t.get("group_name")), "tag_name": _str(t.get("tag_name")),
             "type": _int(t.get("type")), "tag_id": _str(t.get("tag_id"))}
            for t in raw.get("tags") or [] if isinstance(t, dict) and t.get("tag_name")]
    return {"userid": _str(raw.get("userid")), "remark": _str(raw.get("remark")),
            "description": _str(raw.get("description")), "createtime": _int(raw.get("createtime")),
            "tags": tags, "state": _str(raw.get("state")), "add_way": _int(raw.get("add_way"))}


async def wecom_contact(runtime: WeChatRuntime, tenant_id: int, external_userid: str) -> dict[str, Any]:
    """`cgi-bin/externalcontact/get` of a WeCom customer, every page of follow users: name, avatar, type
    (1 WeChat user, 2 WeCom user), gender, corp_name, unionid ("" unless the corp bound a WeChat developer
    id), follow_users: [{userid, remark, description, createtime, tags: [{group_name, tag_name, type,
    tag_id}], state, add_way}], follow_users_complete. A failed page raises: callers never see a partial
    list of reps unknowingly (they treat a rep missing from a complete list as gone). Raises NotFound when the tenant has no WeCom linked."""
    client = await runtime.client(tenant_id, "wecom")
    contact: dict[str, Any] = {}
    follow: list[dict[str, Any]] = []
    cursor = ""
    complete = False
    try:
        for _ in range(MAX_PAGES):
            params = {"external_userid": external_userid, **({"cursor": cursor} if cursor else {})}
            page = await client.call("GET", "cgi-bin/externalcontact/get", params=params)
            contact = contact or dict(page.get("external_contact") or {})
            follow += [_follow_user(f) for f in page.get("follow_user") or [] if isinstance(f, dict)]
            cursor = _str(page.get("next_cursor"))
            if not cursor:
                complete = True
                break
    except WeChatError as exc:
        raise _typed(exc) from None
    return {
        "name": _str(contact.get("name")),
        "avatar": _str(contact.get("avatar")),
        "type": _int(contact.get("type")),
        "gender": _int(contact.get("gender")),
        "corp_name": _str(contact.get("corp_name")),
        "unionid": _unionid(contact.get("unionid")),
        "follow_users": [f for f in follow if f["userid"]],
        "follow_users_complete": complete,  # False only past MAX_PAGES pages
    }
