"""Sending to a person, at most once per idempotency key, inside WeChat's windows.

Every send (`deliver_text`, `deliver_template`, `deliver_subscribe`, `deliver_owner_task`) is a row of the
`wechat_outbound` ledger, unique on the caller's key, claimed before WeChat is called. Its states:

    queued   a run holds it and has not asked WeChat yet
    sending  the request is leaving, or has left, for WeChat (recorded right before it leaves)
    retry    WeChat certainly did not take it (never reached; -1; 45009/45011; the token step failed):
             a later run of the caller may claim it again
    sent     WeChat took it                                                                    (final)
    failed   WeChat refused it, Siyu knew it would, or Siyu gave up; `errmsg` says why in words (final)
    unknown  the request left and no answer came back: WeChat may have delivered it. Never sent
             again automatically; a person may choose to send it again under a new key          (final)

Each claim bumps `attempts`, and a run's later writes name its attempt: a run that lost its claim (the
sweeper moved the row on, another run took it) can no longer change the row or send. `settle_stale`
settles the rows whose run died: sending → unknown, queued → retry, retry left alone → failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from redis.asyncio import Redis

from siyu.core import db, groupcommit
from siyu.core.errors import NotFound
from siyu.core.settings import get_settings
from siyu.tenants.services import api_credentials
from siyu.wechat import consents, windows
from siyu.wechat.client import (
    ApiAccount,
    JsonTransport,
    OnSend,
    WeChatClient,
    WeChatError,
    WeChatNotAllowed,
    WeChatOutcomeUnknown,
    WeChatRateLimited,
    WeChatTokenUnavailable,
    WeChatUnreachable,
)
from siyu.wechat.ratelimit import RateLimiter

log = logging.getLogger("siyu.wechat.outbound")

FINAL = ("sent", "failed", "unknown")
# A run holds its row for one job at most (jobs time out after 60 s); well past that, it has died.
SENDING_DEADLINE_SECONDS = 300  # asked WeChat and never recorded the answer → unknown
QUEUED_DEADLINE_SECONDS = 300  # claimed and never asked WeChat → free to claim again
RETRY_DEADLINE_SECONDS = 1800  # waiting for a retry that never came → failed
OWNER_TASK_FIRST_CHECK = 30  # seconds: a WeCom task WeChat took is first asked about this soon (owner_tasks)


JSON_CONNECTIONS = 128  # kept-alive connections for the JSON API calls (a sender runs 32 calls at once)
HTTP_CONNECTIONS = 16  # httpx: tokens, media and uploads


class WeChatRuntime:
    """What every WeChat call of a process shares: Redis, the rate limiter, and two HTTP clients. The JSON
    API calls (every send) go over aiohttp: a sender is bound by its CPU, and an httpx call costs six times as
    much (measured against the simulator: 1.0–3.4 ms a call depending on how many wait in the pool, aiohttp
    0.16 ms). Tokens, media downloads and uploads go over httpx. Every connection stays open for the next
    call."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        s = get_settings()
        timeout_s, connect_s = s.wechat_timeout_ms / 1000, s.wechat_connect_timeout_ms / 1000
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=connect_s),
                                      limits=httpx.Limits(max_connections=HTTP_CONNECTIONS,
                                                          max_keepalive_connections=HTTP_CONNECTIONS))
        self.json_http = JsonTransport(JSON_CONNECTIONS, timeout_s, connect_s)
        self.limiter = RateLimiter(redis)

    async def client(self, tenant_id: int, channel: str) -> WeChatClient:
        creds = await api_credentials(tenant_id, channel)  # NotFound when the account is not linked
        return WeChatClient(self.http, self.json_http, self.redis, self.limiter,
                            ApiAccount(tenant_id, channel, creds.app_id, creds.secret))

    async def close(self) -> None:
        await self.http.aclose()
        await self.json_http.close()


