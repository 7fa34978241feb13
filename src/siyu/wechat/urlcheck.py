"""How WeChat's URL check of a linked account went, in one word the channels page explains: the gateway
answers WeChat first, then notes the outcome (`siyu.tenants.linking.note_url_check`) in a background task,
so the note never delays or changes the answer (WeCom wants it within a second).

Only requests shaped like WeChat's check (timestamp, nonce, echostr and a signature) are noted: a browser
opening the URL is not a check, and leaves the last real one on the page.
"""

from __future__ import annotations

import hmac
import logging

from litestar.background_tasks import BackgroundTask

from siyu.core.settings import get_settings
from siyu.tenants import linking
from siyu.wechat import protocol, services
from siyu.wechat.protocol import Account, CallbackRejected

log = logging.getLogger("siyu.wechat.urlcheck")


def _shaped_like_a_check(channel: str, query: dict[str, str]) -> bool:
    signature = query.get("msg_signature" if channel == "wecom" else "signature")
    return all((signature, query.get("timestamp"), query.get("nonce"), query.get("echostr")))


def outcome(account: Account, query: dict[str, str], passed: bool) -> str | None:
    """`linking.OK`, or why the check failed (`TOKEN`, `CLOCK`, `AES_KEY`); None when the request is not
    WeChat's check at all."""
    if not _shaped_like_a_check(account.channel, query):
        return None
    if passed:
        return linking.OK
    timestamp, nonce = query["timestamp"], query["nonce"]
    try:  # in the order the gateway checks
        protocol.check_timestamp(timestamp, get_settings().callback_max_skew)
    except CallbackRejected:
        return linking.CLOCK
    if account.channel == "wecom":
        expected = protocol.sha1_signature(account.token, timestamp, nonce, query["echostr"])
        given = query["msg_signature"]
    else:
        expected, given = protocol.sha1_signature(account.token, timestamp, nonce), query["signature"]
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return linking.TOKEN
    # Signed with the right Token, yet refused: only WeCom's encrypted echostr can fail after that, when it
    # does not open with the EncodingAESKey and CorpID saved here.
    return linking.AES_KEY if account.channel == "wecom" else linking.TOKEN


async def _note(account: Account, query: dict[str, str], passed: bool) -> None:
    try:
        if not passed:
            # A refused check was also tried against a fresh copy of the account, which is now the kept one:
            # explain the refusal with the settings saved now.
            account = await services.callback_account(account.slug, account.channel) or account
        said = outcome(account, query, passed)
        if said is not None:
            await linking.note_url_check(account.tenant_id, account.account_id, said)
    except Exception:  # WeChat has its answer; the page just misses one note
        log.exception("could not note WeChat's URL check of %r", account)


def note(account: Account, query: dict[str, str], passed: bool) -> BackgroundTask | None:
    """The task that notes the check once the answer is sent; None when the request is not a check."""
    if not _shaped_like_a_check(account.channel, query):
        return None
    return BackgroundTask(_note, account, query, passed)
