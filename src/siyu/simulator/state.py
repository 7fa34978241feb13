"""The simulator's memory, all in one process: registered apps, simulated people, access tokens,
records of what WeChat accepted and refused, call statistics, and a clock tests can move forward."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from siyu.simulator import rules

KINDS = ("oa", "mp", "wecom")
MODES = ("plain", "compatible", "safe")
FORMATS = ("xml", "json")


class Clock:
    """WeChat's "now": real time plus an offset that tests move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@dataclass
class AccessToken:
    value: str
    app_id: str
    slot: str  # "token" (cgi-bin/token), "stable" (cgi-bin/stable_token), "wecom" (gettoken)
    issued_at: float
    expires_at: float
    superseded_until: float | None = None  # a newer token exists; this one works until then
    invalidated: bool = False

    def errcode(self, now: float) -> int:
        if self.invalidated or (self.superseded_until is not None and now > self.superseded_until):
            return 40001
        if now >= self.expires_at:
            return 42001
        return 0


@dataclass
class Person:
    """A simulated WeChat user, the same human across every app."""

    key: str
    nickname: str
    avatar: str
    language: str = "zh_CN"
    gender: int = 0


@dataclass
class Member:
    """A person as an OA follower or a Mini Program user."""

    person: str
    openid: str
    following: bool = False
    subscribe_time: int = 0
    follow_seq: int = 0
    subscribe_scene: str = ""
    qr_scene: int = 0
    qr_scene_str: str = ""
    remark: str = ""
    window: rules.Window = field(default_factory=rules.Window)
    consents: Counter[str] = field(default_factory=Counter)
    mass_by_month: dict[str, int] = field(default_factory=dict)
    session_key: str = ""


@dataclass
class FollowInfo:
    userid: str
    createtime: int
    state: str = ""
    remark: str = ""
    description: str = ""
    add_way: int = 1
    tags: list[dict[str, Any]] = field(default_factory=list)  # the rep's tags: group_name, tag_name, type


@dataclass
class Contact:
    """A person as a WeCom external contact (of sales reps) and 微信客服 customer."""

    person: str
    external_userid: str
    follow: dict[str, FollowInfo] = field(default_factory=dict)
    kf_windows: dict[str, rules.Window] = field(default_factory=dict)
    mass_received: dict[str, int] = field(default_factory=dict)  # natural month → corp mass messages received


@dataclass
class QrCode:
    ticket: str
    scene: str
    action_name: str
    created_at: float
    expires_at: float | None


@dataclass
class OneTimeCode:
    person: str
    issued_at: float
    used: bool = False
    external_userid: str = ""
    userid: str = ""