def runtime_of(ctx: dict[str, Any]) -> WeChatRuntime:
    """A job's runtime: the worker's (`ctx["wechat"]`, made at startup); a job called without the
    composition root's startup (tests, scripts) makes one and keeps it in its context."""
    rt = ctx.get("wechat")
    if rt is None:
        rt = ctx["wechat"] = WeChatRuntime(ctx["redis"])
    return rt


@dataclass(frozen=True)
class Delivery:
    outbound_id: int
    state: str  # sent | failed | unknown | retry | pending (another run holds the key right now)
    errcode: int | None = None
    reason: str = ""  # a short key for the words: window_closed, outcome_unknown, unreachable, …
    duplicate: bool = False  # this key had been handled before: nothing was sent now
    retry_after: int = 0  # for `retry`: seconds WeChat asked to wait (45011: a minute)


@dataclass(frozen=True)
class _Claim:
    outbound_id: int
    attempt: int


class _ClaimLost(Exception):
    """This run's claim was taken over: it must not ask WeChat."""


async def deliver_text(runtime: WeChatRuntime, tenant_id: int, channel: str, external_id: str, text: str,
                       idempotency_key: str, *, open_kfid: str = "", bulk: bool = False) -> Delivery:
    """Send a text to a person on `channel` (customer-service message on OA/MP, 微信客服 on WeCom)."""
    kind = "kf" if channel == "wecom" else "custom"
    payload = {"text": text, **({"open_kfid": open_kfid} if open_kfid else {})}
    claimed = await _claim(tenant_id, channel, external_id, idempotency_key, kind, payload)
    if isinstance(claimed, Delivery):
        return claimed

    slot = await windows.reserve(tenant_id, channel, external_id, outbound_id=claimed.outbound_id)
    if isinstance(slot, int):  # Siyu knows WeChat would refuse: do not call it
        reason = WeChatNotAllowed.REASONS.get(slot, "not_allowed")
        return await _finish(claimed, "failed", errcode=slot, reason=reason,
                             errmsg=f"{reason} (checked by Siyu before sending)")

    def send(client: WeChatClient, on_send: OnSend) -> Awaitable[dict[str, Any]]:
        if channel == "wecom":
            return client.kf_send_text(external_id, open_kfid, text, msgid=f"siyu{claimed.outbound_id}",
                                       on_send=on_send)
        return client.send_text(external_id, text, bulk=bulk, on_send=on_send)

    delivery = await _call(claimed, send, tenant_id, channel, runtime)
    if delivery.state not in ("sent", "unknown"):  # WeChat did not take it: the reserved place is free again
        await windows.release(tenant_id, channel, external_id, slot)
    return delivery


class StoredMediaGone(WeChatError):
    """The picture to send is no longer in Siyu's media store: nothing was sent."""

    retryable = False
    reason = "stored_gone"

    def __init__(self) -> None:
        super().__init__(-1, "the picture is no longer in the media store")


async def deliver_image(runtime: WeChatRuntime, tenant_id: int, channel: str, external_id: str, media_row_id: int,
                        idempotency_key: str, *, open_kfid: str = "") -> Delivery:
    """Send a rep's picture (a `wechat_media` row, see `siyu.wechat.media`) as a customer-service image message
    (OA/MP) or a 微信客服 image, inside the reply window like a text: uploaded first as temporary media (an
    upload is not a send: WeChat busy there leaves the send for a retry), then sent once per key."""
    from siyu.wechat import media  # media's fetch job uses this module's runtime: imported when first needed

    kind = "kf" if channel == "wecom" else "custom"
    payload = {"image": media_row_id, **({"open_kfid": open_kfid} if open_kfid else {})}
    claimed = await _claim(tenant_id, channel, external_id, idempotency_key, kind, payload)
    if isinstance(claimed, Delivery):
        return claimed
    slot = await windows.reserve(tenant_id, channel, external_id, outbound_id=claimed.outbound_id)
    if isinstance(slot, int):
        reason = WeChatNotAllowed.REASONS.get(slot, "not_allowed")
        return await _finish(claimed, "failed", errcode=slot, reason=reason,
                             errmsg=f"{reason} (checked by Siyu before sending)")

    async def send(client: WeChatClient, on_send: OnSend) -> dict[str, Any]:
        try:
            media_id = await media.ensure_uploaded(client, tenant_id, media_row_id)
        except NotFound:
            raise StoredMediaGone() from None
        if channel == "wecom":
            return await client.kf_send_image(external_id, open_kfid, media_id, msgid=f"siyu{claimed.outbound_id}",
                                              on_send=on_send)
        return await client.send_image(external_id, media_id, on_send=on_send)

    delivery = await _call(claimed, send, tenant_id, channel, runtime)
    if delivery.state not in ("sent", "unknown"):
        await windows.release(tenant_id, channel, external_id, slot)
    return delivery


