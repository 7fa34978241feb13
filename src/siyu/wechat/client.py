"""The one async client for WeChat's API (OA, Mini Program and WeCom).

- Base URLs come from WECHAT_API_BASE / WECOM_API_BASE, never a hard-coded host.
- One access token per account, shared by every process through Redis: single-flight refresh under a
  lock, `stable_token` for OA/MP, compare-and-delete invalidation on 40001/40014/42001 and one retry.
- WeChat's errcodes become typed exceptions: busy (retried with backoff), rate limited (retry later),
  not allowed now (never retried), configuration problems (shown to the tenant admin).
- Transport failures are told apart by whether the request can have reached WeChat: refused or timed-out
  connections, a full pool and a failed token step are `WeChatUnreachable` / `WeChatTokenUnavailable`
  (safe to repeat); a read timeout, a reset or a broken answer after the request left is, for a send,
  `WeChatOutcomeUnknown` (never repeated: WeChat may have delivered it). Reads may always be repeated.
- Every call passes the (tenant, account) token bucket first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json as json_module
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import httpx
from redis.asyncio import Redis

from siyu.core.errors import WeChatError
from siyu.core.logs import quiet_http_clients
from siyu.core.settings import get_settings
from siyu.wechat.ratelimit import BEIJING, Admission, DailyQuotaUsed, RateLimiter

log = logging.getLogger("siyu.wechat.client")
quiet_http_clients()  # token URLs carry secrets in their query string

TOKEN_ERRORS = {40001, 40014, 42001}
NOT_ALLOWED = {45015, 45047, 43004, 43101, 95018, 41051}
RATE_LIMITED = {45009, 45011}
CONFIG_PROBLEMS = {40164, 48001, 40125, 40013, 41002, 41004, 40091, 40243, 40056, 48002}
BUSY = {-1}
BUSY_BACKOFF = (0.2, 0.6)  # two retries after the first try


class WeChatBusy(WeChatError):
    """`-1`: WeChat is busy. Retried with backoff inside the client; raised when it stays busy."""

    retryable = True
    reason = "busy"


class WeChatUnreachable(WeChatBusy):
    """The request never reached WeChat (connection refused or timed out, no free connection): repeating
    it cannot deliver anything twice."""

    reason = "unreachable"

    def __init__(self, errmsg: str) -> None:
        super().__init__(-1, errmsg)


class WeChatTokenUnavailable(WeChatBusy):
    """The access token could not be had (the token endpoint timed out, was unreachable or answered
    garbage): the call itself was never made, so it may be repeated."""

    reason = "token_unavailable"

    def __init__(self, errmsg: str) -> None:
        super().__init__(-1, errmsg)


class WeChatOutcomeUnknown(WeChatError):
    """A send left for WeChat and no readable answer came back (read timeout, reset, protocol error, an
    answer that is not WeChat's JSON). WeChat may have delivered it: never repeated automatically."""

    retryable = False
    reason = "outcome_unknown"

    def __init__(self, errmsg: str) -> None:
        super().__init__(-1, errmsg)


class WeChatRateLimited(WeChatError):
    """45009 (daily quota) / 45011 (minute quota): try again after `retry_after` seconds."""

    retryable = True
    reason = "rate_limited"

    def __init__(self, errcode: int, errmsg: str = "", retry_after: int = 60) -> None:
        super().__init__(errcode, errmsg)
        self.retry_after = retry_after


class WeChatNotAllowed(WeChatError):
    """45015 window closed, 45047 quota used, 43004 not following, 43101 no consent: never retried."""

    retryable = False

    REASONS = {45015: "window_closed", 45047: "quota_used", 43004: "not_following", 43101: "no_consent",
               95018: "window_closed", 41051: "welcome_used"}

    @property
    def reason(self) -> str:
        return self.REASONS.get(self.errcode, "not_allowed")


class WeChatConfigProblem(WeChatError):
    """40164 IP not whitelisted, 48001 not authorised, wrong AppID/secret: the tenant admin must act."""

    retryable = False
    reason = "config_problem"


def error_for(errcode: int, errmsg: str) -> WeChatError:
    if errcode in BUSY:
        return WeChatBusy(errcode, errmsg)
    if errcode == 45011:
        return WeChatRateLimited(errcode, errmsg, retry_after=60)
    if errcode == 45009:
        return WeChatRateLimited(errcode, errmsg, retry_after=seconds_to_beijing_midnight())
    if errcode in NOT_ALLOWED:
        return WeChatNotAllowed(errcode, errmsg)
    if errcode in CONFIG_PROBLEMS:
        return WeChatConfigProblem(errcode, errmsg)
    return WeChatError(errcode, errmsg)


def seconds_to_beijing_midnight(now: datetime | None = None) -> int:
    local = (now or datetime.now(BEIJING)).astimezone(BEIJING)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
    return max(60, int((midnight - local).total_seconds()))


@dataclass(frozen=True)
class ApiAccount:
    tenant_id: int
    channel: str  # oa | mp | wecom
    app_id: str  # AppID or CorpID
    secret: str

    def __repr__(self) -> str:
        return f"ApiAccount(tenant_id={self.tenant_id}, channel={self.channel!r}, app_id={self.app_id!r})"


# Raised before a byte of the request left: nothing can have reached WeChat (httpx, then aiohttp: a connection
# that could not be made, or no free connection within the connect limit).
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.ProxyError,
            aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL)
