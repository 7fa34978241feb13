"""Getting a WeChat account linked, beyond its credentials: the Token and EncodingAESKey Siyu suggests
(the same on every visit until they are saved), WeChat's last URL check of each linked account (noted
by the gateway, read by the channels page), and whether WeChat can reach the public base URL at all.

The order that works is: save in Siyu → paste into the WeChat console and submit → WeChat checks the URL
(a GET with `echostr`), which Siyu can answer only for a saved account.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from siyu.core import db
from siyu.core.clock import now
from siyu.core.crypto import box
from siyu.core.errors import ConfigurationError
from siyu.core.i18n import N_
from siyu.core.redis import REDIS_DOWN
from siyu.tenants.services import CHANNEL_KINDS, generate_aes_key, generate_token

log = logging.getLogger("siyu.tenants.linking")


# --- the suggested Token and EncodingAESKey ---------------------------------------------------------------

DRAFT_TTL = 30 * 86400  # a suggestion nobody saved for a month is forgotten


@dataclass(frozen=True)
class Draft:
    token: str
    aes_key: str


def _draft_key(tenant_id: int, kind: str) -> str:
    return f"siyu:channels:draft:{tenant_id}:{kind}"


def _draft_context(tenant_id: int, kind: str) -> str:
    return f"channel_draft:{tenant_id}:{kind}"


async def draft(redis: Any, tenant_id: int, kind: str) -> Draft:
    """The values suggested for the tenant's account of `kind` until it is saved: the same for every admin
    and every reload, kept sealed in Redis. Without Redis, fresh values (the page still works)."""
    fresh = Draft(generate_token(), generate_aes_key())
    key, context = _draft_key(tenant_id, kind), _draft_context(tenant_id, kind)
    sealed = box().seal(json.dumps({"token": fresh.token, "aes_key": fresh.aes_key}), context)
    try:
        if await redis.set(key, sealed, nx=True, ex=DRAFT_TTL):
            return fresh
        kept = await redis.get(key)
        if kept is not None:
            try:
                values = json.loads(box().open(kept.decode() if isinstance(kept, bytes) else kept, context))
                return Draft(str(values["token"]), str(values["aes_key"]))
            except (ConfigurationError, ValueError, KeyError, TypeError):
                pass  # sealed under a key since rotated away, or damaged: suggest new values
        await redis.set(key, sealed, ex=DRAFT_TTL)
    except REDIS_DOWN as exc:
        log.warning("the suggested Token and key could not be kept (Redis: %r); suggesting new ones", exc)
    return fresh


async def forget_draft(redis: Any, tenant_id: int, kind: str) -> None:
    """Saved: the next account of this kind (after an unlink) gets new suggestions."""
    try:
        await redis.delete(_draft_key(tenant_id, kind))
    except REDIS_DOWN as exc:
        log.warning("the suggested Token and key could not be forgotten (Redis: %r)", exc)


# --- WeChat's URL check -----------------------------------------------------------------------------------

OK, TOKEN, CLOCK, AES_KEY = "ok", "token", "clock", "aes_key"
URL_CHECK = (OK, TOKEN, CLOCK, AES_KEY)
# Checks that fail (anyone can send one) are noted at most once a second per account; a success (which
# needs the Token) always is.
NOTE_EVERY = timedelta(seconds=1)


@dataclass(frozen=True)
class UrlCheck:
    """WeChat's last URL check of a linked account; `at` is None while none arrived since the callback
    settings were saved."""

    kind: str
    at: datetime | None
    outcome: str  # one of URL_CHECK, or "" while none arrived
    saved_at: datetime

    @property
    def ok(self) -> bool:
        return self.outcome == OK


async def note_url_check(tenant_id: int, account_id: int, outcome: str) -> None:
    """Remember how WeChat's URL check of the account went (called by the gateway after it answered)."""
    if outcome not in URL_CHECK:
        raise ValueError(f"unknown URL check outcome {outcome!r}")
    at = now()
    try:
        await db.execute(
            "UPDATE channel_account SET url_check_at = $3, url_check_outcome = $4 WHERE id = $1 AND tenant = $2 "
            "AND (url_check_at IS NULL OR url_check_at <= $5 OR ($4 = 'ok' AND url_check_outcome <> 'ok'))",
            account_id, tenant_id, at, outcome, at - NOTE_EVERY)
    except Exception:  # a note for the page: WeChat already has its answer, whatever happens here
        log.exception("could not note WeChat's URL check of account %s", account_id)


