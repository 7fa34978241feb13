"""A local stand-in for WeChat's API servers, like a payment provider's test mode.

Two API roots with WeChat's own paths: `/wechat-api` (api.weixin.qq.com: OA and Mini Program) and
`/wecom-api` (qyapi.weixin.qq.com). Point WECHAT_API_BASE / WECOM_API_BASE at them. Apps are
registered over the control API (`/_sim/…`); answers and errcodes are WeChat's.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath, FromQuery

TOKEN_TTL = 7200


@dataclass
class SimApp:
    kind: str  # "wechat" (OA/MP) | "wecom"
    app_id: str
    secret: str
    ip_whitelisted: bool = True
    token: str = ""
    token_expires: float = 0.0
    faults: list[int] = field(default_factory=list)  # errcodes to answer next, one per call

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("secret")
        return d


class State:
    def __init__(self) -> None:
        self.apps: dict[str, SimApp] = {}
        self.token_calls = 0

    def issue_token(self, app: SimApp) -> dict[str, Any]:
        if not app.token or app.token_expires <= time.time():
            app.token = secrets.token_urlsafe(48)
            app.token_expires = time.time() + TOKEN_TTL
        self.token_calls += 1
        return {"access_token": app.token, "expires_in": int(app.token_expires - time.time())}


def _err(errcode: int, errmsg: str) -> Response[dict[str, Any]]:
    # WeChat answers errors with HTTP 200 and a JSON errcode.
    return Response({"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(4)}"}, status_code=200)


def _check(state: State, kind: str, app_id: str, secret: str, client_ip: str,
           wrong_secret: tuple[int, str]) -> SimApp | Response[dict[str, Any]]:
    if not app_id:
        return _err(41002, "appid missing")
    app = state.apps.get(app_id)
    if app is None or app.kind != kind:
        return _err(40013, "invalid appid" if kind == "wechat" else "invalid corpid")
    if not secret:
        return _err(41004, "appsecret missing" if kind == "wechat" else "corpsecret missing")
    if app.faults:
        code = app.faults.pop(0)
        return _err(code, {-1: "system error", 45009: "reach max api daily quota limit",
                           45011: "api minute-quota reach limit  mustslower  retry next minute"}.get(code, "fault"))
    if not app.ip_whitelisted:
        return _err(40164, f"invalid ip {client_ip} ipv6 ::ffff:{client_ip}, not in whitelist")
    if not secrets.compare_digest(app.secret, secret):
        return _err(*wrong_secret)
    return app


def create_simulator() -> Litestar:
    state = State()

    def ip(request: Request[Any, Any, Any]) -> str:
        client = request.scope.get("client")
        return client[0] if client else "127.0.0.1"

    @post("/wechat-api/cgi-bin/stable_token", status_code=200)
    async def stable_token(request: Request[Any, Any, Any]) -> Response[dict[str, Any]] | dict[str, Any]:
        try:
            body = await request.json()
        except Exception:
            return _err(47001, "data format error")
        if not isinstance(body, dict) or body.get("grant_type") != "client_credential":
            return _err(40002, "invalid grant_type")
        app = _check(state, "wechat", str(body.get("appid", "")), str(body.get("secret", "")), ip(request),
                     (40125, "invalid appsecret"))
        if isinstance(app, Response):
            return app
        if body.get("force_refresh"):
            app.token = ""
        return state.issue_token(app)

    @get("/wechat-api/cgi-bin/token")
    async def token(request: Request[Any, Any, Any], appid: FromQuery[str] = "", secret: FromQuery[str] = "",
                    grant_type: FromQuery[str] = "") -> Response[dict[str, Any]] | dict[str, Any]:
        if grant_type != "client_credential":
            return _err(40002, "invalid grant_type")
        app = _check(state, "wechat", appid, secret, ip(request), (40125, "invalid appsecret"))
        if isinstance(app, Response):
            return app
        app.token = ""  # cgi-bin/token always issues a new token, invalidating the previous one
        return state.issue_token(app)

    @get("/wecom-api/cgi-bin/gettoken")
    async def gettoken(request: Request[Any, Any, Any], corpid: FromQuery[str] = "",
                       corpsecret: FromQuery[str] = "") -> Response[dict[str, Any]] | dict[str, Any]:
        app = _check(state, "wecom", corpid, corpsecret, ip(request), (40001, "invalid credential"))
        if isinstance(app, Response):
            return app
        return {"errcode": 0, "errmsg": "ok", **state.issue_token(app)}

    # --- control API (not WeChat's): register apps, inject faults, inspect -----------------------

    @post("/_sim/apps", status_code=200)
    async def register_app(data: dict[str, Any]) -> dict[str, Any]:
        kind = data.get("kind")
        if kind not in ("wechat", "wecom") or not data.get("app_id") or not data.get("secret"):
            return Response({"error": "kind (wechat|wecom), app_id and secret are required"}, status_code=400)
        app = SimApp(kind=kind, app_id=data["app_id"], secret=data["secret"],
                     ip_whitelisted=bool(data.get("ip_whitelisted", True)))
        state.apps[app.app_id] = app
        return app.public()

    @post("/_sim/apps/{app_id:str}/faults", status_code=200)
    async def add_faults(app_id: FromPath[str], data: dict[str, Any]) -> dict[str, Any]:
        app = state.apps.get(app_id)
        if app is None:
            return Response({"error": "unknown app"}, status_code=404)
        app.faults.extend(int(c) for c in data.get("errcodes", []))
        if "ip_whitelisted" in data:
            app.ip_whitelisted = bool(data["ip_whitelisted"])
        return app.public()

    @get("/_sim/apps")
    async def list_apps() -> list[dict[str, Any]]:
        return [a.public() for a in state.apps.values()]

    @post("/_sim/reset", status_code=200)
    async def reset() -> dict[str, Any]:
        state.apps.clear()
        state.token_calls = 0
        return {"ok": True}

    @get("/_sim/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "apps": len(state.apps), "token_calls": state.token_calls}

    return Litestar(route_handlers=[stable_token, token, gettoken, register_app, add_faults, list_apps, reset, health],
                    openapi_config=None)
