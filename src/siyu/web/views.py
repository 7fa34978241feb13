"""Sign-in, sign-out, password, language, the home redirect, health checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.response import Redirect, Template
from msgspec import UNSET, Meta, Struct, UnsetType
from redis.asyncio import Redis

from siyu.core import db, i18n
from siyu.core.errors import Forbidden, InvalidInput, TooManyRequests
from siyu.core.settings import get_settings
from siyu.inbox import boxes
from siyu.inbox.conversations import viewer_for
from siyu.tenants import staff as staff_svc
from siyu.tenants.validation import N_
from siyu.web.auth import (
    DEVICE_COOKIE,
    DEVICE_MAX_AGE,
    LOCALE_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    client_ip,
    create_session,
    destroy_session,
    signed_in,
)
from siyu.web.render import current_user, errors_for, render, toast_header

READY_TIMEOUT = 1.0  # seconds each dependency has to answer /readyz


def _safe_next(value: str | None) -> str:
    # Only local paths: an open redirect after login would be a phishing aid.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _back_to(request: Request[Any, Any, Any]) -> str:
    """The page the person came from, when it is on this site; else the start page."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc != request.headers.get("host", ""):
        return "/"
    return _safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))


def home_for(user: staff_svc.CurrentUser) -> str:
    if user.is_platform_admin:
        return "/platform/tenants"
    if user.is_tenant_admin:
        return "/settings/channels"
    return "/inbox"  # a rep's work is in the inbox


def _session_cookie(token: str, max_age: int) -> Cookie:
    s = get_settings()
    return Cookie(key=SESSION_COOKIE, value=token, max_age=max_age, httponly=True, samesite="lax",
                  secure=s.cookie_secure, path="/")


