"""WeChat's API, on two roots: `/wechat-api` (api.weixin.qq.com: OA and Mini Program) and `/wecom-api`
(qyapi.weixin.qq.com). WeChat's paths, methods, JSON shapes and errcodes (always HTTP 200 with
{"errcode", "errmsg"}). Every call except the token endpoints and sns/jscode2session needs
`?access_token=`. This module: the dispatcher, access tokens and the token endpoints; the endpoints
with WeChat's rules live in `oa_mp.py` and `wecom.py`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, route
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from siyu.simulator import rules
from siyu.simulator.state import SimApp, State

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40004: "invalid media type",
    40005: "invalid file type",
    40006: "invalid meida size",
    40007: "invalid media_id",
    40008: "invalid message type",
    40009: "invalid image size",
    40010: "invalid voice size",
    40011: "invalid video size",
    40012: "invalid thumb size",
    40013: "invalid appid",
    40014: "invalid access_token",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40029: "invalid code",
    40032: "invalid openid list size",
    40037: "invalid template_id",
    40058: "invalid parameter",
    40066: "invalid url",
    40096: "invalid external userid",
    40097: "invalid args",
    40125: "invalid appsecret",
    40130: "invalid openid list size, at least two openid",
    40163: "code been used",
    40164: "invalid ip, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41051: "welcome_code is invalid, expired or already used",
    41063: "msgid not found",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    44001: "empty media data",
    44002: "empty post data",
    44004: "empty content",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    45065: "clientmsgid exist",
    46003: "menu no exist",
    47001: "data format error",
    48001: "api unauthorized",
    84061: "not external contact",
    95000: "invalid open_kfid",
    95001: "send msg count limit, wait for the customer to reply",
    95007: "invalid msg token",
    95018: "send msg not allowed: no customer message within 48 hours",
}


class WeChatError(Exception):
    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "simulated error")


def error_body(errcode: int, errmsg: str = "") -> dict[str, Any]:
    # WeChat's errmsg ends with a request id.
    return {"errcode": errcode, "errmsg": f"{errmsg or ERRMSG.get(errcode, 'error')} rid: {secrets.token_hex(4)}"}


def ok(errmsg: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": errmsg, **extra}


@dataclass
class Call:
    sim: State
    root: str  # "wechat-api" | "wecom-api"
    path: str  # "cgi-bin/message/custom/send"
    query: dict[str, str]
    body: dict[str, Any]
    client_ip: str
    app: SimApp | None = None
    to: str = ""  # the recipient, for the records
    base: str = ""  # this simulator's own address (links it hands out point back at it)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # a multipart call's files: name → (filename, bytes)

    @property
    def now(self) -> float:
        return self.sim.now()

    @property
    def a(self) -> SimApp:
        assert self.app is not None
        return self.app


Handler = Callable[[Call], "Any"]  # → a JSON dict, or a Response (media/get's bytes), maybe awaitable


@dataclass(frozen=True)
class Endpoint:
    method: str  # "GET", "POST" or "ANY"
    handler: Handler
    kinds: tuple[str, ...] = ()
    auth: str = "token"  # "token" or "credentials" (the handler checks appid/secret itself)
    body: str = "json"  # "json", or "multipart" (media/upload)


ENDPOINTS: dict[str, dict[str, Endpoint]] = {"wechat-api": {}, "wecom-api": {}}
MAX_UPLOAD_BODY = 64 * 1024 * 1024  # media/upload must see an over-size file to refuse it as WeChat does
TOKEN_PATHS = ("cgi-bin/token", "cgi-bin/stable_token", "cgi-bin/gettoken")
OA, MP, OA_MP, WECOM = ("oa",), ("mp",), ("oa", "mp"), ("wecom",)


def endpoint(root: str, path: str, method: str, kinds: tuple[str, ...] = (),
             auth: str = "token", body: str = "json") -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ENDPOINTS[root][path] = Endpoint(method, fn, kinds, auth, body)
        return fn
    return register


def content_ok(body: dict[str, Any], msgtype: str) -> bool:
    """The message body has its msgtype's part, and a text is not blank."""
    part = body.get(msgtype)
    if not isinstance(part, dict):
        return False
    if msgtype == "text":
        return bool(str(part.get("content", "")).strip())
    return bool(part)