async def url_check(tenant_id: int, kind: str) -> UrlCheck | None:
    """The last URL check of the tenant's account of `kind`; None when it is not linked."""
    if kind not in CHANNEL_KINDS:
        return None
    row = await db.fetchrow("SELECT url_check_at, url_check_outcome, updated_at FROM channel_account "
                            "WHERE tenant = $1 AND kind = $2", tenant_id, kind)
    if row is None:
        return None
    return UrlCheck(kind, row["url_check_at"], row["url_check_outcome"] or "", row["updated_at"])


# --- can WeChat reach the public base URL? ----------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    message: str  # msgid with {placeholders}
    params: dict[str, Any]


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Names that never resolve on the internet: RFC 6761/6762/8375 special-use names and the suffixes private
# networks use in practice.
_PRIVATE_SUFFIXES = (".local", ".localdomain", ".internal", ".intranet", ".lan", ".home", ".corp", ".home.arpa",
                     ".test", ".example", ".invalid")


def _address_problem(host: str) -> Problem | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return Problem(N_("{host} is this computer's own (loopback) address: WeChat's servers cannot reach it, so "
                          "WeChat's URL check and every message would fail. Only the simulator on this computer "
                          "reaches it."), {"host": host})
    if ip.is_link_local:
        return Problem(N_("{host} is a link-local address, valid only on its own network segment: WeChat's servers "
                          "cannot reach it."), {"host": host})
    if ip in _CGNAT:
        return Problem(N_("{host} is in the carrier-grade NAT range (100.64.0.0/10), behind a provider's shared "
                          "router: WeChat's servers cannot reach it."), {"host": host})
    if ip.is_private and not ip.is_unspecified:
        return Problem(N_("{host} is a private network address (such as 10.x, 172.16–31.x or 192.168.x): WeChat's "
                          "servers on the internet cannot reach it."), {"host": host})
    if not ip.is_global:
        return Problem(N_("{host} is not an address anyone on the internet can reach."), {"host": host})
    return None


def reach_problems(url: str) -> list[Problem]:
    """Why WeChat's servers could not call (or should not be told to call) `url`, the public base URL:
    empty when nothing is wrong that can be told without asking the network."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        parts, host, port = None, "", None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return [Problem(N_("{url} is not a web address (http:// or https:// and a host name)."), {"url": url})]
    problems: list[Problem] = []
    if host == "localhost" or host.endswith(".localhost"):
        problems.append(Problem(N_("{host} is this computer's own (loopback) address: WeChat's servers cannot reach "
                                   "it, so WeChat's URL check and every message would fail. Only the simulator on "
                                   "this computer reaches it."), {"host": host}))
    elif (address := _address_problem(host)) is not None:
        problems.append(address)
    elif ("." not in host and ":" not in host) or host.endswith(_PRIVATE_SUFFIXES):
        problems.append(Problem(N_("{host} is not a public domain name (names such as localhost, *.local, *.internal "
                                   "or *.test never resolve on the internet): WeChat's servers cannot find it."),
                                {"host": host}))
    if parts.scheme != "https":
        problems.append(Problem(N_("The address starts with http://, not https://: WeChat's messages would cross the "
                                   "internet unencrypted, and WeChat Pay sends its notifications to https addresses "
                                   "only."), {}))
    if port is not None and port not in (80, 443):
        problems.append(Problem(N_("WeChat calls servers on port 443 (https) or 80 (http) only, not on port {port}."),
                                {"port": port}))
    return problems