class AuthController(Controller):
    include_in_schema = False
    @get("/", sync_to_thread=False)
    def index(self, request: Request[Any, Any, Any]) -> Redirect:
        user = current_user(request)
        return Redirect(home_for(user) if user else "/login")

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        user = current_user(request)
        if user:
            return Redirect(home_for(user))
        return render(request, "auth/login.html", {"next": _safe_next(request.query_params.get("next"))})

    @post("/login")
    async def login(self, request: Request[Any, Any, Any]) -> Template | Redirect:
        form = await request.form()
        email = str(form.get("email", "")).strip()
        password = str(form.get("password", ""))
        next_url = _safe_next(str(form.get("next", "")))
        redis: Redis = request.app.state.redis
        throttle = LoginThrottle(redis)
        ip = client_ip(request)
        device = request.cookies.get(DEVICE_COOKIE)
        ctx: dict[str, Any] = {"form": {"email": email}, "next": next_url}
        if not email or not password:
            ctx["error"] = i18n.gettext(N_("Enter your email and password."))
            return render(request, "auth/login.html", ctx, status_code=400)
        try:
            await throttle.admit(email, ip, device)  # counted before the password is looked at
        except TooManyRequests as exc:
            wait = exc.retry_after
            ctx["error"] = (
                i18n.gettext(N_("Too many sign-in attempts. Try again in {seconds} seconds.")).format(seconds=wait)
                if wait < 60 else
                i18n.gettext(N_("Too many failed sign-in attempts. Try again in {minutes} minutes.")).format(
                    minutes=max(1, wait // 60)))
            return render(request, "auth/login.html", ctx, status_code=429, headers={"Retry-After": str(wait)})
        try:
            user = await staff_svc.authenticate(email, password, ip)
        except Forbidden as exc:
            await throttle.give_back(email, ip, device, succeeded=True)  # the password was right
            ctx["error"] = i18n.gettext(exc.message)
            return render(request, "auth/login.html", ctx, status_code=403)
        except Exception:
            await throttle.give_back(email, ip, device, succeeded=False)  # not a wrong password: a fault
            raise
        if user is None:
            ctx["error"] = i18n.gettext(N_("Wrong email or password."))
            return render(request, "auth/login.html", ctx, status_code=401)
        await throttle.give_back(email, ip, device, succeeded=True)
        token = await create_session(redis, user)
        target = next_url if next_url != "/" else home_for(user)
        response = Redirect(target)
        response.cookies.append(_session_cookie(token, get_settings().session_max_age))
        if throttle.known_device(email, device) is None:
            response.cookies.append(Cookie(key=DEVICE_COOKIE, value=throttle.device_cookie_value(email),
                                           max_age=DEVICE_MAX_AGE, httponly=True, samesite="lax",
                                           secure=get_settings().cookie_secure, path="/"))
        if user.locale:
            response.cookies.append(Cookie(key=LOCALE_COOKIE, value=user.locale, max_age=365 * 86400, samesite="lax"))
        return response

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        await destroy_session(request.app.state.redis, request.cookies.get(SESSION_COOKIE))
        response = Redirect("/login")
        response.cookies.append(_session_cookie("", 0))
        return response

    @post("/language")
    async def set_language(self, request: Request[Any, Any, Any]) -> Redirect:
        """Switch language; remembered on the user (and in a cookie for the sign-in page)."""
        form = await request.form()
        locale = str(form.get("locale", ""))
        if locale not in i18n.LOCALES:
            raise HTTPException(status_code=400, detail="locale: choose zh_CN or en")
        user = current_user(request)
        if user:
            await staff_svc.do_set_locale(user.id, locale)
        response = Redirect(_back_to(request))
        response.cookies.append(Cookie(key=LOCALE_COOKIE, value=locale, max_age=365 * 86400, samesite="lax"))
        return response

    @get("/account/password", guards=[signed_in])
    async def password_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "auth/password.html")

    @post("/account/password", guards=[signed_in])
    async def change_password(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        user = current_user(request)
        assert user is not None
        form = await request.form()
        try:
            epoch = await staff_svc.do_change_password(
                user.actor(client_ip(request)), user.id, str(form.get("current_password", "")),
                str(form.get("new_password", "")), str(form.get("confirm_password", "")),
            )
        except InvalidInput as exc:
            return render(request, "auth/password.html", {"errors": errors_for(exc)}, block="form", status_code=400)
        # Every other session ended with the epoch bump; this one continues under a fresh token.
        redis: Redis = request.app.state.redis
        await destroy_session(redis, request.cookies.get(SESSION_COOKIE))
        fresh = staff_svc.CurrentUser(**{**user.__dict__, "auth_epoch": epoch})
        token = await create_session(redis, fresh)
        message = i18n.gettext(N_("Password changed. Other sessions were signed out."))
        response = render(request, "auth/password.html", {"done": message}, block="form",
                          headers=toast_header(message))
        response.cookies.append(_session_cookie(token, get_settings().session_max_age))
        return response

    @get("/workspace", guards=[signed_in])
    async def workspace(self, request: Request[Any, Any, Any]) -> Template:
        """Who a person is in their brand (teams, capacity) and their work now: their open and unread
        conversations and the waiting ones they may take, each a link into the inbox."""
        user = current_user(request)
        assert user is not None
        me = counts = None
        if user.tenant_id is not None:
            me = await staff_svc.get_staff(user.tenant_id, user.id)
            teams = {t["id"]: t["name"] for t in await staff_svc.list_teams(user.tenant_id)}
            me["teams"] = [teams[t] for t in me["team_ids"] if t in teams]
            counts = await boxes.counts(user.tenant_id, await viewer_for(user.tenant_id, user.id))
        return render(request, "auth/workspace.html", {"me": me, "counts": counts})


class Health(Struct):
    status: Annotated[str, Meta(description="Always ok: the process answers")]


class Checks(Struct):
    postgres: Annotated[str, Meta(description="ok, or error: and the kind of failure")]
    redis: Annotated[str, Meta(description="ok, or error: and the kind of failure")]


class Readiness(Struct):
    status: Annotated[str, Meta(description="ok, or unavailable when a check failed")]
    checks: Checks
    failed: Annotated[list[str] | UnsetType, Meta(description="The checks that failed (only when one did)")] = UNSET


class HealthController(Controller):
    @get("/favicon.ico", sync_to_thread=False, include_in_schema=False)
    def favicon(self) -> Redirect:
        """Browsers ask for /favicon.ico by themselves wherever no page names the icon (JSON, files,
        proxies' error pages): send them to the one icon there is, for a day."""
        return Redirect("/static/favicon.svg", status_code=301, headers={"cache-control": "public, max-age=86400"})

    @get("/healthz", sync_to_thread=False, include_in_schema=True, tags=["health"])
    def healthz(self) -> Health:
        """200 while the process runs."""
        return Health(status="ok")

    @get("/readyz", tags=["health"],
         responses={503: ResponseSpec(Readiness, description="PostgreSQL or Redis did not answer")})
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        """200 only when PostgreSQL and Redis answer; 503 naming what failed. Both are asked at once and
        each has READY_TIMEOUT to answer, so a server that hangs (accepts, never answers) is named within
        that time instead of holding the probe."""
        async def check(name: str, probe: Callable[[], Awaitable[Any]]) -> tuple[str, str]:
            try:
                await asyncio.wait_for(probe(), READY_TIMEOUT)
            except TimeoutError:
                return name, f"error: no answer within {READY_TIMEOUT:g} s"
            except Exception as exc:  # report, do not crash: this is the probe
                return name, f"error: {type(exc).__name__}"
            return name, "ok"

        checks = dict(await asyncio.gather(check("postgres", db.ping),
                                           check("redis", request.app.state.redis.ping)))
        ok = all(v == "ok" for v in checks.values())
        failed = [k for k, v in checks.items() if v != "ok"]
        body = Readiness(status="ok" if ok else "unavailable", checks=Checks(**checks), failed=failed or UNSET)
        return Response(body, status_code=200 if ok else 503)