async def deliver_template(runtime: WeChatRuntime, tenant_id: int, openid: str, template_id: str,
                           data: dict[str, str], idempotency_key: str) -> Delivery:
    """Send an Official Account template message (a service notice, outside the reply windows). Once per
    key, as every send."""
    claimed = await _claim(tenant_id, "oa", openid, idempotency_key, "template",
                           {"template_id": template_id, "data": data})
    if isinstance(claimed, Delivery):
        return claimed
    return await _call(claimed, lambda client, on_send: client.send_template(openid, template_id, data,
                                                                             on_send=on_send),
                       tenant_id, "oa", runtime)


async def deliver_subscribe(runtime: WeChatRuntime, tenant_id: int, channel: str, openid: str, template_id: str,
                            data: dict[str, str], idempotency_key: str) -> Delivery:
    """Send a one-time subscription message, taking one of the person's consents to the template first
    (none left: refused without calling WeChat, as WeChat would answer 43101). Once per key."""
    claimed = await _claim(tenant_id, channel, openid, idempotency_key, "subscribe",
                           {"template_id": template_id, "data": data})
    if isinstance(claimed, Delivery):
        return claimed
    if not await consents.reserve(tenant_id, channel, openid, template_id):
        return await _finish(claimed, "failed", errcode=43101, reason="no_consent",
                             errmsg="no_consent (checked by Siyu before sending)")
    delivery = await _call(claimed, lambda client, on_send: client.send_subscribe(openid, template_id, data,
                                                                                  on_send=on_send),
                           tenant_id, channel, runtime)
    if delivery.errcode == 43101:  # WeChat knows better than the count: none left
        await consents.clear(tenant_id, channel, openid, template_id)
    elif delivery.state not in ("sent", "unknown"):  # WeChat did not use the consent
        await consents.release(tenant_id, channel, openid, template_id)
    return delivery


async def deliver_owner_task(runtime: WeChatRuntime, tenant_id: int, sender_userid: str, external_userid: str,
                             text: str, idempotency_key: str) -> Delivery:
    """Have a WeCom member send a text 1:1 to a customer they added (`add_msg_template`): WeChat creates a
    task the member confirms in the WeCom client. No reply window applies; WeChat caps how many such
    messages a customer receives a month and answers that as a refusal. Once per key, as every send."""
    claimed = await _claim(tenant_id, "wecom", external_userid, idempotency_key, "wecom_task",
                           {"text": text, "sender": sender_userid})
    if isinstance(claimed, Delivery):
        return claimed

    def refused_by_answer(answer: dict[str, Any]) -> str:
        return "not_their_contact" if external_userid in (answer.get("fail_list") or []) else ""

    return await _call(claimed, lambda client, on_send: client.add_msg_template(
        sender_userid, [external_userid], text, on_send=on_send), tenant_id, "wecom", runtime, refused_by_answer)