# --- the dispatcher -------------------------------------------------------------------------------

async def dispatch(sim: State, root: str, request: Request[Any, Any, Any], path: str) -> Response[Any]:
    path = path.strip("/")
    sim.stats.calls[f"{root}/{path}"] += 1
    ep = ENDPOINTS[root].get(path)
    if ep is None:
        return Response(error_body(40066, f"invalid url (the simulator does not offer {root}/{path})"),
                        status_code=404)
    if ep.method != "ANY" and request.method != ep.method:
        return Response(error_body(43001 if ep.method == "GET" else 43002), status_code=200)
    call = Call(sim=sim, root=root, path=path, query=dict(request.query_params), body={},
                client_ip=request.client.host if request.client else "127.0.0.1",
                base=str(request.base_url).rstrip("/"))
    try:
        if request.method == "POST" and ep.body == "multipart":
            form = await request.form()
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    call.files[name] = (value.filename or "", await value.read())
        elif request.method == "POST":
            raw = await request.body()
            if raw.strip():
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
                if not isinstance(parsed, dict):
                    raise WeChatError(47001, "data format error")
                call.body = parsed
        if ep.auth == "token":
            await authenticate(call, ep.kinds)
        result = ep.handler(call)
        if inspect.isawaitable(result):
            result = await result
    except WeChatError as exc:
        app_id = call.app.app_id if call.app else str(
            call.query.get("appid") or call.query.get("corpid") or call.body.get("appid") or "")
        if app_id:
            _count(sim, app_id, path)
            payload = {k: v for k, v in call.body.items() if k != "secret"} or _public_query(call.query)
            sim.refuse(app_id, path, call.to or _recipient(call), payload, exc.errcode, exc.errmsg)
        await _late_answer(call)
        return Response(error_body(exc.errcode, exc.errmsg), status_code=200)
    if call.app is not None:
        _count(sim, call.app.app_id, path)
    await _late_answer(call)
    return result if isinstance(result, Response) else Response(result, status_code=200)


async def _late_answer(call: Call) -> None:
    """The endpoint's injected latency, after its work is done: whoever stops waiting cannot tell
    whether it was carried out (as with WeChat)."""
    ms = call.app.endpoint_latency_ms.get(call.path, 0) if call.app is not None else 0
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _count(sim: State, app_id: str, path: str) -> None:
    sim.stats.calls_by_app.setdefault(app_id, Counter())[path] += 1


def _recipient(call: Call) -> str:
    for key in ("touser", "openid", "external_userid"):
        value = call.body.get(key) or call.query.get(key)
        if isinstance(value, str):
            return value
    return ""


def _public_query(query: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in ("access_token", "secret", "corpsecret")}


async def authenticate(call: Call, kinds: tuple[str, ...]) -> None:
    value = call.query.get("access_token", "")
    if not value:
        raise WeChatError(41001)
    token = call.sim.tokens.get(value)
    app = call.sim.apps.get(token.app_id) if token else None
    if token is None or app is None or (app.kind == "wecom") != (call.root == "wecom-api"):
        raise WeChatError(40014)
    call.app = app
    await call.sim.delay(app)
    fault = app.pop_fault()
    if fault is not None:
        raise WeChatError(fault)
    code = token.errcode(call.now)
    if code:
        raise WeChatError(code)
    if kinds and app.kind not in kinds:
        raise WeChatError(48001)


