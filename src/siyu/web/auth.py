"""Who is asking: server-side sessions in Redis, API keys, login throttling and role guards.

A session cookie holds a random token; Redis keeps `sha256(token) → {uid, epoch}`. Every login
creates a new token (no session fixation); a password change bumps the staff member's auth epoch,
which ends every older session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from redis.asyncio import Redis

from siyu.core.crypto import derive_key, sha256_hex
from siyu.core.errors import Forbidden, NotFound, TooManyRequests
from siyu.core.i18n import N_
from siyu.core.settings import get_settings
from siyu.tenants import services as tenants
from siyu.tenants.staff import CurrentUser, load_current_user, working_epochs

log = logging.getLogger("siyu.web.auth")

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


@dataclass(eq=False)
class _Watch:
    key: str
    staff_id: int
    epoch: int
    ended: asyncio.Event


class AccessWatch:
    """Ends what a session holds open (the live inbox's event stream) within about a second of the session
    ending: sign-out or expiry (its Redis key is gone), a password change (the staff member's auth epoch
    moved on), deactivation or a suspended tenant. One process checks all its open sessions together: one
    Redis MGET and one database query per interval, however many streams are open. When Redis or the
    database cannot answer, the streams are left open (and checked again at the next interval)."""

    def __init__(self, redis: Redis, interval: float = 1.0) -> None:
        self._redis = redis
        self._interval = interval
        self._watches: set[_Watch] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="siyu-access-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watching(self, token: str | None, user: CurrentUser) -> AsyncIterator[asyncio.Event]:
        """An event set once this session no longer grants access (set at once without a session)."""
        watch = _Watch(_session_key(token or ""), user.id, user.auth_epoch, asyncio.Event())
        if not token:
            watch.ended.set()
        self._watches.add(watch)
        try:
            yield watch.ended
        finally:
            self._watches.discard(watch)

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
                failures = 0
            except Exception as exc:  # Redis or the database away: keep the streams, say so once a minute
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("access watch: checking open sessions failed %s time(s): %r", failures, exc)

    async def check(self) -> None:
        watches = [w for w in self._watches if not w.ended.is_set()]
        if not watches:
            return
        sessions = await self._redis.mget([w.key for w in watches])
        epochs = await working_epochs(sorted({w.staff_id for w in watches}))
        for watch, raw in zip(watches, sessions, strict=True):
            session = json.loads(raw) if raw is not None else None
            if (session is None or session.get("uid") != watch.staff_id or session.get("epoch") != watch.epoch
                    or epochs.get(watch.staff_id) != watch.epoch):
                watch.ended.set()


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

DEVICE_COOKIE = "siyu_device"
DEVICE_MAX_AGE = 365 * 86400

# One round trip decides and counts an attempt, so parallel guesses cannot all pass a check made before any
# of them was counted. Every attempt is counted as a failure up front; a success gives its count back.
# KEYS: 1 (account, client) failures, 2 the address's failures, 3 the account's failures from unknown
# clients, 4 the account's slow-down gate. ARGV: 1 pair limit, 2 address limit, 3 slow-down threshold,
# 4 window s, 5 slow-down interval ms, 6 "1" when the client is a browser this account signed in with.
# Answers {0, 0} (go on) or {1|2|3, seconds to wait} (which limit refused it).
_ADMIT = """
local function count(key, window)
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window) end
end
local function wait(key)
  local ttl = redis.call('TTL', key)
  if ttl < 1 then return 1 end
  return ttl
end
local window = tonumber(ARGV[4])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return {1, wait(KEYS[1])} end
if ARGV[6] ~= '1' then
  if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return {2, wait(KEYS[2])} end
  if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[3]) then
    if not redis.call('SET', KEYS[4], '1', 'PX', ARGV[5], 'NX') then
      return {3, math.ceil(redis.call('PTTL', KEYS[4]) / 1000)}
    end
  end
  count(KEYS[2], window)
  count(KEYS[3], window)
end
count(KEYS[1], window)
return {0, 0}
"""

# KEYS: the counts to give one back to (never below zero, never a key without its expiry); ARGV[1] "1": the
# first key (the client's failures on the account) is cleared instead.
_GIVE_BACK = """
for i, key in ipairs(KEYS) do
  if i == 1 and ARGV[1] == '1' then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


class LoginThrottle:
    """Counts sign-in attempts before their password is checked.

    - per (account, client): `login_max_failures_account` failures in a window lock that client out of that
      account only. The client is the browser when it carries a device cookie this account was signed in
      with (people behind one office address keep their own count), else the address;
    - per address, over all accounts (`login_max_failures_ip`): one client spraying many accounts stops;
    - per account, from unknown clients (`login_slow_after_account`): an account attacked from many
      addresses then takes one attempt per `login_slow_interval_seconds`: slowed, never locked, and the
      browsers its owner signed in with are not slowed at all.
    """

    def __init__(self, redis: Redis) -> None:
        s = get_settings()
        self.redis = redis
        self.settings = s
        self._device_key = derive_key(s.secret_key, "login-device")

    @staticmethod
    def _account(email: str) -> str:
        return sha256_hex(email.strip().lower())

    def _device_signature(self, account: str, nonce: str) -> str:
        return hmac.new(self._device_key, f"{account}.{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def device_cookie_value(self, email: str) -> str:
        """A device cookie binding this browser to the account it just signed in to."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._device_signature(self._account(email), nonce)}"

    def known_device(self, email: str, cookie: str | None) -> str | None:
        """The browser's id when its device cookie was given by a sign-in to this account, else None."""
        return self._known_device(self._account(email), cookie)

    def _known_device(self, account: str, cookie: str | None) -> str | None:
        nonce, _, signature = (cookie or "")[:100].partition(".")
        if nonce and signature and hmac.compare_digest(signature.encode(), self._device_signature(account, nonce).encode()):
            return nonce
        return None

    def _keys(self, account: str, client: str, ip: str) -> list[str]:
        return [f"siyu:login:pair:{account}:{client}", f"siyu:login:ip:{ip}", f"siyu:login:acct:{account}",
                f"siyu:login:gate:{account}"]

    def _attempt(self, email: str, ip: str, device_cookie: str | None) -> tuple[list[str], bool]:
        account = self._account(email)
        nonce = self._known_device(account, device_cookie)
        client = f"device:{nonce}" if nonce else f"ip:{ip}"
        return self._keys(account, client, ip), nonce is not None

    async def admit(self, email: str, ip: str, device_cookie: str | None) -> None:
        """Counts this attempt; raises TooManyRequests (nothing counted) when a limit is reached."""
        keys, known = self._attempt(email, ip, device_cookie)
        s = self.settings
        refused, wait = await self.redis.eval(  # type: ignore[misc]
            _ADMIT, len(keys), *keys, s.login_max_failures_account, s.login_max_failures_ip,
            s.login_slow_after_account, s.login_window_seconds, s.login_slow_interval_seconds * 1000,
            "1" if known else "0")
        if int(refused):
            raise TooManyRequests(N_("Too many failed sign-in attempts. Try again later."), max(int(wait), 1))

    async def give_back(self, email: str, ip: str, device_cookie: str | None, *, succeeded: bool) -> None:
        """The attempt turned out not to be a wrong password: take its count back (a success also clears the
        client's failures on that account)."""
        keys, known = self._attempt(email, ip, device_cookie)
        counted = keys[:3] if not known else keys[:1]
        await self.redis.eval(_GIVE_BACK, len(counted), *counted, "1" if succeeded else "0")  # type: ignore[misc]