async def deliver_mass(runtime: WeChatRuntime, tenant_id: int, openids: list[str], text: str, idempotency_key: str,
                       clientmsgid: str) -> Delivery:
    """An OA mass send of one text to these followers, once per key. WeChat refuses a `clientmsgid` it has seen
    within 24 h (45065): that answer means the first send went out, and is recorded as sent with its msg_id."""
    claimed = await _claim(tenant_id, "oa", f"mass:{clientmsgid}"[:128], idempotency_key, "mass",
                           {"text": text, "clientmsgid": clientmsgid, "recipients": len(openids)})
    if isinstance(claimed, Delivery):
        return claimed

    async def send(client: WeChatClient, on_send: OnSend) -> dict[str, Any]:
        try:
            answer = await client.mass_send_text(openids, text, clientmsgid, on_send=on_send)
        except WeChatError as exc:
            if exc.errcode != 45065:
                raise
            answer = {"msg_id": exc.errmsg.rsplit(" ", 1)[-1] if "msg_id" in exc.errmsg else ""}
        return {**answer, "msgid": str(answer.get("msg_id") or "")}

    return await _call(claimed, send, tenant_id, "oa", runtime)


async def mass_msg_id(tenant_id: int, idempotency_key: str) -> str:
    """The msg_id WeChat gave a mass send recorded under this key ("" if none)."""
    row = await db.fetchrow("SELECT wechat_msgid FROM wechat_outbound WHERE tenant = $1 AND idempotency_key = $2",
                            tenant_id, idempotency_key)
    return str(row["wechat_msgid"]) if row else ""


# --- the ledger's one writer ---------------------------------------------------------------------------

_ROW = "id, state, errcode, reason"


def _delivery(row: Any, duplicate: bool) -> Delivery:
    state = row["state"] if row["state"] in FINAL else ("retry" if row["state"] == "retry" else "pending")
    return Delivery(int(row["id"]), state, row["errcode"], row["reason"], duplicate=duplicate)


@dataclass(frozen=True)
class _Want:
    tenant_id: int
    channel: str
    external_id: str
    key: str
    kind: str
    payload: str  # JSON


async def _claim(tenant_id: int, channel: str, external_id: str, idempotency_key: str, kind: str,
                 payload: dict[str, Any]) -> _Claim | Delivery:
    """Claim a send: this run's attempt, or the Delivery of the key as it stands (final, or held by
    another run). A send left for `retry` is claimed again. The claims of concurrent sends share one
    statement and one commit (`_claims`)."""
    got = await _claims.write(_Want(tenant_id, channel, external_id, idempotency_key, kind,
                                    json.dumps(payload, ensure_ascii=False)))
    if got is None:  # settled and erased between the two statements: treat as handled
        raise NotFound()
    return got


async def _claim_batch(wants: list[_Want]) -> list[_Claim | Delivery | None]:
    """One INSERT for the keys handed in together (in key order, each once: a key handed in twice by two runs
    is claimed by the first, the other learns where it stands), then one read for the keys not claimed."""
    first: dict[tuple[int, str], int] = {}
    for i, w in enumerate(wants):
        first.setdefault((w.tenant_id, w.key), i)
    order = sorted(first)
    ins = [wants[first[k]] for k in order]
    rows = await db.fetch(
        "INSERT INTO wechat_outbound (tenant, channel, external_id, idempotency_key, kind, payload, state, "
        "window_slot, reason, errmsg, wechat_msgid, attempts, created_at, claimed_at) "
        "SELECT u.tenant, u.channel, u.ext, u.okey, u.kind, u.payload::jsonb, 'queued', '', '', '', '', 1, now(), now() "
        "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) "
        "AS u(tenant, channel, ext, okey, kind, payload) "
        "ON CONFLICT (tenant, idempotency_key) DO UPDATE SET state = 'queued', claimed_at = now(), "
        "window_slot = '', attempts = wechat_outbound.attempts + 1 WHERE wechat_outbound.state = 'retry' "
        "RETURNING id, attempts, tenant, idempotency_key",
        [w.tenant_id for w in ins], [w.channel for w in ins], [w.external_id for w in ins], [w.key for w in ins],
        [w.kind for w in ins], [w.payload for w in ins])
    claimed = {(int(r["tenant"]), str(r["idempotency_key"])): _Claim(int(r["id"]), int(r["attempts"])) for r in rows}
    results: list[_Claim | Delivery | None] = [None] * len(wants)
    others: list[int] = []
    for i, w in enumerate(wants):
        k = (w.tenant_id, w.key)
        if first[k] == i and k in claimed:
            results[i] = claimed[k]
        else:
            others.append(i)
    if others:
        stands = await db.fetch(
            f"SELECT {_ROW}, tenant, idempotency_key FROM wechat_outbound WHERE (tenant, idempotency_key) IN "
            "(SELECT * FROM unnest($1::bigint[], $2::text[]))",
            [wants[i].tenant_id for i in others], [wants[i].key for i in others])
        by_key = {(int(r["tenant"]), str(r["idempotency_key"])): r for r in stands}
        for i in others:
            row = by_key.get((wants[i].tenant_id, wants[i].key))
            results[i] = _delivery(row, duplicate=True) if row is not None else None
    return results


