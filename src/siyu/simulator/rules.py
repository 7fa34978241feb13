"""WeChat's rules as pure functions and small value objects: identifiers, reply windows and quotas,
the monthly mass-send cap, and the numbers they use. No I/O, no clock of their own: callers pass `now`.

The numbers come from WeChat's documentation (the WeChat platform facts, §3 "Platform rules"):
OA customer-service window (R4), Mini Program window (R5), WeCom 微信客服 window (R6), mass sends (R7),
tokens (R13), welcome codes (R16).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HOUR = 3600
DAY = 24 * HOUR

# access tokens (R13)
TOKEN_TTL = 7200
TOKEN_GRACE = 300  # a superseded token keeps working this long
STABLE_EARLY_REFRESH = 300  # stable_token hands out a new token in the last 5 minutes

# OA / MP customer-service windows (R4, R5)
MESSAGE_WINDOW = (5, 48 * HOUR)  # after a user message: 5 messages within 48 h
EVENT_WINDOW = (3, 60)  # after follow / scan / menu click (OA): 3 messages within 1 minute
TEMPSESSION_WINDOW = (2, 60)  # MP user_enter_tempsession: 2 messages within 1 minute
KF_WINDOW = (5, 48 * HOUR)  # WeCom 微信客服: 5 messages within 48 h of the customer's last message

# errcodes the windows answer
OA_OUT_OF_WINDOW = 45015  # "response out of time limit or subscription is canceled"
OA_QUOTA_USED = 45047  # "out of response count limit"
# WeCom 微信客服 has no public errcode table for this; 95018 is our choice for "no open 48 h session"
# and 95001 ("给该客户发送的消息数量已达上限，请等待客户回复后方可再发送") for the 5 messages used.
KF_OUT_OF_WINDOW = 95018
KF_QUOTA_USED = 95001

MASS_PER_MONTH = 4  # a service-account follower receives at most 4 mass messages per natural month (R7)
WELCOME_CODE_TTL = 20  # send_welcome_msg within 20 s of the add event, once (R16)
JS_CODE_TTL = 300  # wx.login codes: 5 minutes, once
KF_TOKEN_TTL = 600  # the Token of a kf_msg_or_event callback: 10 minutes (R6)
KF_SYNC_HORIZON = 3 * DAY  # kf/sync_msg returns the last 3 days
KF_SYNC_MAX_LIMIT = 1000
KF_SYNC_WITHOUT_TOKEN_PER_MINUTE = 10  # "without the Token, strict rate limits": our number
USER_GET_PAGE = 10000  # user/get returns up to 10 000 openids per call
BATCHGET_MAX = 100
CHINA_UTC_OFFSET = 8 * HOUR


# --- identifiers ------------------------------------------------------------------------------------

def _b64(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def openid(app_id: str, person: str) -> str:
    """28 characters starting with "o", like WeChat's openids; one per (app, person)."""
    return "o" + _b64("openid", app_id, person)[:27]


def unionid(open_platform: str, person: str) -> str:
    """28 characters starting with "o"; one per (Open Platform account, person)."""
    return "o" + _b64("unionid", open_platform, person)[:27]


def external_userid(corp_id: str, person: str) -> str:
    """32 characters starting with "wm", like WeCom's external_userid; one per (corp, person)."""
    return "wm" + _b64("external_userid", corp_id, person)[:30]


def original_id(app_id: str) -> str:
    return "gh_" + hashlib.sha256(app_id.encode()).hexdigest()[:12]


def open_kfid(corp_id: str, n: int = 0) -> str:
    return "wk" + hashlib.sha256(f"kf\x1f{corp_id}\x1f{n}".encode()).hexdigest()[:30]


_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN = ["芳", "伟", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "霞", "平", "刚"]


def nickname(person: str) -> str:
    h = hashlib.sha256(person.encode()).digest()
    return _SURNAMES[h[0] % len(_SURNAMES)] + _GIVEN[h[1] % len(_GIVEN)]