@dataclass
class SimApp:
    kind: str  # "oa" | "mp" | "wecom"
    app_id: str  # AppID or CorpID
    secret: str
    ip_whitelisted: bool = True
    token: str = ""  # the callback Token
    aes_key: str = ""  # EncodingAESKey
    message_mode: str = "plain"
    push_format: str = "xml"
    original_id: str = ""
    callback_url: str = ""
    open_platform: str = ""
    agent_id: str = ""
    open_kfids: list[str] = field(default_factory=list)
    follow_users: list[str] = field(default_factory=list)
    # the brand's Mini Program backend, which the simulator plays: each wx.login's code goes there
    backend_login_url: str = ""
    backend_api_key: str = ""
    backend_purchases_url: str = ""  # where the backend reports each paid order (pay.py)
    # WeCom: seconds after which the simulated rep confirms a 1:1 task in the WeCom client (None: never by
    # itself; the control API confirms one)
    task_confirm_after: float | None = None
    # injected behaviour
    faults: list[int] = field(default_factory=list)
    latency_ms: int = 0  # before every call
    # Per endpoint ("cgi-bin/message/custom/send"): the endpoint does its work, then its answer is this
    # late (a client that stops waiting does not know whether it was carried out).
    endpoint_latency_ms: dict[str, int] = field(default_factory=dict)
    token_timeouts: int = 0  # the next N token-endpoint calls hang `token_timeout_ms`, issue nothing, answer -1
    token_timeout_ms: int = 30_000
    # WeChat's state for this app
    token_slots: dict[str, str] = field(default_factory=dict)
    menu: dict[str, Any] | None = None
    menu_id: int = 0
    qrcodes: dict[str, QrCode] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)  # person → OA/MP member
    by_openid: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)  # person → WeCom contact
    by_external: dict[str, str] = field(default_factory=dict)
    js_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    welcome_codes: dict[str, OneTimeCode] = field(default_factory=dict)
    kf_log: list[dict[str, Any]] = field(default_factory=list)  # what kf/sync_msg serves, in order
    kf_seq: int = 0
    kf_tokens: dict[str, float] = field(default_factory=dict)  # callback Token → issued_at
    kf_untokened_calls: dict[int, int] = field(default_factory=dict)  # minute → calls without Token
    mass_jobs: list[dict[str, Any]] = field(default_factory=list)
    client_msg_ids: dict[str, int] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)  # WeCom add_msg_template tasks
    # media ids WeChat knows for this app (customers' media it issued, temporary uploads): media.py
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_create_time: dict[str, int] = field(default_factory=dict)  # person → CreateTime of the last push
    follow_counter: int = 0

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "app_id": self.app_id, "ip_whitelisted": self.ip_whitelisted,
                "token": self.token, "aes_key": self.aes_key, "message_mode": self.message_mode,
                "push_format": self.push_format, "original_id": self.original_id,
                "callback_url": self.callback_url, "open_platform": self.open_platform,
                "agent_id": self.agent_id, "open_kfids": list(self.open_kfids),
                "follow_users": list(self.follow_users), "faults": list(self.faults),
                "latency_ms": self.latency_ms, "endpoint_latency_ms": dict(self.endpoint_latency_ms),
                "token_timeouts": self.token_timeouts, "token_timeout_ms": self.token_timeout_ms,
                "backend": {"login_url": self.backend_login_url, "api_key_set": bool(self.backend_api_key),
                            **({"purchases_url": self.backend_purchases_url} if self.backend_purchases_url else {})}
                if self.backend_login_url or self.backend_purchases_url else None,
                "task_confirm_after": self.task_confirm_after}

    def pop_fault(self) -> int | None:
        return self.faults.pop(0) if self.faults else None

    def member_by_openid(self, oid: str) -> Member | None:
        person = self.by_openid.get(oid)
        return self.members.get(person) if person is not None else None

    def contact_by_external(self, ext: str) -> Contact | None:
        person = self.by_external.get(ext)
        return self.contacts.get(person) if person is not None else None

    def unionid(self, person: str) -> str | None:
        return rules.unionid(self.open_platform, person) if self.open_platform else None


# What WeChat remembers about an app (as opposed to its settings and injected behaviour): kept when the app
# is registered again with `keep_state`, and saved to disk with the rest (persist.py).
APP_MEMORY = ("token_slots", "menu", "menu_id", "qrcodes", "members", "by_openid", "contacts", "by_external",
              "js_codes", "welcome_codes", "kf_log", "kf_seq", "kf_tokens", "kf_untokened_calls", "mass_jobs",
              "client_msg_ids", "tasks", "last_create_time", "follow_counter", "media")
APP_SETTINGS = ("kind", "app_id", "secret", "ip_whitelisted", "token", "aes_key", "message_mode", "push_format",
                "original_id", "callback_url", "open_platform", "agent_id", "open_kfids", "follow_users",
                "backend_login_url", "backend_api_key", "backend_purchases_url", "task_confirm_after")


class Stats:
    def __init__(self) -> None:
        self.token_fetches: Counter[str] = Counter()  # successful token endpoint calls, per app
        self.tokens_issued: Counter[str] = Counter()  # new token strings, per app
        self.token_calls = 0  # every call to a token endpoint (kept for /_sim/health)
        self.calls: Counter[str] = Counter()  # per endpoint ("wechat-api/cgi-bin/…")
        self.calls_by_app: dict[str, Counter[str]] = {}

    def as_dict(self) -> dict[str, Any]:
        return {"token_fetches": dict(self.token_fetches), "tokens_issued": dict(self.tokens_issued),
                "token_calls": self.token_calls, "calls": dict(self.calls),
                "calls_by_app": {k: dict(v) for k, v in self.calls_by_app.items()}}


# Other parts of WeChat's memory (WeChat Pay's, pay.py) forget theirs when the simulator is reset.
RESET_HOOKS: list[Callable[[State], None]] = []


