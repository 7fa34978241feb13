"""The gateway's reads and writes: which account a callback is for, the durable record of each
inbound event (idempotent on WeChat's retries), and the Official Account's auto-reply rules."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asyncpg.exceptions import UniqueViolationError

from siyu.core import db
from siyu.core.clock import now
from siyu.core.crypto import box
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit
from siyu.wechat.protocol import Account, Normalized
from siyu.wechat.tables import AutoReply, InboundEvent

CHANNELS = ("oa", "mp", "wecom")

T = TypeVar("T")


ACCOUNT_TTL = 60.0  # a safety net: changes reach every process at once through LISTEN/NOTIFY
_accounts: dict[tuple[str, str], tuple[float, Account]] = {}


async def callback_account(slug: str, channel: str, fresh: bool = False) -> Account | None:
    """The linked account a callback URL names, with its secrets opened; None if there is none.

    Kept for a few seconds per process (a lookup and a decryption per callback add up under load). A
    callback that fails its signature or decryption with the kept copy is checked again against a fresh
    one, so a Token or key changed by the admin takes effect at once."""
    if channel not in CHANNELS:
        return None
    key = (slug, channel)
    if not fresh:
        hit = _accounts.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
    rows = await InboundEvent.raw(
        "SELECT c.id, c.tenant, c.app_id, c.token_encrypted, c.secret_encrypted, c.aes_key_encrypted, "
        "c.message_mode, c.push_format FROM channel_account c JOIN tenant t ON t.id = c.tenant "
        "WHERE t.slug = {} AND c.kind = {}", slug, channel,
    )
    if not rows:
        _accounts.pop(key, None)
        return None
    r = rows[0]
    aes_key = box().open(r["aes_key_encrypted"], f"channel_account:{r['tenant']}:{channel}:aes_key")
    token = box().open(r["token_encrypted"], f"channel_account:{r['tenant']}:{channel}:token")
    account = Account(tenant_id=r["tenant"], account_id=r["id"], channel=channel, app_id=r["app_id"],
                      token=token, aes_key=aes_key, mode=r["message_mode"], push_format=r["push_format"],
                      slug=slug)
    _accounts[key] = (time.monotonic() + ACCOUNT_TTL, account)
    return account


def forget_cached() -> None:
    """Drop every kept account and rule set (tests, and after bulk changes)."""
    _accounts.clear()
    _rules.clear()


def on_change(channel: str, payload: str) -> None:
    """A committed change elsewhere (any process): drop what this process kept of it."""
    if channel == db.AUTO_REPLIES_CHANGED and payload.isdigit():
        _rules.pop(int(payload), None)
    elif channel == db.ACCOUNTS_CHANGED and payload.isdigit():
        tenant_id = int(payload)
        for key in [k for k, (_, acc) in _accounts.items() if acc.tenant_id == tenant_id]:
            _accounts.pop(key, None)
    else:
        forget_cached()


@dataclass(frozen=True)
class Recorded:
    event_id: int
    is_new: bool
    tenant_id: int = 0


async def record_inbound(account: Account, event: Normalized, payload: dict[str, Any]) -> Recorded:
    """Store the event once. A retry of the same message (same dedup key) only counts a delivery."""
    rows = await InboundEvent.raw(
        "INSERT INTO wechat_inbound_event (tenant, channel_account, channel, dedup_key, kind, msg_type, event, "
        "external_id, occurred_at, payload, received_at, deliveries, attempts, last_error) "
        "VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}::jsonb, now(), 1, 0, '') "
        "ON CONFLICT (tenant, channel, dedup_key) DO UPDATE SET deliveries = wechat_inbound_event.deliveries + 1 "
        "RETURNING id, tenant, (xmax = 0) AS inserted",
        account.tenant_id, account.account_id or None, account.channel, event.dedup_key, event.kind, event.msg_type,
        event.event, event.external_id, event.occurred_at,
        json.dumps({"fields": payload, "details": event.details}, ensure_ascii=False),
    )
    return Recorded(int(rows[0]["id"]), bool(rows[0]["inserted"]), int(rows[0]["tenant"]))


# --- auto-replies -----------------------------------------------------------------------------------

MAX_REPLY_BYTES = 2048  # WeChat truncates longer passive text replies


def normalize_text(text: str) -> str:
    """Full-width letters, case and surrounding spaces do not matter to a keyword: 'ＨＥＬＬＯ ' = 'hello'."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


RULES_TTL = 60.0  # a safety net: changes reach every process at once through LISTEN/NOTIFY
_rules: dict[int, tuple[float, list[dict[str, Any]]]] = {}