def avatar(person: str) -> str:
    return f"https://thirdwx.qlogo.cn/mmopen/sim/{_b64('avatar', person)[:32]}/132"


def month_key(ts: float) -> str:
    """The natural month in China (UTC+8) that `ts` falls in: the unit of the mass-send cap."""
    return time.strftime("%Y-%m", time.gmtime(ts + CHINA_UTC_OFFSET))


def is_loopback_url(url: str) -> bool:
    """Pushes only ever go to this machine: http(s) URLs whose host is a loopback IP literal or localhost."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- reply windows ----------------------------------------------------------------------------------

@dataclass
class Grant:
    """One opening of the reply window: `quota` messages until `expires_at` (inclusive)."""

    opened_at: float
    expires_at: float
    quota: int
    used: int = 0

    def active(self, now: float) -> bool:
        return now <= self.expires_at

    def as_dict(self) -> dict[str, float | int]:
        return {"opened_at": self.opened_at, "expires_at": self.expires_at, "quota": self.quota,
                "used": self.used}


@dataclass
class Window:
    """The customer-service window of one user towards one account.

    Each kind of user action opens its own grant ("message": 5 / 48 h, "event": 3 / 1 min, …); a new
    action of the same kind replaces that grant with a fresh quota. A send is allowed while any open
    grant has quota left, and it counts against every open grant: quotas never add up (follow then a
    message allows 5 sends, not 8), which is never more lenient than WeChat. Nothing open → out of
    window; open but all used → quota used.
    """

    grants: dict[str, Grant] = field(default_factory=dict)

    def open(self, source: str, now: float, rule: tuple[int, int]) -> None:
        quota, seconds = rule
        self.grants[source] = Grant(opened_at=now, expires_at=now + seconds, quota=quota)

    def close(self) -> None:
        self.grants.clear()

    def check(self, now: float, out_of_window: int, quota_used: int) -> int:
        """The errcode a send would get now (0: allowed), without using anything."""
        active = [g for g in self.grants.values() if g.active(now)]
        if not active:
            return out_of_window
        if all(g.used >= g.quota for g in active):
            return quota_used
        return 0

    def consume(self, now: float, out_of_window: int, quota_used: int) -> int:
        code = self.check(now, out_of_window, quota_used)
        if code == 0:
            for g in self.grants.values():
                if g.active(now):
                    g.used += 1
        return code

    def as_dict(self) -> dict[str, dict[str, float | int]]:
        return {k: g.as_dict() for k, g in self.grants.items()}


def mass_allowed(received_by_month: dict[str, int], now: float, cap: int = MASS_PER_MONTH) -> bool:
    """Counts the mass message towards this month when the user may still receive one."""
    key = month_key(now)
    if received_by_month.get(key, 0) >= cap:
        return False
    received_by_month[key] = received_by_month.get(key, 0) + 1
    return True


def mass_received_cap(ts: float) -> int:
    """WeCom's default: a customer receives at most as many corp mass messages a month as the month has days
    (R16). The month is China's."""
    import calendar

    local = time.gmtime(ts + CHINA_UTC_OFFSET)
    return calendar.monthrange(local.tm_year, local.tm_mon)[1]


def one_time_code_error(issued_at: float | None, used: bool, now: float, ttl: float,
                        unknown: int, spent: int, expired: int) -> int:
    """Errcode for a one-time code (wx.login code, welcome_code): 0 when it may be used now."""
    if issued_at is None:
        return unknown
    if used:
        return spent
    if now - issued_at > ttl:
        return expired
    return 0


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"siyu-sim:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The position a kf/sync_msg cursor stands for; None when it is not one of ours."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = text.partition(":")
        return int(seq) if prefix == "siyu-sim" and int(seq) >= 0 else None
    except (ValueError, UnicodeDecodeError):
        return None
