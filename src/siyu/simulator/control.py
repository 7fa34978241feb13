"""The control API under `/_sim` (not WeChat's): register apps, inject faults, move the clock, make
simulated customers act, and read back what WeChat accepted and refused. docs/simulator.md lists it."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from siyu.simulator import buying, rules, wire
from siyu.simulator import media as sim_media
from siyu.simulator import push as pushing
from siyu.simulator.state import APP_MEMORY, FORMATS, KINDS, MODES, FollowInfo, SimApp, State
from siyu.simulator.wecom import confirm_task_now


def _bad(message: str, status: int = 400, code: str = "bad_request") -> Response[dict[str, Any]]:
    return Response({"error": message, "code": code}, status_code=status)


def _ok(body: Any) -> Response[Any]:
    return Response(body, status_code=200)


def _aes_key_ok(key: str) -> bool:
    if len(key) != 43:
        return False
    try:
        return len(base64.b64decode(key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def build_app(data: JSONBody[dict[str, Any]]) -> SimApp | str:
    """A SimApp from the registration body, or what is wrong with it."""
    kind = str(data.get("kind", ""))
    kind = "oa" if kind == "wechat" else kind  # the first simulator's name for OA/MP
    app_id, secret = str(data.get("app_id", "")).strip(), str(data.get("secret", ""))
    if kind not in KINDS or not app_id or not secret:
        return "kind (oa|mp|wecom), app_id and secret are required"
    aes_key = str(data.get("aes_key") or "")
    if aes_key and not _aes_key_ok(aes_key):
        return "aes_key must be a 43-character EncodingAESKey"
    mode = str(data.get("message_mode") or data.get("mode") or ("safe" if aes_key else "plain"))
    if kind == "wecom":
        mode = "safe"  # WeCom always encrypts
    if mode not in MODES:
        return "message_mode must be plain, compatible or safe"
    if mode != "plain" and kind != "wecom" and not aes_key:
        return f"message_mode {mode} needs aes_key"
    push_format = str(data.get("push_format") or "xml")
    if push_format not in FORMATS or (push_format == "json" and kind != "mp"):
        return "push_format must be xml, or json for a Mini Program"
    callback_url = str(data.get("callback_url") or "")
    if callback_url and not rules.is_loopback_url(callback_url):
        return "callback_url must be an http(s) URL on a loopback address (127.0.0.1, ::1, localhost)"
    open_kfids = data.get("open_kfids")
    follow_users = data.get("follow_users")
    if open_kfids is not None and not (isinstance(open_kfids, list) and all(isinstance(k, str) for k in open_kfids)):
        return "open_kfids must be a list of strings"
    if follow_users is not None and not (
            isinstance(follow_users, list) and all(isinstance(u, str) for u in follow_users)):
        return "follow_users must be a list of strings"
    backend = data.get("backend")
    login_url, api_key, purchases_url = "", "", ""
    if backend is not None:
        if kind != "mp" or not isinstance(backend, dict):
            return "backend is an object {login_url, purchases_url, api_key}, for a Mini Program"
        login_url, api_key = str(backend.get("login_url") or ""), str(backend.get("api_key") or "")
        purchases_url = str(backend.get("purchases_url") or "")
        if not login_url and not purchases_url:
            return "backend needs a login_url and/or a purchases_url"
        for name, url in (("login_url", login_url), ("purchases_url", purchases_url)):
            if url and not rules.is_loopback_url(url):
                return f"backend.{name} must be an http(s) URL on a loopback address (127.0.0.1, ::1, localhost)"
        if len(api_key) > 512 or any(c in api_key for c in "\r\n"):
            return "backend.api_key must be one line of at most 512 characters"
    is_wecom = kind == "wecom"
    confirm_after = data.get("task_confirm_after")
    if confirm_after is not None and (not isinstance(confirm_after, int | float) or isinstance(confirm_after, bool)
                                      or not 0 <= confirm_after <= 86400 * 30 or not is_wecom):
        return "task_confirm_after is a number of seconds (0 to 30 days), for a WeCom app"
    return SimApp(
        kind=kind, app_id=app_id, secret=secret, ip_whitelisted=bool(data.get("ip_whitelisted", True)),
        token=str(data.get("token") or ""), aes_key=aes_key, message_mode=mode, push_format=push_format,
        original_id=str(data.get("original_id") or ("" if is_wecom else rules.original_id(app_id))),
        callback_url=callback_url, open_platform=str(data.get("open_platform") or ""),
        agent_id=str(data.get("agent_id") or ("1000002" if is_wecom else "")),
        open_kfids=list(open_kfids) if open_kfids is not None else ([rules.open_kfid(app_id)] if is_wecom else []),
        follow_users=list(follow_users) if follow_users is not None else (["zhangsan", "lisi"] if is_wecom else []),
        backend_login_url=login_url, backend_api_key=api_key, backend_purchases_url=purchases_url,
        task_confirm_after=float(confirm_after) if confirm_after is not None else None,
    )


def _endpoint_latency(raw: Any) -> dict[str, int] | str:
    """`{"cgi-bin/message/custom/send": 11000}` (0 removes one), or what is wrong with it."""
    problem = "endpoint_latency_ms must map API paths to milliseconds between 0 and 60000"
    if not isinstance(raw, dict) or len(raw) > 50:
        return problem
    out: dict[str, int] = {}
    for path, ms in raw.items():
        clean = str(path).strip("/")
        if not clean or len(clean) > 200 or isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 60_000:
            return problem
        out[clean] = ms
    return out


def _bounded_int(data: dict[str, Any], name: str, low: int, high: int) -> int | str | None:
    """The field as an int within [low, high], None when absent, or what is wrong with it."""
    if name not in data:
        return None
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be a whole number between {low} and {high}"
    return value


def keep_memory(old: SimApp, new: SimApp) -> None:
    for name in APP_MEMORY:
        setattr(new, name, getattr(old, name))


def _rows(rows: list[dict[str, Any]], app_id: str | None, to: str | None, person: str | None,
          endpoint: str | None, since_id: int | None) -> list[dict[str, Any]]:
    return [r for r in rows if (app_id is None or r["app_id"] == app_id) and (to is None or r["to"] == to)
            and (person is None or r["person"] == person) and (endpoint is None or r["endpoint"] == endpoint)
            and (since_id is None or r["id"] > since_id)]


def _person_view(sim: State, app: SimApp, key: str) -> dict[str, Any]:
    p = sim.people.get(key)
    view: dict[str, Any] = {"person": key, "nickname": p.nickname if p else None, "unionid": app.unionid(key)}
    if app.kind == "wecom":
        c = app.contacts[key]
        view.update({"external_userid": c.external_userid,
                     "follow_users": {u: {"createtime": f.createtime, "state": f.state, "remark": f.remark,
                                          "description": f.description, "tags": list(f.tags)}
                                      for u, f in c.follow.items()},
                     "kf_windows": {k: w.as_dict() for k, w in c.kf_windows.items()}})
    else:
        m = app.members[key]
        view.update({"openid": m.openid, "following": m.following, "subscribe_time": m.subscribe_time,
                     "subscribe_scene": m.subscribe_scene, "window": m.window.as_dict(),
                     "consents": dict(m.consents), "mass_by_month": dict(m.mass_by_month)})
    return view


def control_routes(sim: State) -> list[Any]:
    @post("/_sim/apps", status_code=200)
    async def register_app(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        app = build_app(data)
        if isinstance(app, str):
            return _bad(app)
        old = sim.apps.get(app.app_id)
        if old is not None and data.get("keep_state") is True and old.kind == app.kind:
            keep_memory(old, app)  # new settings, same WeChat: its people, tokens and records stay
        elif old is not None:  # re-registering starts the app afresh; its old tokens die with it
            for value in [v for v, t in sim.tokens.items() if t.app_id == app.app_id]:
                del sim.tokens[value]
        sim.apps[app.app_id] = app
        return _ok(app.public())

    @get("/_sim/apps")
    async def list_apps() -> list[dict[str, Any]]:
        return [a.public() for a in sim.apps.values()]

    @get("/_sim/apps/{app_id:str}")
    async def get_app(app_id: FromPath[str]) -> Response[Any]:
        app = sim.apps.get(app_id)
        return _ok(app.public()) if app else _bad("unknown app", 404, "unknown_app")

    @post("/_sim/apps/{app_id:str}/faults", status_code=200)
    async def add_faults(app_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        app = sim.apps.get(app_id)
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        try:
            codes = [int(c) for c in data.get("errcodes", [])]
            latency = int(data["latency_ms"]) if "latency_ms" in data else app.latency_ms
        except (TypeError, ValueError):
            return _bad("errcodes must be integers and latency_ms a number of milliseconds")
        if not 0 <= latency <= 60_000:
            return _bad("latency_ms must be between 0 and 60000")
        slow = _endpoint_latency(data.get("endpoint_latency_ms", {}))
        if isinstance(slow, str):
            return _bad(slow)
        hangs = _bounded_int(data, "token_timeouts", 0, 1000)
        hang_ms = _bounded_int(data, "token_timeout_ms", 0, 60_000)
        for value in (hangs, hang_ms):
            if isinstance(value, str):
                return _bad(value)
        if data.get("clear"):
            app.faults.clear()
            app.endpoint_latency_ms.clear()
            app.token_timeouts = 0
        app.faults.extend(codes)
        app.latency_ms = latency
        for path, ms in slow.items():
            if ms:
                app.endpoint_latency_ms[path] = ms
            else:
                app.endpoint_latency_ms.pop(path, None)
        if isinstance(hangs, int):
            app.token_timeouts = hangs
        if isinstance(hang_ms, int):
            app.token_timeout_ms = hang_ms
        if "ip_whitelisted" in data:
            app.ip_whitelisted = bool(data["ip_whitelisted"])
        return _ok(app.public())

    @post("/_sim/apps/{app_id:str}/tokens", status_code=200)
    async def token_action(app_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        app = sim.apps.get(app_id)
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        action = data.get("action")
        if action not in ("expire", "invalidate"):
            return _bad("action must be expire or invalidate")
        return _ok({"app_id": app_id, "action": action, "tokens": sim.expire_tokens(app, str(action))})

    @get("/_sim/clock")
    async def get_clock() -> dict[str, Any]:
        return {"now": sim.now(), "offset_seconds": sim.clock.offset}

    @post("/_sim/clock", status_code=200)
    async def move_clock(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        try:
            if data.get("reset"):
                sim.clock.offset = 0.0
            if "offset_seconds" in data:
                sim.clock.offset = float(data["offset_seconds"])
            if "advance_seconds" in data:
                step = float(data["advance_seconds"])
                if step < 0:
                    return _bad("advance_seconds must not be negative")
                sim.clock.offset += step
        except (TypeError, ValueError):
            return _bad("advance_seconds / offset_seconds must be numbers")
        return _ok({"now": sim.now(), "offset_seconds": sim.clock.offset})

    @get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return sim.stats.as_dict()

    @get("/_sim/messages")
    async def messages(app_id: FromQuery[str | None] = None, to: FromQuery[str | None] = None,
                       person: FromQuery[str | None] = None, endpoint: FromQuery[str | None] = None,
                       since_id: FromQuery[int | None] = None) -> list[dict[str, Any]]:
        return _rows(sim.messages, app_id, to, person, endpoint, since_id)

    @get("/_sim/refusals")
    async def refusals(app_id: FromQuery[str | None] = None, to: FromQuery[str | None] = None,
                       person: FromQuery[str | None] = None, endpoint: FromQuery[str | None] = None,
                       since_id: FromQuery[int | None] = None) -> list[dict[str, Any]]:
        return _rows(sim.refusals, app_id, to, person, endpoint, since_id)

    @post("/_sim/push", status_code=200)
    async def push(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        status, body = await pushing.push(sim, data)
        return Response(body, status_code=status)

    @post("/_sim/verify", status_code=200)
    async def verify(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        app = sim.apps.get(str(data.get("app_id", "")))
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        if not app.callback_url:
            return _bad("the app has no callback_url", 409, "no_callback_url")
        if not rules.is_loopback_url(app.callback_url):
            return _bad("callback_url must be a loopback address", 400, "not_loopback")
        problem = pushing.crypto_problem(app) if app.kind == "wecom" else (None if app.token else "no Token")
        if problem:
            return _bad(problem, 409, "no_crypto")
        try:
            timeout = float(data.get("timeout_seconds", wire.DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            return _bad("timeout_seconds must be a number")
        return _ok(await wire.verify(app, sim.now(), max(0.01, min(timeout, 60.0))))

    @get("/_sim/people")
    async def people(app_id: FromQuery[str], person: FromQuery[str | None] = None) -> Response[Any]:
        app = sim.apps.get(app_id)
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        keys = list(app.contacts if app.kind == "wecom" else app.members)
        return _ok([_person_view(sim, app, k) for k in keys if person is None or k == person])

    @post("/_sim/people", status_code=200)
    async def seed_people(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """People known to an app without any push: OA followers (following defaults to true), MP users,
        WeCom contacts of `user_id`. For large fixtures (e.g. user/get paging)."""
        app = sim.apps.get(str(data.get("app_id", "")))
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        keys = data.get("people")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            return _bad("people must be a list of person keys")
        for key in keys:
            if app.kind == "wecom":
                c = sim.contact(app, key)
                if "mass_received_this_month" in data:  # the customer's corp mass messages so far this month
                    c.mass_received[rules.month_key(sim.now())] = int(data["mass_received_this_month"])
                userid = str(data.get("user_id") or (app.follow_users[0] if app.follow_users else "zhangsan"))
                if userid not in c.follow:
                    c.follow[userid] = FollowInfo(userid=userid, createtime=int(sim.now()),
                                                          state=str(data.get("state") or ""))
            else:
                m = sim.member(app, key)
                if app.kind == "oa" and data.get("following", True) and not m.following:
                    sim.follow(app, m)
                if data.get("window"):  # as if each had just written: a fresh 5 / 48 h reply window
                    m.window.open("message", sim.now(), rules.MESSAGE_WINDOW)
        return _ok([_person_view(sim, app, k) for k in keys])

    @get("/_sim/mass")
    async def mass_jobs(app_id: FromQuery[str]) -> Response[Any]:
        app = sim.apps.get(app_id)
        return _ok(app.mass_jobs) if app else _bad("unknown app", 404, "unknown_app")

    @get("/_sim/wecom/tasks")
    async def tasks(app_id: FromQuery[str]) -> Response[Any]:
        app = sim.apps.get(app_id)
        return _ok(app.tasks) if app else _bad("unknown app", 404, "unknown_app")

    @post("/_sim/wecom/tasks/{msgid:str}/confirm", status_code=200)
    async def confirm_task(msgid: FromPath[str]) -> Response[Any]:
        """The sales rep confirms the mass task in the WeCom client: now it reaches the customers."""
        for app in sim.apps.values():
            for task in app.tasks:
                if task["msgid"] == msgid:
                    if task["status"] != "pending":
                        return _bad("the task was already confirmed", 409, "already_confirmed")
                    confirm_task_now(sim, app, task)
                    return _ok(task)
        return _bad("unknown task", 404, "unknown_task")

    @get("/_sim/media/{media_id:str}")
    async def media_bytes(media_id: FromPath[str], app_id: FromQuery[str]) -> Response[Any]:
        """The bytes of a medium (what an OA video's `video_url` points at: WeChat's CDN, played here)."""
        app = sim.apps.get(app_id)
        entry = app.media.get(media_id) if app else None
        if app is None or entry is None:
            return _bad("unknown media", 404, "unknown_media")
        return Response(sim_media.content(media_id, entry), media_type="video/mp4" if entry["kind"] == "video"
                        else "application/octet-stream", status_code=200)

    @get("/_sim/media/{media_id:str}/info")
    async def media_info(media_id: FromPath[str], app_id: FromQuery[str]) -> Response[Any]:
        """What WeChat knows of a medium (kind, origin, size, sha256 of an upload), never the bytes."""
        app = sim.apps.get(app_id)
        shown = sim_media.public(app, media_id) if app else None
        return _ok(shown) if shown else _bad("unknown media", 404, "unknown_media")

    def _shop(app_id: str) -> SimApp | Response[Any]:
        app = sim.apps.get(app_id)
        if app is None:
            return _bad("unknown app", 404, "unknown_app")
        if app.kind != "mp":
            return _bad("buying is for a Mini Program", 409, "no_shop")
        return app

    @post("/_sim/apps/{app_id:str}/buying", status_code=200)
    async def set_buying(app_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """How the app's users buy again: a chance a round, raised by a message (simulator/buying.py)."""
        app = _shop(app_id)
        if isinstance(app, Response):
            return app
        b = buying.parse(data, sim.buying.get(app_id))
        if isinstance(b, str):
            return _bad(b)
        buying.stop(sim.buying.get(app_id))
        sim.buying[app_id] = b
        buying.start(sim, app, b)
        return _ok(b.public())

    @post("/_sim/apps/{app_id:str}/buying/round", status_code=200)
    async def buying_round(app_id: FromPath[str]) -> Response[Any]:
        """One round now: who buys, reported to the brand's backend."""
        app = _shop(app_id)
        if isinstance(app, Response):
            return app
        b = sim.buying.get(app_id)
        if b is None:
            b = sim.buying[app_id] = buying.Buying()
        return _ok(await buying.play_round(sim, app, b))

    @post("/_sim/reset", status_code=200)
    async def reset() -> dict[str, Any]:
        sim.reset()
        return {"ok": True}

    @get("/_sim/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "apps": len(sim.apps), "token_calls": sim.stats.token_calls}

    return [register_app, list_apps, get_app, add_faults, token_action, get_clock, move_clock, stats, messages,
            refusals, push, verify, people, seed_people, mass_jobs, tasks, confirm_task, media_bytes, media_info, reset,
            health, set_buying, buying_round]