class State:
    def __init__(self) -> None:
        self.clock = Clock()
        self.reset()

    def reset(self) -> None:
        for b in getattr(self, "buying", {}).values():
            if b.task is not None:
                b.task.cancel()
        self.buying: dict[str, Any] = {}  # Mini Program app id → buying.Buying (customers who buy again)
        self.clock.offset = 0.0
        self.apps: dict[str, SimApp] = {}
        self.people: dict[str, Person] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.messages: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.stats = Stats()
        self._msgid = 24_371_234_567_000_000 + secrets.randbelow(1_000_000)
        self._record_id = 0
        for hook in RESET_HOOKS:
            hook(self)

    def now(self) -> float:
        return self.clock.now()

    def next_msgid(self) -> int:
        self._msgid += 1
        return self._msgid

    # --- people ---------------------------------------------------------------------------------

    def person(self, key: str, **attrs: Any) -> Person:
        p = self.people.get(key)
        if p is None:
            p = self.people[key] = Person(key=key, nickname=rules.nickname(key), avatar=rules.avatar(key))
        for name in ("nickname", "avatar", "language", "gender"):
            if attrs.get(name) not in (None, ""):
                setattr(p, name, int(attrs[name]) if name == "gender" else str(attrs[name]))
        return p

    def member(self, app: SimApp, key: str) -> Member:
        m = app.members.get(key)
        if m is None:
            self.person(key)
            m = app.members[key] = Member(person=key, openid=rules.openid(app.app_id, key))
            app.by_openid[m.openid] = key
        return m

    def contact(self, app: SimApp, key: str) -> Contact:
        c = app.contacts.get(key)
        if c is None:
            self.person(key)
            c = app.contacts[key] = Contact(person=key, external_userid=rules.external_userid(app.app_id, key))
            app.by_external[c.external_userid] = key
        return c

    def follow(self, app: SimApp, m: Member, scene: str = "", qr: str = "") -> None:
        app.follow_counter += 1
        m.following, m.subscribe_time, m.follow_seq = True, int(self.now()), app.follow_counter
        m.subscribe_scene = scene or ("ADD_SCENE_QR_CODE" if qr else "ADD_SCENE_SEARCH")
        m.qr_scene, m.qr_scene_str = (int(qr), "") if qr.isdigit() else (0, qr)

    # --- access tokens --------------------------------------------------------------------------

    def issue_token(self, app: SimApp, slot: str, force_new: bool) -> dict[str, Any]:
        """cgi-bin/token (force_new), stable_token (same token until its last 5 min, or forced),
        gettoken (same token while valid). A superseded token keeps working for 5 minutes."""
        now = self.now()
        current = self.tokens.get(app.token_slots.get(slot, ""))
        alive = current is not None and current.errcode(now) == 0
        reuse = alive and not force_new
        if reuse and slot == "stable" and current is not None:
            reuse = current.expires_at - now > rules.STABLE_EARLY_REFRESH
        self.stats.token_fetches[app.app_id] += 1
        if reuse and current is not None:
            return {"access_token": current.value, "expires_in": int(current.expires_at - now)}
        if alive and current is not None and force_new:
            current.superseded_until = now + rules.TOKEN_GRACE
        token = AccessToken(value=secrets.token_urlsafe(96)[:128], app_id=app.app_id, slot=slot,
                            issued_at=now, expires_at=now + rules.TOKEN_TTL)
        self.tokens[token.value] = token
        app.token_slots[slot] = token.value
        self.stats.tokens_issued[app.app_id] += 1
        return {"access_token": token.value, "expires_in": rules.TOKEN_TTL}

    def expire_tokens(self, app: SimApp, action: str) -> int:
        """Control: "expire" (next use: 42001) or "invalidate" (next use: 40001) every live token."""
        now, n = self.now(), 0
        for t in self.tokens.values():
            if t.app_id == app.app_id and t.errcode(now) == 0:
                if action == "expire":
                    t.expires_at = now
                else:
                    t.invalidated = True
                n += 1
        app.token_slots.clear()
        return n

    # --- records --------------------------------------------------------------------------------

    def _record(self, into: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        self._record_id += 1
        row = {"id": self._record_id, **fields}
        into.append(row)
        return row

    def accept(self, app: SimApp, endpoint: str, to: str, payload: Any, **extra: Any) -> dict[str, Any]:
        return self._record(self.messages, app_id=app.app_id, endpoint=endpoint, to=to,
                            person=self.person_of(app, to), payload=payload, accepted_at=self.now(), **extra)

    def refuse(self, app_id: str, endpoint: str, to: str, payload: Any, errcode: int | None, errmsg: str,
               **extra: Any) -> dict[str, Any]:
        app = self.apps.get(app_id)
        return self._record(self.refusals, app_id=app_id, endpoint=endpoint, to=to,
                            person=self.person_of(app, to) if app else None, payload=payload,
                            errcode=errcode, errmsg=errmsg, refused_at=self.now(), **extra)

    @staticmethod
    def person_of(app: SimApp, to: str) -> str | None:
        return app.by_openid.get(to) or app.by_external.get(to)

    # --- latency --------------------------------------------------------------------------------

    @staticmethod
    async def delay(app: SimApp) -> None:
        if app.latency_ms > 0:
            await asyncio.sleep(app.latency_ms / 1000)