async def _mark_sending(claim: _Claim) -> None:
    """Right before the request leaves: from here on, a run that dies leaves a row the sweeper makes
    `unknown`. Refuses (and so stops the send) when this run no longer holds the claim. The marks of
    concurrent sends share one statement and one commit (`_marks`)."""
    if not await _marks.write(claim):
        raise _ClaimLost()


async def _mark_batch(claims: list[_Claim]) -> list[bool]:
    rows = await db.fetch(
        "UPDATE wechat_outbound o SET state = 'sending', attempted_at = now() "
        "FROM unnest($1::bigint[], $2::int[]) AS u(id, attempt) "
        "WHERE o.id = u.id AND o.attempts = u.attempt AND o.state IN ('queued', 'sending') RETURNING o.id, o.attempts",
        [c.outbound_id for c in claims], [c.attempt for c in claims])
    held = {(int(r["id"]), int(r["attempts"])) for r in rows}
    return [(c.outbound_id, c.attempt) in held for c in claims]


@dataclass(frozen=True)
class _Outcome:
    claim: _Claim
    state: str
    errcode: int | None
    errmsg: str
    reason: str
    msgid: str


async def _finish(claim: _Claim, state: str, *, errcode: int | None = None, errmsg: str = "", reason: str = "",
                  msgid: str = "", retry_after: int = 0) -> Delivery:
    """Settle this run's attempt. A row the sweeper declared `unknown` meanwhile still learns that it was
    sent; nothing else moves a row this run no longer holds (its Delivery says where the row stands). The
    outcomes of concurrent sends share one statement and one commit (`_finishes`)."""
    settled = await _finishes.write(_Outcome(claim, state, errcode, errmsg[:500], reason[:32], msgid))
    if settled is not None:
        return replace(settled, retry_after=retry_after) if retry_after else settled
    row = await db.fetchrow(f"SELECT {_ROW} FROM wechat_outbound WHERE id = $1", claim.outbound_id)
    return _delivery(row, duplicate=True)


async def _finish_batch(outcomes: list[_Outcome]) -> list[Delivery | None]:
    rows = await db.fetch(
        "UPDATE wechat_outbound o SET state = u.state, errcode = u.errcode, errmsg = u.errmsg, reason = u.reason, "
        "wechat_msgid = CASE WHEN u.state = 'sent' THEN u.msgid ELSE o.wechat_msgid END, "
        "sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE o.sent_at END, "
        # A WeCom task WeChat took waits for its member: `owner_tasks` asks what became of it from here on.
        "task_state = CASE WHEN u.state = 'sent' AND o.kind = 'wecom_task' AND o.task_state = '' THEN 'waiting' "
        "ELSE o.task_state END, task_next_check_at = CASE WHEN u.state = 'sent' AND o.kind = 'wecom_task' "
        f"AND o.task_state = '' THEN now() + interval '{OWNER_TASK_FIRST_CHECK} seconds' ELSE o.task_next_check_at END "
        "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[]) "
        "AS u(id, attempt, state, errcode, errmsg, reason, msgid) "
        "WHERE o.id = u.id AND o.attempts = u.attempt AND (o.state IN ('queued', 'sending') "
        "OR (o.state = 'unknown' AND u.state = 'sent')) RETURNING o.id, o.attempts",
        [o.claim.outbound_id for o in outcomes], [o.claim.attempt for o in outcomes], [o.state for o in outcomes],
        [o.errcode for o in outcomes], [o.errmsg for o in outcomes], [o.reason for o in outcomes],
        [o.msgid for o in outcomes])
    moved = {(int(r["id"]), int(r["attempts"])) for r in rows}
    return [Delivery(o.claim.outbound_id, o.state, o.errcode, o.reason)
            if (o.claim.outbound_id, o.claim.attempt) in moved else None for o in outcomes]


