"""WeChat's callbacks: `GET|POST /wechat/{tenant}/{oa|mp|wecom}`.

A POST is verified, decrypted, parsed, normalised and stored (unique on its dedup key) before Siyu
answers, so an answer of `success` never loses an event; the rest of the work runs in the
`wechat.process_inbound` job. Nothing is built from a body before its signature holds (a plain-mode
signature is checked before the body is even read: granian then answers with `connection: close`), and
every parse is bounded. Rejections store nothing
and say why in the log. A suspended tenant's callbacks are stored and acknowledged, without a reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from siyu.core.settings import get_settings
from siyu.wechat import protocol, services, urlcheck
from siyu.wechat.ingest import AccountGone, Ingestor
from siyu.wechat.protocol import MAX_BODY, Account, CallbackRejected

T = TypeVar("T")

log = logging.getLogger("siyu.wechat.gateway")

TEXT = "text/plain; charset=utf-8"
NO_ACCOUNT = CallbackRejected(404, "no such tenant or linked account")


def _reject(tenant: str, channel: str, exc: CallbackRejected) -> Response[str]:
    log.warning("wechat callback rejected: tenant=%s channel=%s status=%s reason=%s", tenant, channel,
                exc.status, exc.reason)
    return Response(exc.reason, status_code=exc.status, media_type=TEXT)


# A failed check is tried again with a fresh copy of the account at most this often per account: changes
# reach every process through LISTEN/NOTIFY anyway, and unsigned junk must not cost a query each.
FRESH_RETRY_SECONDS = 1.0
_fresh_at: dict[Account, float] = {}


async def _with_fresh_retry(tenant: str, channel: str, account: Account,
                            step: Callable[[Account], T]) -> tuple[Account, T]:
    """Run a verification step with the process's kept copy of the account; if it fails, once more with
    a fresh copy (the admin may have just changed the Token, key or mode). Returns the account that
    passed, with the step's result."""
    try:
        return account, step(account)
    except CallbackRejected as exc:
        if exc.status == 413:
            raise
        key, at = account, time.monotonic()
        if at - _fresh_at.get(key, -FRESH_RETRY_SECONDS) < FRESH_RETRY_SECONDS:
            raise
        if len(_fresh_at) > 10_000:  # one per kept account; a bound all the same
            _fresh_at.clear()
        _fresh_at[key] = at
        fresh = await services.callback_account(tenant, channel, fresh=True)
        if fresh is None or fresh == account:
            raise
        return fresh, step(fresh)


_account_lookups = services.Coalesced()


async def _account(tenant: str, channel: str) -> Account | None:
    """The kept account (`services.callback_account`); callbacks that find it expired together share one
    lookup."""
    return await _account_lookups.run((tenant, channel), lambda: services.callback_account(tenant, channel))


def _query(request: Request[Any, Any, Any]) -> dict[str, str]:
    return dict(parse_qsl(request.scope["query_string"].decode("latin-1")))


class WeChatCallbacks(Controller):
    path = "/wechat"
    include_in_schema = False

    @get("/{tenant:str}/{channel:str}")
    async def verify(self, request: Request[Any, Any, Any], tenant: FromPath[str],
                     channel: FromPath[str]) -> Response[str]:
        """URL verification when the admin saves the callback URL in the WeChat console."""
        account = await _account(tenant, channel)
        if account is None:
            return _reject(tenant, channel, NO_ACCOUNT)
        query = _query(request)
        try:
            protocol.check_timestamp(query.get("timestamp", ""), get_settings().callback_max_skew)
            account, answer = await _with_fresh_retry(tenant, channel, account,
                                                      lambda a: protocol.verify_url(a, query))
            # How it went is noted for the channels page after the answer is sent (never delaying it).
            return Response(answer, media_type=TEXT, background=urlcheck.note(account, query, passed=True))
        except CallbackRejected as exc:
            response = _reject(tenant, channel, exc)
            response.background = urlcheck.note(account, query, passed=False)
            return response

    @post("/{tenant:str}/{channel:str}", request_max_body_size=MAX_BODY, status_code=200)
    async def receive(self, request: Request[Any, Any, Any], tenant: FromPath[str],
                      channel: FromPath[str]) -> Response[str]:
        account = await _account(tenant, channel)
        if account is None:
            return _reject(tenant, channel, NO_ACCOUNT)
        query = _query(request)
        try:
            protocol.check_timestamp(query.get("timestamp", ""), get_settings().callback_max_skew)
            account, _ = await _with_fresh_retry(tenant, channel, account,
                                                 lambda a: protocol.check_query_signature(a, query))
            body = await request.body()
            account, opened = await _with_fresh_retry(tenant, channel, account,
                                                      lambda a: protocol.open_envelope(a, query, body))
            fields, original = protocol.fields_of(opened)
            event = protocol.normalize(channel, fields)
        except CallbackRejected as exc:
            return _reject(tenant, channel, exc)

        ingestor: Ingestor = request.app.state.ingestor
        try:
            stored = await ingestor.store(account, event, fields, original)
        except AccountGone:
            return _reject(tenant, channel, CallbackRejected(404, "the account was unlinked just now"))
        if not stored.is_new:
            log.debug("wechat callback retried: tenant=%s channel=%s event=%s", tenant, channel, stored.event_id)

        ack = "" if channel == "wecom" else "success"  # WeCom wants an empty 200, OA/MP accept "success"
        if channel == "oa" and not stored.suspended:
            rule = await services.auto_reply_rule(stored.tenant_id, event, stored.bot_silenced)
            if rule:
                ingestor.count_hit(stored.tenant_id, int(rule["id"]))
                body_out = protocol.passive_text_reply(account, fields, str(rule["reply"]), opened,
                                                       query.get("nonce", ""), query.get("timestamp", ""))
                return Response(body_out, media_type="application/xml; charset=utf-8")
        return Response(ack, media_type=TEXT)


async def enqueue_batch(arq: Any, event_ids: list[int]) -> None:
    """Hand stored events to the worker: one job per batch, named by its first event (ids only)."""
    await arq.enqueue_job("wechat.process_inbound_batch", event_ids, _job_id=f"wechat.inbound-batch:{event_ids[0]}")


@post("/wechat-bare", status_code=200, include_in_schema=False)
async def bare_endpoint() -> Response[str]:
    """Answers `success` and does nothing: the baseline of `make bench-ingest` (only when enabled)."""
    return Response("success", media_type=TEXT)