# What a JSON call through `JsonTransport` raises when the exchange fails (TimeoutError: the whole deadline).
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, TimeoutError)
OnSend = Callable[[], Awaitable[None]]


class JsonTransport:
    """The HTTP under WeChat's JSON API calls (every send): one aiohttp session of `connections` kept-alive
    connections. Measured against the simulator, an aiohttp call costs the caller 0.16 ms of CPU where httpx
    costs 1.0–1.2 ms, and a sending worker is bound by its CPU. Token requests, media and uploads stay on
    httpx. The session is opened with the first call, in the loop that makes it."""

    def __init__(self, connections: int, timeout_s: float, connect_s: float, keepalive_s: float = 5.0) -> None:
        self.connections, self.keepalive_s = connections, keepalive_s
        # `connect` covers waiting for a free connection and making one: nothing was sent when it runs out.
        self.timeout = aiohttp.ClientTimeout(total=timeout_s + connect_s, connect=connect_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, limit_per_host=0,
                                               keepalive_timeout=self.keepalive_s),
                timeout=self.timeout)
        return self._session

    async def request(self, method: str, url: str, params: dict[str, Any],
                      payload: dict[str, Any] | None) -> tuple[int, bytes]:
        """(HTTP status, body). WeChat reads the body as UTF-8 JSON; Chinese stays as it is (not \\u-escaped)."""
        data = None if payload is None else json_module.dumps(payload, ensure_ascii=False,
                                                                separators=(",", ":")).encode()
        query = {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items()}
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else None
        async with self._open().request(method, url, params=query, data=data, headers=headers,
                                        allow_redirects=False) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def transport_failure(path: str, exc: Exception, repeatable: bool) -> WeChatError:
    """What a failed HTTP exchange means for the caller: the request never left (repeatable), or it may
    have been carried out (unknown for a send; a read is simply asked again)."""
    what = f"{path}: {type(exc).__name__}"
    if isinstance(exc, NOT_SENT):
        return WeChatUnreachable(f"{what}: WeChat was not reached")
    if repeatable:
        return WeChatBusy(-1, f"{what}: no answer")
    return WeChatOutcomeUnknown(f"{what}: the request was sent and no answer came back; WeChat may have "
                                "carried it out")


async def request_token(http: httpx.AsyncClient, channel: str, app_id: str, secret: str,
                        force: bool = False) -> httpx.Response:
    """WeChat's token request: `stable_token` for OA/MP (it does not invalidate the token other processes
    hold), `gettoken` for WeCom. The caller interprets the answer."""
    s = get_settings()
    if channel == "wecom":
        return await http.get(f"{s.wecom_api_base}/cgi-bin/gettoken", params={"corpid": app_id, "corpsecret": secret})
    return await http.post(f"{s.wechat_api_base}/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": app_id, "secret": secret, "force_refresh": force})


class MediaTooLarge(WeChatError):
    """The media is larger than Siyu keeps for its kind: refused while reading, never stored."""

    retryable = False
    reason = "too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(-1, f"{size} bytes, more than the {limit} Siyu keeps")
        self.size, self.limit = size, limit