_claims: groupcommit.GroupCommit[_Want, _Claim | Delivery | None] = groupcommit.GroupCommit(_claim_batch,
                                                                                         "outbound-claims")
_marks: groupcommit.GroupCommit[_Claim, bool] = groupcommit.GroupCommit(_mark_batch, "outbound-marks")
_finishes: groupcommit.GroupCommit[_Outcome, Delivery | None] = groupcommit.GroupCommit(_finish_batch,
                                                                                        "outbound-outcomes")


Send = Callable[[WeChatClient, OnSend], Awaitable[dict[str, Any]]]


async def _call(claim: _Claim, send: Send, tenant_id: int, channel: str, runtime: WeChatRuntime,
                refused_by_answer: Callable[[dict[str, Any]], str] | None = None) -> Delivery:
    """Make a claimed send's one call to WeChat and settle its ledger row by what is known of it."""
    try:
        client = await runtime.client(tenant_id, channel)
    except NotFound:
        return await _finish(claim, "failed", reason="not_linked",
                             errmsg=f"no {channel} account is linked (nothing was sent)")
    try:
        answer = await send(client, lambda: _mark_sending(claim))
    except _ClaimLost:
        log.warning("outbound %s: another run took the send over; this one stopped", claim.outbound_id)
        row = await db.fetchrow(f"SELECT {_ROW} FROM wechat_outbound WHERE id = $1", claim.outbound_id)
        return _delivery(row, duplicate=True)
    except WeChatOutcomeUnknown as exc:
        log.warning("outbound %s: %s", claim.outbound_id, exc.errmsg)
        return await _finish(claim, "unknown", reason=exc.reason, errmsg=exc.errmsg)
    except WeChatNotAllowed as exc:
        return await _finish(claim, "failed", errcode=exc.errcode, reason=exc.reason, errmsg=exc.errmsg)
    except WeChatError as exc:
        reason = str(getattr(exc, "reason", ""))
        # A transport failure carries no errcode of WeChat's; its words are in errmsg.
        errcode = None if isinstance(exc, (WeChatUnreachable, WeChatTokenUnavailable)) else exc.errcode
        if getattr(exc, "retryable", False):
            retry_after = exc.retry_after if isinstance(exc, WeChatRateLimited) else 0
            return await _finish(claim, "retry", errcode=errcode, reason=reason, errmsg=exc.errmsg,
                                 retry_after=retry_after)
        return await _finish(claim, "failed", errcode=errcode, reason=reason, errmsg=exc.errmsg)
    refused = refused_by_answer(answer) if refused_by_answer else ""
    if refused:
        return await _finish(claim, "failed", reason=refused, errmsg=f"{refused} (in WeChat's answer)")
    return await _finish(claim, "sent", msgid=str(answer.get("msgid", "")))


# --- for callers and the sweepers -----------------------------------------------------------------------