class Coalesced:
    """Concurrent callers asking for the same key share one call: when a kept copy expires in the middle
    of a burst, hundreds of callbacks would otherwise queue the same query on the pool at once."""

    def __init__(self) -> None:
        self._pending: dict[Any, asyncio.Future[Any]] = {}

    async def run(self, key: Any, call: Callable[[], Awaitable[T]]) -> T:
        pending = self._pending.get(key)
        if pending is not None:
            try:
                return cast(T, await asyncio.shield(pending))
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
            # the caller doing the work went away (its request was cancelled): do it here
        shared: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = shared
        try:
            result = await call()
        except asyncio.CancelledError:
            shared.cancel()
            raise
        except Exception as exc:
            shared.set_exception(exc)
            shared.exception()  # the waiters get it; nobody else needs to look
            raise
        else:
            shared.set_result(result)
            return result
        finally:
            self._pending.pop(key, None)


_rules_lookups = Coalesced()


async def _enabled_rules(tenant_id: int) -> list[dict[str, Any]]:
    hit = _rules.get(tenant_id)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    return await _rules_lookups.run(tenant_id, lambda: _load_rules(tenant_id))


async def _load_rules(tenant_id: int) -> list[dict[str, Any]]:
    rows = await AutoReply.select(AutoReply.id, AutoReply.trigger, AutoReply.match_type, AutoReply.keyword,
                                  AutoReply.keyword_norm, AutoReply.scene, AutoReply.menu_key, AutoReply.reply).where(
        (AutoReply.tenant == tenant_id) & (AutoReply.enabled == True)  # noqa: E712
    ).order_by(AutoReply.id)
    _rules[tenant_id] = (time.monotonic() + RULES_TTL, rows)
    return rows


def forget_rules(tenant_id: int) -> None:
    _rules.pop(tenant_id, None)