class MediaLinkRefused(WeChatError):
    """WeChat answered with a link that is not one of WeChat's own addresses: Siyu does not follow it."""

    retryable = False
    reason = "link_refused"

    def __init__(self, url: str) -> None:
        super().__init__(-1, f"refused to follow {url[:200]!r}: not a WeChat address")


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str  # as WeChat declared it (callers sniff the bytes; this is only a hint)
    filename: str  # from Content-Disposition, for files
    video_url: str = ""  # an OA video answered as a link

    @property
    def is_json(self) -> bool:
        return self.content_type in ("application/json", "text/plain") and self.data[:1] == b"{"

    def json(self) -> dict[str, Any]:
        try:
            data = json_module.loads(self.data[:1_000_000])
        except ValueError:
            return {"errcode": -1, "errmsg": "media/get answered text that is not JSON"}
        return data if isinstance(data, dict) else {"errcode": -1, "errmsg": "media/get answered a JSON non-object"}


WECHAT_MEDIA_DOMAINS = ("qq.com", "qpic.cn", "weixin.qq.com", "wechat.com", "gtimg.cn")


def is_wechat_url(url: str) -> bool:
    """https on one of WeChat's (Tencent's) domains, or the configured API host (the simulator in dev)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    s = get_settings()
    own = {(urlsplit(base).scheme, urlsplit(base).hostname, urlsplit(base).port)
           for base in (s.wechat_api_base, s.wecom_api_base)}
    if (parts.scheme, host, parts.port) in own:
        return True
    return parts.scheme == "https" and any(host == d or host.endswith("." + d) for d in WECHAT_MEDIA_DOMAINS)


_FILENAME = re.compile(r'filename="?([^";]{1,200})"?', re.IGNORECASE)
_FILENAME_UTF8 = re.compile(r"filename\*=UTF-8''([^;\s]{1,600})", re.IGNORECASE)


def filename_of(disposition: str) -> str:
    """The file name WeChat gives in Content-Disposition (for showing only; never used as a path); the
    RFC 5987 form (`filename*=UTF-8''…`) wins over the plain one."""
    found = _FILENAME_UTF8.search(disposition or "") or _FILENAME.search(disposition or "")
    if not found:
        return ""
    name = unquote(found.group(1)).strip().replace("/", "_").replace("\\", "_")
    return "".join(c for c in name if c.isprintable())[:120]


# Delete the key only if it still holds our value: never drop a token (or lock) another worker just set.
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class WeChatClient:
    def __init__(self, http: httpx.AsyncClient, json_http: JsonTransport, redis: Redis, limiter: RateLimiter,
                 account: ApiAccount) -> None:
        self.http = http  # tokens, media, uploads
        self.json_http = json_http  # the JSON API calls
        self.redis = redis
        self.limiter = limiter
        self.account = account
        s = get_settings()
        self.base = s.wecom_api_base if account.channel == "wecom" else s.wechat_api_base
        fingerprint = hashlib.sha256(account.secret.encode()).hexdigest()[:12]  # a new secret, a new token
        group = "wecom" if account.channel == "wecom" else "wechat"
        self.token_key = f"siyu:wx:token:{group}:{account.app_id}:{fingerprint}"
        self._cad = redis.register_script(_COMPARE_AND_DELETE)

    # --- tokens ----------------------------------------------------------------------------------

    async def access_token(self, stale: str | None = None) -> str:
        """The shared token; fetched once for all processes. `stale` is a token WeChat just refused."""
        token = await self._cached()
        if token and token != stale:
            return token
        lock_key = self.token_key + ":lock"
        mine = secrets.token_hex(8)
        for _ in range(300):  # ~15 s at most
            if await self.redis.set(lock_key, mine, nx=True, ex=15):
                try:
                    token = await self._cached()
                    if token and token != stale:
                        return token  # another process refreshed while we waited for the lock
                    token, ttl = await self._fetch(force=False)
                    if token == stale:  # WeChat still hands out the refused token: force a new one
                        token, ttl = await self._fetch(force=True)
                    await self.redis.set(self.token_key, token, ex=ttl)
                    return token
                finally:
                    await self._cad(keys=[lock_key], args=[mine])
            await asyncio.sleep(0.05)
            token = await self._cached()
            if token and token != stale:
                return token
        raise WeChatTokenUnavailable("timed out waiting for another process to refresh the access token")

    async def _cached(self) -> str | None:
        raw = await self.redis.get(self.token_key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def invalidate(self, token: str) -> None:
        await self._cad(keys=[self.token_key], args=[token])

    async def _fetch(self, force: bool) -> tuple[str, int]:
        a = self.account
        try:
            resp = await request_token(self.http, a.channel, a.app_id, a.secret, force=force)
            body = self._json(resp)
        except (httpx.HTTPError, WeChatBusy) as exc:
            # Whatever happened to the token request, the call it was for has not been made.
            raise WeChatTokenUnavailable(f"access token: {type(exc).__name__}: {exc}") from None
        errcode = int(body.get("errcode", 0) or 0)
        if errcode or not body.get("access_token"):
            raise error_for(errcode or -1, str(body.get("errmsg", "no access_token in the answer")))
        expires_in = int(body.get("expires_in", 7200))
        log.info("fetched a new access token for %s %s", a.channel, a.app_id)
        return str(body["access_token"]), max(60, expires_in - 300)  # refresh 5 minutes early

    # --- calls -----------------------------------------------------------------------------------

    @staticmethod
    def _json(resp: httpx.Response, repeatable: bool = True) -> dict[str, Any]:
        return WeChatClient._json_of(resp.status_code, resp.content, repeatable)

    @staticmethod
    def _json_of(status: int, raw: bytes, repeatable: bool = True) -> dict[str, Any]:
        try:
            data = json_module.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        what = f"WeChat answered HTTP {status} without a JSON object"
        # Something between us and WeChat may have answered after WeChat carried the send out.
        raise WeChatBusy(-1, what) if repeatable else WeChatOutcomeUnknown(what)

    async def _admit(self, path: str, bulk: bool, with_token: bool) -> Admission:
        """The call's daily quota and rate limit, counted by Siyu (and the cached token, when it needs one)."""
        a = self.account
        try:
            return await self.limiter.admit(a.tenant_id, a.channel, a.app_id, path,
                                            self.token_key if with_token else "", bulk=bulk)
        except DailyQuotaUsed:
            raise WeChatRateLimited(45009, f"daily quota of {path} used (counted by Siyu)",
                                    retry_after=seconds_to_beijing_midnight()) from None
        except TimeoutError as exc:
            raise WeChatRateLimited(45011, f"{exc} (counted by Siyu)", retry_after=60) from None

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: dict[str, Any] | None = None, bulk: bool = False, with_token: bool = True,
                   repeatable: bool = True, on_send: OnSend | None = None,
                   files: dict[str, tuple[str, bytes, str]] | None = None) -> dict[str, Any]:
        """One API call with the token, the rate limits and WeChat's error policy applied.

        A send passes `repeatable=False`: once its request may have reached WeChat, a failure without an
        answer is `WeChatOutcomeUnknown`. `on_send` runs right before each request leaves (after the
        rate limit and the token step), so the caller can record that WeChat is being asked."""
        admission = await self._admit(path, bulk, with_token)
        cached = admission.token  # read with the admission: no second round trip for it
        token: str | None = None
        refreshed = False
        busy_tries = 0
        while True:
            query = dict(params or {})
            if with_token:
                token = cached or await self.access_token()
                cached = None
                query["access_token"] = token
            if on_send is not None:
                await on_send()
            try:
                if files is None:
                    status, raw = await self.json_http.request(method, f"{self.base}/{path}", query, json)
                else:
                    resp = await self.http.request(method, f"{self.base}/{path}", params=query, files=files)
                    status, raw = resp.status_code, resp.content
            except TRANSPORT_ERRORS as exc:
                raise transport_failure(path, exc, repeatable) from None
            body = self._json_of(status, raw, repeatable)
            errcode = int(body.get("errcode", 0) or 0)
            if errcode == 0:
                return body
            errmsg = str(body.get("errmsg", ""))
            if errcode in TOKEN_ERRORS and with_token and token and not refreshed:
                refreshed = True
                await self.invalidate(token)
                await self.access_token(stale=token)
                continue
            if errcode in BUSY and busy_tries < len(BUSY_BACKOFF):
                await asyncio.sleep(BUSY_BACKOFF[busy_tries])
                busy_tries += 1
                continue
            raise error_for(errcode, errmsg)

    # --- the endpoints Siyu uses (thin, named wrappers) --------------------------------------------

    async def send_custom_message(self, openid: str, msgtype: str, content: dict[str, Any],
                                  bulk: bool = False, on_send: OnSend | None = None) -> dict[str, Any]:
        return await self.call("POST", "cgi-bin/message/custom/send",
                               json={"touser": openid, "msgtype": msgtype, msgtype: content}, bulk=bulk,
                               repeatable=False, on_send=on_send)

    async def send_text(self, openid: str, text: str, bulk: bool = False,
                        on_send: OnSend | None = None) -> dict[str, Any]:
        return await self.send_custom_message(openid, "text", {"content": text}, bulk=bulk, on_send=on_send)

    async def user_info(self, openid: str, lang: str = "zh_CN") -> dict[str, Any]:
        return await self.call("GET", "cgi-bin/user/info", params={"openid": openid, "lang": lang})

    async def code_to_session(self, code: str) -> dict[str, Any]:
        """MP login: openid, session_key and (when bound to an Open Platform account) unionid."""
        return await self.call("GET", "sns/jscode2session", with_token=False, params={
            "appid": self.account.app_id, "secret": self.account.secret, "js_code": code,
            "grant_type": "authorization_code"})

    async def external_contact(self, external_userid: str) -> dict[str, Any]:
        return await self.call("GET", "cgi-bin/externalcontact/get", params={"external_userid": external_userid})

    async def send_template(self, openid: str, template_id: str, data: dict[str, str],
                            on_send: OnSend | None = None) -> dict[str, Any]:
        """An Official Account template message (a service notice: no reply window, the template's own
        rules). `data` maps each keyword to its value."""
        return await self.call("POST", "cgi-bin/message/template/send", json={
            "touser": openid, "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()}}, repeatable=False, on_send=on_send)

    async def send_subscribe(self, openid: str, template_id: str, data: dict[str, str],
                             on_send: OnSend | None = None) -> dict[str, Any]:
        """A one-time subscription message: `message/subscribe/send` on a Mini Program, `subscribe/bizsend`
        on an Official Account. It uses one of the person's consents to that template."""
        path = "cgi-bin/message/subscribe/send" if self.account.channel == "mp" \
            else "cgi-bin/message/subscribe/bizsend"
        return await self.call("POST", path, json={
            "touser": openid, "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()}}, repeatable=False, on_send=on_send)

    async def add_msg_template(self, sender: str, external_userids: list[str], text: str,
                               on_send: OnSend | None = None) -> dict[str, Any]:
        """A 1:1 message task for a WeCom member: it reaches the customer once the member confirms it in the
        WeCom client. Answers the task's msgid and the customers it cannot reach (`fail_list`)."""
        return await self.call("POST", "cgi-bin/externalcontact/add_msg_template", json={
            "chat_type": "single", "external_userid": external_userids, "sender": sender,
            "text": {"content": text}}, repeatable=False, on_send=on_send)

    async def mass_send_text(self, openids: list[str], text: str, clientmsgid: str,
                             on_send: OnSend | None = None) -> dict[str, Any]:
        """An OA mass send of a text to 2 to 10,000 followers (`message/mass/send`). `clientmsgid` is WeChat's
        own idempotency key: the same one again within 24 h is refused (45065) with the first send's msg_id."""
        return await self.call("POST", "cgi-bin/message/mass/send", json={
            "touser": openids, "msgtype": "text", "text": {"content": text}, "clientmsgid": clientmsgid,
            "send_ignore_reprint": 0}, bulk=True, repeatable=False, on_send=on_send)

    async def get_groupmsg_task(self, msgid: str, limit: int = 1000, cursor: str = "") -> dict[str, Any]:
        """Which WeCom members of a mass task have sent it (status 0 not yet, 2 sent)."""
        return await self.call("POST", "cgi-bin/externalcontact/get_groupmsg_task",
                               json={"msgid": msgid, "limit": limit, "cursor": cursor})

    async def get_groupmsg_send_result(self, msgid: str, userid: str, limit: int = 1000,
                                       cursor: str = "") -> dict[str, Any]:
        """What became of a member's task for each customer: status 0 not sent, 1 sent, 2 not their contact
        any more, 3 the customer already received the corp's mass messages allowed (the receive limit)."""
        return await self.call("POST", "cgi-bin/externalcontact/get_groupmsg_send_result",
                               json={"msgid": msgid, "userid": userid, "limit": limit, "cursor": cursor})

    # --- media: WeChat's media API only, by media id; never a URL from a message -----------------------------

    async def download_media(self, media_id: str, max_bytes: int) -> Download:
        """`cgi-bin/media/get` (the same path on OA, MP and WeCom, each with its own token): the bytes, or
        WeChat's JSON (an errcode → the typed error; a video's `video_url` → `Download.video_url`). Read as a
        stream and refused past `max_bytes` (`MediaTooLarge`), so a huge answer never fills memory. A read:
        busy and token errors are asked again as in `call`."""
        await self._admit("cgi-bin/media/get", False, False)
        refreshed, busy_tries = False, 0
        while True:
            token = await self.access_token()
            try:
                got = await self._stream("GET", f"{self.base}/cgi-bin/media/get",
                                         {"access_token": token, "media_id": media_id}, max_bytes)
            except httpx.HTTPError as exc:
                raise transport_failure("cgi-bin/media/get", exc, repeatable=True) from None
            if not got.is_json:
                return got
            body = got.json()
            errcode = int(body.get("errcode", 0) or 0)
            if errcode == 0:
                url = str(body.get("video_url") or "")
                if not url:
                    raise WeChatError(-1, "cgi-bin/media/get answered JSON without media or a video_url")
                return Download(b"", "", "", video_url=url)
            if errcode in TOKEN_ERRORS and not refreshed:
                refreshed = True
                await self.invalidate(token)
                await self.access_token(stale=token)
                continue
            if errcode in BUSY and busy_tries < len(BUSY_BACKOFF):
                await asyncio.sleep(BUSY_BACKOFF[busy_tries])
                busy_tries += 1
                continue
            raise error_for(errcode, str(body.get("errmsg", "")))

    async def fetch_video_url(self, url: str, max_bytes: int) -> Download:
        """The video a `video_url` answer points at, only when the URL is WeChat's own (https on a WeChat or
        Tencent domain, or the configured API host): never any other address. No redirects."""
        if not is_wechat_url(url):
            raise MediaLinkRefused(url)
        try:
            return await self._stream("GET", url, {}, max_bytes)
        except httpx.HTTPError as exc:
            raise transport_failure("video_url", exc, repeatable=True) from None

    async def _stream(self, method: str, url: str, params: dict[str, Any], max_bytes: int) -> Download:
        # No params: a link keeps its own query (httpx would replace it with an empty one).
        async with self.http.stream(method, url, params=params or None, follow_redirects=False) as resp:
            content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            disposition = resp.headers.get("content-disposition", "")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise MediaTooLarge(int(declared), max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLarge(size, max_bytes)
                chunks.append(chunk)
            if resp.status_code != 200:
                raise WeChatBusy(-1, f"media download answered HTTP {resp.status_code}")
        return Download(b"".join(chunks), content_type, filename_of(disposition))

    async def upload_media(self, kind: str, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        """`cgi-bin/media/upload?type=…` (temporary media, kept by WeChat for 3 days): answers its media_id.
        Uploading is not a send: repeating it is harmless, so it is retried like a read."""
        return await self.call("POST", "cgi-bin/media/upload", params={"type": kind},
                               files={"media": (filename, data, content_type)})

    async def send_image(self, openid: str, media_id: str, on_send: OnSend | None = None) -> dict[str, Any]:
        """A customer-service image message (OA, MP), inside the reply window."""
        return await self.send_custom_message(openid, "image", {"media_id": media_id}, on_send=on_send)

    async def kf_send_image(self, external_userid: str, open_kfid: str, media_id: str, msgid: str = "",
                            on_send: OnSend | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"touser": external_userid, "open_kfid": open_kfid, "msgtype": "image",
                                "image": {"media_id": media_id}}
        if msgid:
            body["msgid"] = msgid
        return await self.call("POST", "cgi-bin/kf/send_msg", json=body, repeatable=False, on_send=on_send)

    async def kf_sync_msg(self, open_kfid: str, cursor: str, token: str = "", limit: int = 1000) -> dict[str, Any]:
        body: dict[str, Any] = {"cursor": cursor, "limit": limit, "open_kfid": open_kfid, "voice_format": 0}
        if token:
            body["token"] = token
        return await self.call("POST", "cgi-bin/kf/sync_msg", json=body)

    async def kf_send_text(self, external_userid: str, open_kfid: str, text: str, msgid: str = "",
                           on_send: OnSend | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"touser": external_userid, "open_kfid": open_kfid, "msgtype": "text",
                                "text": {"content": text}}
        if msgid:
            body["msgid"] = msgid  # WeChat's own idempotency key for 微信客服
        return await self.call("POST", "cgi-bin/kf/send_msg", json=body, repeatable=False, on_send=on_send)