async def give_up(tenant_id: int, channel: str, external_id: str, idempotency_key: str, kind: str,
                  errmsg: str) -> Delivery:
    """Make a send that never reached WeChat final: `failed` (reason `gave_up`), so no later run sends it.
    A key never claimed gets its failed row now; a key waiting for `retry` fails; a key another run holds
    or that is final already is left as it is. Returns where the key stands."""
    row = await db.fetchrow(
        "INSERT INTO wechat_outbound (tenant, channel, external_id, idempotency_key, kind, payload, state, "
        "window_slot, reason, errmsg, wechat_msgid, attempts, created_at, claimed_at) "
        "VALUES ($1, $2, $3, $4, $5, '{}'::jsonb, 'failed', '', 'gave_up', $6, '', 0, now(), now()) "
        "ON CONFLICT (tenant, idempotency_key) DO UPDATE SET state = 'failed', reason = 'gave_up', "
        "errmsg = left(EXCLUDED.errmsg || ' (last: ' || wechat_outbound.errmsg || ')', 500) "
        f"WHERE wechat_outbound.state = 'retry' RETURNING {_ROW}",
        tenant_id, channel, external_id, idempotency_key, kind, errmsg[:400])
    if row is None:
        row = await db.fetchrow(f"SELECT {_ROW} FROM wechat_outbound WHERE tenant = $1 AND idempotency_key = $2",
                                tenant_id, idempotency_key)
    return _delivery(row, duplicate=False)


@dataclass(frozen=True)
class Stale:
    unknown: int  # asked WeChat, then the run died: may have been delivered
    freed: int  # claimed, never asked: free to claim again
    failed: int  # waited for a retry that never came


async def settle_stale(sending_after: int = SENDING_DEADLINE_SECONDS, queued_after: int = QUEUED_DEADLINE_SECONDS,
                       retry_after: int = RETRY_DEADLINE_SECONDS) -> Stale:
    """Settle the sends whose run died. One asked WeChat (`sending`): it may have been delivered, so it is
    `unknown` and never sent again automatically. One claimed but never asked (`queued`): free for the
    caller's next run (`retry`). One left waiting for a retry: `failed`, with the last reason kept."""
    unknown = await db.fetch(
        "UPDATE wechat_outbound SET state = 'unknown', reason = 'outcome_unknown', errmsg = left("
        "'the sending process stopped after asking WeChat; it may have been delivered', 500) "
        "WHERE state = 'sending' AND attempted_at < now() - make_interval(secs => $1) RETURNING id", sending_after)
    freed = await db.fetch(
        "UPDATE wechat_outbound SET state = 'retry', reason = 'stopped', claimed_at = now(), "
        "errmsg = 'the sending process stopped before asking WeChat' "
        "WHERE state = 'queued' AND claimed_at < now() - make_interval(secs => $1) RETURNING id", queued_after)
    failed = await db.fetch(
        "UPDATE wechat_outbound SET state = 'failed', reason = 'gave_up', errmsg = left("
        "'not sent: no retry came (last: ' || errmsg || ')', 500) "
        "WHERE state = 'retry' AND claimed_at < now() - make_interval(secs => $1) "
        # A suspended tenant's retry waits (its job is held, `holds`): reactivation sends it.
        "AND tenant NOT IN (SELECT id FROM tenant WHERE status = 'suspended') RETURNING id", retry_after)
    if unknown:
        log.warning("%s outbound messages died mid-send; marked unknown, not sent again", len(unknown))
    return Stale(len(unknown), len(freed), len(failed))


@dataclass(frozen=True)
class LedgerRow:
    outbound_id: int
    state: str
    errcode: int | None
    reason: str
    errmsg: str
    payload: dict[str, Any]


async def ledger_rows(tenant_id: int, keys: list[str]) -> dict[str, LedgerRow]:
    """Where each of these keys stands (keys never claimed are absent)."""
    rows = await db.fetch(
        "SELECT idempotency_key, id, state, errcode, reason, errmsg, payload FROM wechat_outbound "
        "WHERE tenant = $1 AND idempotency_key = ANY($2::text[])", tenant_id, keys)
    return {r["idempotency_key"]: LedgerRow(int(r["id"]), r["state"], r["errcode"], r["reason"], r["errmsg"],
                                             _json(r["payload"])) for r in rows}


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}