async def check_credentials(call: Call, kinds: tuple[str, ...], app_id: str, secret: str,
                            wrong_secret: int, whitelist: bool = True) -> SimApp:
    """The token endpoints' and jscode2session's checks, in WeChat's order."""
    if not app_id:
        raise WeChatError(41002)
    app = call.sim.apps.get(app_id)
    if app is None or app.kind not in kinds:
        raise WeChatError(40013, "invalid appid" if "wecom" not in kinds else "invalid corpid")
    call.app = app
    if not secret:
        raise WeChatError(41004, "appsecret missing" if "wecom" not in kinds else "corpsecret missing")
    if call.path in TOKEN_PATHS and app.token_timeouts > 0:
        # The token endpoint does not answer in time: nothing is issued.
        app.token_timeouts -= 1
        await asyncio.sleep(app.token_timeout_ms / 1000)
        raise WeChatError(-1, "system error (the token endpoint timed out)")
    await call.sim.delay(app)
    fault = app.pop_fault()
    if fault is not None:
        raise WeChatError(fault, ERRMSG.get(fault, "fault"))
    if whitelist and not app.ip_whitelisted:
        raise WeChatError(40164, f"invalid ip {call.client_ip} ipv6 ::ffff:{call.client_ip}, not in whitelist")
    if not secrets.compare_digest(app.secret.encode(), secret.encode()):
        raise WeChatError(wrong_secret, ERRMSG[40001] if wrong_secret == 40001 else "")
    return app


def api_routes(sim: State) -> list[Any]:
    from siyu.simulator import media, oa_mp, wecom  # noqa: F401  (their endpoints register themselves)

    @route("/wechat-api/{path:path}", http_method=["GET", "POST"], request_max_body_size=MAX_UPLOAD_BODY)
    async def wechat_api(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[Any]:
        return await dispatch(sim, "wechat-api", request, path)

    @route("/wecom-api/{path:path}", http_method=["GET", "POST"], request_max_body_size=MAX_UPLOAD_BODY)
    async def wecom_api(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[Any]:
        return await dispatch(sim, "wecom-api", request, path)

    return [wechat_api, wecom_api]


# --- tokens -----------------------------------------------------------------------------------------

@endpoint("wechat-api", "cgi-bin/token", "GET", auth="credentials")
async def token(call: Call) -> dict[str, Any]:
    call.sim.stats.token_calls += 1
    if call.query.get("grant_type") != "client_credential":
        raise WeChatError(40002)
    app = await check_credentials(call, OA_MP, call.query.get("appid", ""), call.query.get("secret", ""), 40125)
    return call.sim.issue_token(app, "token", force_new=True)  # each call replaces the previous token


@endpoint("wechat-api", "cgi-bin/stable_token", "POST", auth="credentials")
async def stable_token(call: Call) -> dict[str, Any]:
    call.sim.stats.token_calls += 1
    body = call.body
    if body.get("grant_type") != "client_credential":
        raise WeChatError(40002)
    app = await check_credentials(call, OA_MP, str(body.get("appid", "")), str(body.get("secret", "")), 40125)
    return call.sim.issue_token(app, "stable", force_new=bool(body.get("force_refresh")))


@endpoint("wecom-api", "cgi-bin/gettoken", "GET", auth="credentials")
async def gettoken(call: Call) -> dict[str, Any]:
    call.sim.stats.token_calls += 1
    app = await check_credentials(call, WECOM, call.query.get("corpid", ""), call.query.get("corpsecret", ""),
                                  40001)
    return ok(**call.sim.issue_token(app, "wecom", force_new=False))


@endpoint("wechat-api", "sns/jscode2session", "GET", auth="credentials")
async def jscode2session(call: Call) -> dict[str, Any]:
    q = call.query
    app = await check_credentials(call, MP, q.get("appid", ""), q.get("secret", ""), 40125, whitelist=False)
    if q.get("grant_type", "authorization_code") != "authorization_code":
        raise WeChatError(40002)
    code = q.get("js_code", "")
    if not code:
        raise WeChatError(41008)
    issued = app.js_codes.get(code)
    err = rules.one_time_code_error(issued.issued_at if issued else None, bool(issued and issued.used),
                                    call.now, rules.JS_CODE_TTL, unknown=40029, spent=40163, expired=40029)
    if err or issued is None:
        raise WeChatError(err or 40029)
    issued.used = True
    m = call.sim.member(app, issued.person)
    call.to = m.openid
    answer: dict[str, Any] = {"session_key": m.session_key, "openid": m.openid}
    uid = app.unionid(issued.person)
    if uid:
        answer["unionid"] = uid
    return answer