def best_keyword_rules(rules: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Matching keyword rules, best first: an exact match, then the longest contained keyword."""
    norm = normalize_text(text)
    if not norm:
        return []
    found = [r for r in rules if r["trigger"] == "keyword" and (
        (r["match_type"] == "exact" and r["keyword_norm"] == norm)
        or (r["match_type"] == "contains" and r["keyword_norm"] and r["keyword_norm"] in norm))]
    found.sort(key=lambda r: (r["match_type"] != "exact", -len(r["keyword_norm"]), r["id"]))
    return found


async def auto_reply_rule(tenant_id: int, event: Normalized, bot_silenced: bool) -> dict[str, Any] | None:
    """The rule whose passive reply the Official Account gives to this event, if one matches. The gateway
    reads `bot_silenced` (a rep has this customer) with the stored event and counts the hit in bulk, so a
    burst of callbacks costs no query per reply (the rules themselves are kept per process)."""
    if event.kind not in ("follow", "menu_click") and not (event.kind == "message" and event.msg_type == "text"):
        return None
    rules = await _enabled_rules(tenant_id)
    if not rules:
        return None
    if event.kind == "follow":
        scene = event.details.get("scene", "")
        found = [r for r in rules if r["trigger"] == "welcome" and r["scene"] in (scene, "")]
        found.sort(key=lambda r: r["scene"] == "")  # the scene's own welcome beats the general one
    elif event.kind == "menu_click":
        found = [r for r in rules if r["trigger"] == "click" and r["menu_key"] == event.details.get("key", "")]
    else:
        found = best_keyword_rules(rules, str(event.details.get("Content", "")))
        if found and bot_silenced:
            return None  # a rep has this customer: the bot does not answer over them
    return found[0] if found else None


async def match_keyword(tenant_id: int, text: str) -> list[dict[str, Any]]:
    """For the admin's "try a message" box: always the current rules, not the cached ones."""
    forget_rules(tenant_id)
    return best_keyword_rules(await _enabled_rules(tenant_id), text)


RULE_TRIGGERS = ("welcome", "keyword", "click")


def _validate_rule(data: dict[str, Any]) -> dict[str, str]:
    from siyu.core.errors import FieldError

    trigger = str(data.get("trigger") or "")
    clean = {
        "trigger": trigger, "match_type": str(data.get("match_type") or "exact"),
        "keyword": str(data.get("keyword") or "").strip(), "scene": str(data.get("scene") or "").strip(),
        "menu_key": str(data.get("menu_key") or "").strip(), "reply": str(data.get("reply") or "").strip(),
    }
    errors: list[FieldError] = []
    if trigger not in RULE_TRIGGERS:
        errors.append(FieldError("trigger", N_("Choose one of: {choices}."), {"choices": ", ".join(RULE_TRIGGERS)}))
    if trigger == "keyword":
        if clean["match_type"] not in ("exact", "contains"):
            errors.append(FieldError("match_type", N_("Choose one of: {choices}."), {"choices": "exact, contains"}))
        if not clean["keyword"]:
            errors.append(FieldError("keyword", N_("This field is required.")))
        elif len(clean["keyword"]) > 64:
            errors.append(FieldError("keyword", N_("Use at most 64 characters.")))
    if trigger == "click" and not clean["menu_key"]:
        errors.append(FieldError("menu_key", N_("This field is required.")))
    # Only the chosen trigger's fields count: the page hides the others, so an error there could not be seen.
    if trigger == "welcome" and len(clean["scene"]) > 64:
        errors.append(FieldError("scene", N_("This value is too long.")))
    if trigger == "click" and len(clean["menu_key"]) > 128:
        errors.append(FieldError("menu_key", N_("This value is too long.")))
    relevant = {"keyword": ("keyword",), "welcome": ("scene",), "click": ("menu_key",)}.get(trigger, ())
    for name in (*relevant, "reply"):
        if "\x00" in clean[name]:  # PostgreSQL text cannot hold it
            errors.append(FieldError(name, N_("Remove the invisible NUL character.")))
    if not clean["reply"]:
        errors.append(FieldError("reply", N_("This field is required.")))
    elif len(clean["reply"].encode()) > MAX_REPLY_BYTES:
        errors.append(FieldError("reply", N_("WeChat accepts at most 2048 bytes in a reply (about 680 Chinese characters).")))
    if errors:
        raise InvalidInput(errors)
    if trigger != "keyword":
        clean["match_type"], clean["keyword"] = "exact", ""
    if trigger != "welcome":
        clean["scene"] = ""
    if trigger != "click":
        clean["menu_key"] = ""
    return clean


async def list_rules(tenant_id: int) -> list[dict[str, Any]]:
    return await AutoReply.select().where(AutoReply.tenant == tenant_id).order_by(AutoReply.trigger).order_by(
        AutoReply.id)


async def get_rule(tenant_id: int, rule_id: int) -> dict[str, Any]:
    row = await AutoReply.select().where((AutoReply.tenant == tenant_id) & (AutoReply.id == rule_id)).first()
    if row is None:
        raise NotFound()
    return row


RULE_KEYS = ("trigger", "match_type", "keyword", "scene", "menu_key")
_TAKEN = N_("A rule for this already exists; edit it instead.")


def _what(rule: dict[str, Any]) -> dict[str, str]:
    """What a rule answers, for the audit log (its sentence names the rule by it)."""
    return {k: str(rule[k]) for k in RULE_KEYS if rule.get(k) and (k != "match_type" or rule["trigger"] == "keyword")}


def _taken_field(clean: dict[str, str]) -> str:
    return {"welcome": "scene", "click": "menu_key", "keyword": "keyword"}[clean["trigger"]]


async def _check_free(tenant_id: int, clean: dict[str, str], rule_id: int | None = None) -> None:
    """One welcome per scene, one reply per menu key, one rule per keyword and match (unique indexes
    say the same; this names the field before they would refuse)."""
    same = ((AutoReply.tenant == tenant_id) & (AutoReply.trigger == clean["trigger"])
            & (AutoReply.scene == clean["scene"]) & (AutoReply.menu_key == clean["menu_key"])
            & (AutoReply.match_type == clean["match_type"])
            & (AutoReply.keyword_norm == normalize_text(clean["keyword"])))
    if rule_id is not None:
        same = same & (AutoReply.id != rule_id)
    if await AutoReply.exists().where(same):
        raise InvalidInput.one(_taken_field(clean), _TAKEN)


async def do_create_rule(actor: Actor, tenant_id: int, data: dict[str, Any]) -> int:
    clean = _validate_rule(data)
    async with db.transaction():
        await _check_free(tenant_id, clean)
        rule = AutoReply(tenant=tenant_id, keyword_norm=normalize_text(clean["keyword"]), enabled=True,
                         created_at=now(), updated_at=now(), **clean)
        try:
            await rule.save()
        except UniqueViolationError:  # the same rule added by another request since the check
            raise InvalidInput.one(_taken_field(clean), _TAKEN) from None
        await record_audit(actor, tenant_id, "auto_reply.created", "auto_reply", rule.id,
                           {k: v for k, v in clean.items() if v and (k != "match_type" or clean["trigger"] == "keyword")})
        await db.notify(db.AUTO_REPLIES_CHANGED, str(tenant_id))
    forget_rules(tenant_id)
    return int(rule.id)


async def do_update_rule(actor: Actor, tenant_id: int, rule_id: int, data: dict[str, Any]) -> None:
    """Change what a rule answers and its reply (its hits and on/off state stay). The audit entry names the
    rule as it is now and lists what changed."""
    await get_rule(tenant_id, rule_id)  # another tenant's rule is a 404 before the input is judged
    clean = _validate_rule(data)
    async with db.transaction():
        before = await db.fetchrow("SELECT trigger, match_type, keyword, scene, menu_key, reply FROM wechat_auto_reply "
                                   "WHERE tenant = $1 AND id = $2 FOR UPDATE", tenant_id, rule_id)
        if before is None:
            raise NotFound()
        await _check_free(tenant_id, clean, rule_id)
        try:
            await AutoReply.update({**{getattr(AutoReply, k): v for k, v in clean.items()},
                                    AutoReply.keyword_norm: normalize_text(clean["keyword"]),
                                    AutoReply.updated_at: now()}).where(
                (AutoReply.tenant == tenant_id) & (AutoReply.id == rule_id))
        except UniqueViolationError:
            raise InvalidInput.one(_taken_field(clean), _TAKEN) from None
        changed: dict[str, Any] = {k: [before[k], clean[k]] for k in clean if before[k] != clean[k]}
        if changed:
            await record_audit(actor, tenant_id, "auto_reply.updated", "auto_reply", rule_id,
                               {"rule": _what(clean), **changed})
            await db.notify(db.AUTO_REPLIES_CHANGED, str(tenant_id))
    forget_rules(tenant_id)


async def do_set_rule_enabled(actor: Actor, tenant_id: int, rule_id: int, enabled: bool) -> None:
    async with db.transaction():
        changed = await AutoReply.update({AutoReply.enabled: enabled, AutoReply.updated_at: now()}).where(
            (AutoReply.id == rule_id) & (AutoReply.tenant == tenant_id)).returning(*[
                getattr(AutoReply, k) for k in RULE_KEYS])
        if not changed:
            raise NotFound()
        await record_audit(actor, tenant_id, "auto_reply.enabled" if enabled else "auto_reply.disabled",
                           "auto_reply", rule_id, _what(changed[0]))
        await db.notify(db.AUTO_REPLIES_CHANGED, str(tenant_id))
    forget_rules(tenant_id)


async def do_delete_rule(actor: Actor, tenant_id: int, rule_id: int) -> None:
    async with db.transaction():
        deleted = await AutoReply.delete().where(
            (AutoReply.id == rule_id) & (AutoReply.tenant == tenant_id)).returning(
                *[getattr(AutoReply, k) for k in RULE_KEYS], AutoReply.reply)
        if not deleted:
            raise NotFound()
        await record_audit(actor, tenant_id, "auto_reply.deleted", "auto_reply", rule_id,
                           {**_what(deleted[0]), "reply": deleted[0]["reply"]})
        await db.notify(db.AUTO_REPLIES_CHANGED, str(tenant_id))
    forget_rules(tenant_id)


async def list_recent_events(tenant_id: int, limit: int = 50) -> list[dict[str, Any]]:
    return await InboundEvent.select(
        InboundEvent.id, InboundEvent.channel, InboundEvent.kind, InboundEvent.msg_type, InboundEvent.event,
        InboundEvent.external_id, InboundEvent.occurred_at, InboundEvent.received_at, InboundEvent.deliveries,
        InboundEvent.processed_at, InboundEvent.payload,
    ).where(InboundEvent.tenant == tenant_id).order_by(InboundEvent.id, ascending=False).limit(limit).output(
        load_json=True)


async def keyword_rule(tenant_id: int, text: str) -> dict[str, Any] | None:
    """The keyword rule that answers this text (cached rules), without counting a hit: the inbox asks
    whether the bot can answer a message, and on the Mini Program and WeCom 微信客服 (no passive replies
    there) has the bot send that rule's reply as a customer-service message."""
    found = best_keyword_rules(await _enabled_rules(tenant_id), text)
    return found[0] if found else None


async def passive_rule(tenant_id: int, kind: str, msg_type: str, details: dict[str, Any],
                       bot_silenced: bool) -> dict[str, Any] | None:
    """The rule whose passive reply the Official Account gave to a stored callback (the gateway's choice in
    `auto_reply_for`, made again from the same kept rules, without counting a hit): a welcome for a follow
    (the QR scene's own before the general one), a menu button's reply, or a keyword rule for a text
    while the bot is not silenced. The inbox writes it in the thread, so the rep sees what the customer
    saw; the gateway's hot path stays as it is."""
    if kind not in ("follow", "menu_click") and not (kind == "message" and msg_type == "text"):
        return None
    rules = await _enabled_rules(tenant_id)
    if kind == "follow":
        scene = details.get("scene", "")
        found = [r for r in rules if r["trigger"] == "welcome" and r["scene"] in (scene, "")]
        found.sort(key=lambda r: r["scene"] == "")
    elif kind == "menu_click":
        found = [r for r in rules if r["trigger"] == "click" and r["menu_key"] == details.get("key", "")]
    else:
        found = [] if bot_silenced else best_keyword_rules(rules, str(details.get("Content", "")))
    return found[0] if found else None


async def count_hit(tenant_id: int, rule_id: int) -> None:
    await AutoReply.update({AutoReply.hits: AutoReply.hits + 1}).where(
        (AutoReply.tenant == tenant_id) & (AutoReply.id == rule_id))
