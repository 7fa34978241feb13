"""Who is asking: server-side sessions in Redis, API keys, login throttling and role guards.

A session cookie holds a random token; Redis keeps `sha256(token) → {uid, epoch}`. Every login
creates a new token (no session fixation); a password change bumps the staff member's auth epoch,
which ends every older session.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from redis.asyncio import Redis

from siyu.core.crypto import sha256_hex
from siyu.core.errors import Forbidden, NotFound, TooManyRequests
from siyu.core.i18n import N_
from siyu.core.settings import get_settings
from siyu.tenants import services as tenants
from siyu.tenants.staff import CurrentUser, load_current_user

SESSION_COOKIE = "siyu_session"
LOCALE_COOKIE = "siyu_locale"


def _session_key(token: str) -> str:
    return f"siyu:session:{sha256_hex(token)}"


async def create_session(redis: Redis, user: CurrentUser) -> str:
    token = secrets.token_urlsafe(32)
    payload = json.dumps({"uid": user.id, "epoch": user.auth_epoch})
    await redis.set(_session_key(token), payload, ex=get_settings().session_max_age)
    return token


async def destroy_session(redis: Redis, token: str | None) -> None:
    if token:
        await redis.delete(_session_key(token))


async def session_user(redis: Redis, token: str | None) -> CurrentUser | None:
    if not token or len(token) > 100:
        return None
    raw = await redis.get(_session_key(token))
    if raw is None:
        return None
    data = json.loads(raw)
    user = await load_current_user(int(data["uid"]))
    if user is None or user.auth_epoch != data.get("epoch"):
        await redis.delete(_session_key(token))
        return None
    return user


@dataclass(frozen=True)
class ApiPrincipal:
    tenant_id: int
    key_id: int

    def actor(self, ip: str = "") -> tenants.Actor:
        return tenants.Actor(None, f"api-key:{self.key_id}", ip)


class AuthMiddleware(AbstractAuthenticationMiddleware):
    """Sets `request.user` to a CurrentUser (session), an ApiPrincipal (Bearer key on /api) or None."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        path = connection.scope["path"]
        if path.startswith("/api/"):
            header = connection.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            principal = None
            if scheme.lower() == "bearer" and key:
                found = await tenants.authenticate_api_key(key.strip())
                if found:
                    principal = ApiPrincipal(*found)
            return AuthenticationResult(user=principal, auth=None)
        redis: Redis = connection.app.state.redis
        user = await session_user(redis, connection.cookies.get(SESSION_COOKIE))
        return AuthenticationResult(user=user, auth=None)


class NotAuthenticated(Exception):
    """Raised by guards when nobody is signed in; mapped to a redirect to /login (or 401 JSON)."""


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.scope.get("client")
    return client[0] if client else ""


def _user(connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser:
    user = connection.scope.get("user")
    if not isinstance(user, CurrentUser):
        raise NotAuthenticated()
    return user


def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _user(connection)


def platform_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not _user(connection).is_platform_admin:
        raise Forbidden(N_("This page is for platform administrators."))


def tenant_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if _user(connection).role != "tenant_admin":
        raise Forbidden(N_("This page is for the brand's administrators."))


def tenant_staff(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if _user(connection).tenant_id is None:
        raise Forbidden(N_("This page belongs to a brand's workspace."))


def api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not isinstance(connection.scope.get("user"), ApiPrincipal):
        raise NotAuthenticated()


def api_tenant_id(connection: ASGIConnection[Any, Any, Any, Any]) -> int:
    """The tenant of the API key that made this request (routes guarded by `api_key`)."""
    principal = connection.scope.get("user")
    if not isinstance(principal, ApiPrincipal):
        raise NotAuthenticated()
    return principal.tenant_id


def require_tenant_id(user: CurrentUser) -> int:
    if user.tenant_id is None:
        raise NotFound()
    return user.tenant_id


# --- login throttling --------------------------------------------------------------------------

class LoginThrottle:
    """Counts failed logins per account and per IP in fixed windows; over the limit, logins wait."""

    def __init__(self, redis: Redis) -> None:
        s = get_settings()
        self.redis = redis
        self.window = s.login_window_seconds
        self.limits = {"acct": s.login_max_failures_account, "ip": s.login_max_failures_ip}

    def _keys(self, email: str, ip: str) -> dict[str, str]:
        return {"acct": f"siyu:login-fail:acct:{sha256_hex(email.strip().lower())}", "ip": f"siyu:login-fail:ip:{ip}"}

    async def check(self, email: str, ip: str) -> None:
        keys = self._keys(email, ip)
        values = await self.redis.mget(list(keys.values()))
        for (kind, key), value in zip(keys.items(), values, strict=True):
            if value is not None and int(value) >= self.limits[kind]:
                ttl = await self.redis.ttl(key)
                raise TooManyRequests(N_("Too many failed sign-in attempts. Try again later."), max(int(ttl), 1))

    async def failed(self, email: str, ip: str) -> None:
        pipe = self.redis.pipeline()
        for key in self._keys(email, ip).values():
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
        await pipe.execute()

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(self._keys(email, "")["acct"])
