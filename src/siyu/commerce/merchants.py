"""A tenant's WeChat Pay merchant: linking it (mchid, the app the payments are made in, the APIv3 key, the keys
WeChat Pay signs with), what the notification endpoint needs to check a notification, and how notifications
have been going (the channels page says in words when they fail, and why).

The APIv3 key is sealed at rest (siyu.core.crypto, bound to the tenant and column) and never leaves this
module except inside `MerchantConfig`, for the notification endpoint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siyu.core import db
from siyu.core.crypto import box
from siyu.core.errors import FieldError, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants import services as tenants
from siyu.tenants.services import Actor, record_audit
from siyu.tenants.validation import check_app_id
from siyu.wechat import pay

MCHID_RE_TEXT = N_("A merchant number (mchid) is 6 to 32 digits.")
FAILURE_CODES = ("decrypt", "unknown_key", "merchant", "app", "stale", "unreadable")
# A refused notification is noted on the merchant at most this often per kind of failure: forged requests
# must not turn into a write each.
FAILURE_NOTE_EVERY_SECONDS = 10
SUCCESS_NOTE_EVERY_SECONDS = 60


def _context(tenant_id: int) -> str:
    return f"commerce_pay_merchant:{tenant_id}:apiv3_key"


@dataclass(frozen=True)
class MerchantConfig:
    """What the notification endpoint checks a notification against; the APIv3 key opened. Never logged."""

    tenant_id: int
    merchant_id: int
    mchid: str
    app_id: str
    apiv3_key: str = field(repr=False)
    keys: dict[str, Any] = field(repr=False)  # key id → RSA public key


@dataclass(frozen=True)
class KeyView:
    key_id: str
    kind: str  # public_key | platform_cert
    not_after: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class PayStatus:
    """What pages may show of the merchant: no part of the APIv3 key."""

    mchid: str
    app_id: str
    keys: list[KeyView]
    last_success_at: datetime | None
    failing_since: datetime | None
    last_failure_at: datetime | None
    last_failure: str
    last_failure_detail: str
    updated_at: datetime

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


# --- reading ------------------------------------------------------------------------------------------------

def notify_url(public_base_url: str, slug: str) -> str:
    """What the brand sets as its orders' `notify_url`."""
    return f"{public_base_url}/wechat/{slug}/pay"


# The config a notification URL names is kept a few seconds per process: reading the tenant, the merchant and
# its keys and opening the APIv3 key for every notification is most of an answer's cost under load. A change
# made in any process reaches every web process through LISTEN/NOTIFY (`on_change`; the TTL is the safety net
# while the listener reconnects), and a notification refused with the kept copy is checked once more against
# a fresh one. An unlinked merchant never gets a row under a stale config: the store looks it up again.
CONFIG_TTL = 5.0
_configs: dict[str, tuple[float, MerchantConfig]] = {}
_loading: dict[str, asyncio.Future[MerchantConfig | None]] = {}


def forget_configs(slug: str | None = None) -> None:
    if slug is None:
        _configs.clear()
    else:
        _configs.pop(slug, None)


def on_change(channel: str, payload: str) -> None:
    """A committed change to a tenant's accounts or status, in any process (`db.ACCOUNTS_CHANGED`, which
    linking a merchant sends too): drop what this process kept of it."""
    if channel != db.ACCOUNTS_CHANGED:
        return
    if payload.isdigit():
        for slug in [s for s, (_, c) in _configs.items() if c.tenant_id == int(payload)]:
            _configs.pop(slug, None)
    else:
        forget_configs()


async def config_for(slug: str) -> MerchantConfig | None:
    """The merchant a notification URL names, with its keys loaded and its APIv3 key opened; None when the
    tenant does not exist, is suspended, or has no merchant linked. Kept for CONFIG_TTL seconds; notifications
    that find it expired together share one lookup."""
    hit = _configs.get(slug)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    loading = _loading.get(slug)
    if loading is not None:
        return await asyncio.shield(loading)
    future: asyncio.Future[MerchantConfig | None] = asyncio.get_running_loop().create_future()
    _loading[slug] = future
    try:
        config = await _load_config(slug)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # the waiters get it; nobody else needs to look
        raise
    finally:
        _loading.pop(slug, None)
    future.set_result(config)
    if config is not None:
        if len(_configs) > 10_000:
            _configs.clear()
        _configs[slug] = (time.monotonic() + CONFIG_TTL, config)
    else:
        _configs.pop(slug, None)
    return config


async def _load_config(slug: str) -> MerchantConfig | None:
    try:
        tenant = await tenants.get_tenant_by_slug(slug)
    except NotFound:
        return None
    if tenant.status != "active":
        return None
    row = await db.fetchrow("SELECT id, mchid, app_id, apiv3_key_sealed FROM commerce_pay_merchant WHERE tenant = $1",
                            tenant.id)
    if row is None:
        return None
    keys: dict[str, Any] = {}
    for k in await db.fetch("SELECT key_id, kind, pem FROM commerce_pay_key WHERE tenant = $1 AND merchant = $2",
                            tenant.id, row["id"]):
        keys[k["key_id"]] = _parsed(k["kind"], k["pem"])
    return MerchantConfig(tenant.id, int(row["id"]), row["mchid"], row["app_id"],
                          box().open(row["apiv3_key_sealed"], _context(tenant.id)), keys)


_parsed_keys: dict[tuple[str, str], Any] = {}


def _parsed(kind: str, pem: str) -> Any:
    """Keys parse once per process (they only ever get added or removed, never changed in place)."""
    hit = _parsed_keys.get((kind, pem))
    if hit is None:
        hit = pay.load_public_key(pem) if kind == "public_key" else pay.load_platform_certificate(pem).public_key
        if len(_parsed_keys) > 1000:
            _parsed_keys.clear()
        _parsed_keys[(kind, pem)] = hit
    return hit


async def status(tenant_id: int) -> PayStatus | None:
    row = await db.fetchrow(
        "SELECT id, mchid, app_id, last_success_at, failing_since, last_failure_at, last_failure, "
        "last_failure_detail, updated_at FROM commerce_pay_merchant WHERE tenant = $1", tenant_id)
    if row is None:
        return None
    keys = [KeyView(k["key_id"], k["kind"], k["not_after"], k["created_at"]) for k in await db.fetch(
        "SELECT key_id, kind, not_after, created_at FROM commerce_pay_key WHERE tenant = $1 AND merchant = $2 "
        "ORDER BY created_at, id", tenant_id, row["id"])]
    return PayStatus(row["mchid"], row["app_id"], keys, row["last_success_at"], row["failing_since"],
                     row["last_failure_at"], row["last_failure"], row["last_failure_detail"], row["updated_at"])


async def app_ids(tenant_id: int) -> set[str]:
    row = await db.fetchrow("SELECT app_id FROM commerce_pay_merchant WHERE tenant = $1", tenant_id)
    return {row["app_id"]} if row else set()


# --- how notifications go -----------------------------------------------------------------------------------

async def note_failure(tenant_id: int, code: str, detail: str) -> None:
    """A notification for this merchant was refused: remember the newest reason for the channels page.
    At most one write per kind of failure every few seconds, whatever the rate of refused requests."""
    try:
        await db.execute(
            "UPDATE commerce_pay_merchant SET last_failure_at = now(), last_failure = $2, last_failure_detail = $3, "
            "failing_since = COALESCE(failing_since, now()) WHERE tenant = $1 AND (last_failure_at IS NULL "
            "OR last_failure IS DISTINCT FROM $2 OR last_failure_at < now() - make_interval(secs => $4))",
            tenant_id, code, detail[:500], FAILURE_NOTE_EVERY_SECONDS)
    except Exception:  # a note for the page: the refusal itself stands whatever happens here
        import logging

        logging.getLogger("siyu.commerce").exception("could not note a Pay notification failure")


def note_success_sql(tenants: str = "= $1") -> str:
    """The statement that marks notifications accepted (`tenants`: how the merchants' tenant column is matched,
    by default `= $1`), for the transaction that stores them: it writes only when the merchant was failing or
    its last success is more than a minute old."""
    return (f"UPDATE commerce_pay_merchant SET last_success_at = now(), failing_since = NULL WHERE tenant {tenants} "
            "AND (failing_since IS NOT NULL OR last_success_at IS NULL "
            f"OR last_success_at < now() - make_interval(secs => {SUCCESS_NOTE_EVERY_SECONDS}))")


# --- linking ------------------------------------------------------------------------------------------------

def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return value.strip() if isinstance(value, str) else ""


def _check_mchid(value: str) -> str | None:
    if not value:
        return N_("This field is required.")
    if not (value.isascii() and value.isdigit() and 6 <= len(value) <= 32):
        return MCHID_RE_TEXT
    return None


@dataclass(frozen=True)
class _NewKey:
    key_id: str
    kind: str
    pem: str
    not_after: datetime | None


def _new_keys(data: dict[str, Any], errors: list[FieldError]) -> list[_NewKey]:
    found: list[_NewKey] = []
    pem = _text(data, "public_key")
    key_id = _text(data, "public_key_id")
    if pem or key_id:
        if not pem:
            errors.append(FieldError("public_key", N_("Paste the WeChat Pay public key (pub_key.pem) that goes with this id.")))
        elif len(pem) > 10_000:
            errors.append(FieldError("public_key", N_("This is too long for a public key.")))
        else:
            try:
                pay.load_public_key(pem)
            except ValueError:
                errors.append(FieldError("public_key", N_("This is not a PEM RSA public key (-----BEGIN PUBLIC KEY-----).")))
        if not pay.PUBLIC_KEY_ID_RE.match(key_id):
            errors.append(FieldError("public_key_id", N_("The public key id starts with PUB_KEY_ID_ (merchant platform → API security).")))
        if not any(e.field in ("public_key", "public_key_id") for e in errors):
            found.append(_NewKey(key_id, "public_key", pem, None))
    cert_pem = _text(data, "platform_cert")
    if cert_pem:
        try:
            if len(cert_pem) > 20_000:
                raise ValueError("too long")
            cert = pay.load_platform_certificate(cert_pem)
        except ValueError:
            errors.append(FieldError("platform_cert", N_("This is not a PEM certificate with an RSA key (-----BEGIN CERTIFICATE-----).")))
        else:
            found.append(_NewKey(cert.serial, "platform_cert", cert_pem, cert.not_after))
    return found


async def do_link_pay(actor: Actor, tenant_id: int, data: dict[str, Any]) -> PayStatus:
    """Link (or change) the tenant's WeChat Pay merchant. `data`: mch_id, app_id, api_v3_key (blank keeps the
    saved one), and keys to add: public_key + public_key_id and/or platform_cert (PEM; the serial is read from
    the certificate). Keys already linked stay live until removed; a new mchid starts with only the new keys."""
    mchid, app_id, apiv3 = _text(data, "mch_id"), _text(data, "app_id"), _text(data, "api_v3_key")
    errors: list[FieldError] = []
    for name, problem in (("mch_id", _check_mchid(mchid)), ("app_id", check_app_id(app_id))):
        if problem:
            errors.append(FieldError(name, problem))
    new_keys = _new_keys(data, errors)
    async with db.transaction():
        await tenants.get_tenant(tenant_id)
        row = await db.fetchrow("SELECT id, mchid FROM commerce_pay_merchant WHERE tenant = $1 FOR UPDATE", tenant_id)
        if apiv3 and not pay.check_apiv3_key(apiv3):
            errors.append(FieldError("api_v3_key", N_("The APIv3 key is exactly 32 characters (merchant platform → API security).")))
        elif not apiv3 and row is None:
            errors.append(FieldError("api_v3_key", N_("This field is required.")))
        same_merchant = row is not None and row["mchid"] == mchid
        kept = 0
        if same_merchant:
            kept = int((await db.fetchrow("SELECT count(*) AS n FROM commerce_pay_key WHERE tenant = $1 AND merchant = $2",
                                          tenant_id, row["id"]))["n"])
        if not new_keys and not kept and not any(e.field in ("public_key", "public_key_id", "platform_cert")
                                                 for e in errors):
            errors.append(FieldError("public_key", N_("Add the WeChat Pay public key (with its id) or a platform certificate: Siyu checks every notification's signature with it.")))
        if errors:
            raise InvalidInput(errors)
        if row is None:
            created = await db.fetchrow(
                "INSERT INTO commerce_pay_merchant (tenant, mchid, app_id, apiv3_key_sealed, last_failure, "
                "last_failure_detail, created_at, updated_at) VALUES ($1, $2, $3, $4, '', '', now(), now()) "
                "RETURNING id", tenant_id, mchid, app_id, box().seal(apiv3, _context(tenant_id)))
            merchant_id = int(created["id"])
        else:
            merchant_id = int(row["id"])
            if not same_merchant:
                await db.execute("DELETE FROM commerce_pay_key WHERE tenant = $1 AND merchant = $2", tenant_id, merchant_id)
            # New credentials: what the page said about failures no longer holds.
            await db.execute(
                "UPDATE commerce_pay_merchant SET mchid = $2, app_id = $3, "
                "apiv3_key_sealed = COALESCE($4, apiv3_key_sealed), failing_since = NULL, last_failure = '', "
                "last_failure_detail = '', last_failure_at = NULL, updated_at = now() WHERE tenant = $1",
                tenant_id, mchid, app_id, box().seal(apiv3, _context(tenant_id)) if apiv3 else None)
        for k in new_keys:
            await db.execute(
                "INSERT INTO commerce_pay_key (tenant, merchant, key_id, kind, pem, not_after, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (tenant, key_id) DO UPDATE SET "
                "merchant = EXCLUDED.merchant, kind = EXCLUDED.kind, pem = EXCLUDED.pem, not_after = EXCLUDED.not_after",
                tenant_id, merchant_id, k.key_id, k.kind, k.pem, k.not_after)
        await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))
        await record_audit(actor, tenant_id, "pay.linked" if row is None else "pay.updated", "pay_merchant", merchant_id,
                           {"mchid": mchid, "app_id": app_id, "api_v3_key_changed": bool(apiv3),
                            "keys_added": [k.key_id for k in new_keys]})
    forget_configs()
    result = await status(tenant_id)
    assert result is not None
    return result


async def do_remove_key(actor: Actor, tenant_id: int, key_id: str) -> None:
    """Stop accepting notifications signed by this key (WeChat has moved the merchant off it)."""
    async with db.transaction():
        left = await db.fetchrow("SELECT count(*) AS n FROM commerce_pay_key WHERE tenant = $1", tenant_id)
        row = await db.fetchrow("DELETE FROM commerce_pay_key WHERE tenant = $1 AND key_id = $2 RETURNING id",
                                tenant_id, key_id)
        if row is None:
            raise NotFound()
        if int(left["n"]) <= 1:
            raise InvalidInput.one("key_id", N_("This is the merchant's last key: add the new one before removing it."))
        await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))
        await record_audit(actor, tenant_id, "pay.key_removed", "pay_key", row["id"], {"key_id": key_id})
    forget_configs()


async def do_unlink_pay(actor: Actor, tenant_id: int) -> None:
    async with db.transaction():
        row = await db.fetchrow("DELETE FROM commerce_pay_merchant WHERE tenant = $1 RETURNING id, mchid", tenant_id)
        if row is None:
            raise NotFound()
        await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))
        await record_audit(actor, tenant_id, "pay.unlinked", "pay_merchant", row["id"], {"mchid": row["mchid"]})
    forget_configs()


async def do_rotate_secrets() -> tuple[int, int]:
    """Re-seal every APIv3 key under the current secret key (`siyu secrets rotate`): (rotated, current)."""
    b = box()
    rotated = current = 0
    async with db.transaction():
        for row in await db.fetch("SELECT tenant, apiv3_key_sealed FROM commerce_pay_merchant FOR UPDATE"):
            sealed = row["apiv3_key_sealed"]
            if not b.needs_rotation(sealed):
                current += 1
                continue
            ctx = _context(int(row["tenant"]))
            await db.execute("UPDATE commerce_pay_merchant SET apiv3_key_sealed = $2 WHERE tenant = $1",
                             row["tenant"], b.seal(b.open(sealed, ctx), ctx))
            rotated += 1
    return rotated, current


# --- the channels page's section ------------------------------------------------------------------------------

async def panel(tenant_id: int, slug: str, values: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None) -> dict[str, Any]:
    """What the WeChat Pay section of the settings pages shows (commerce/_pay.html): the merchant's status,
    the notify_url, and a form's values and errors. Secrets never enter `values`."""
    from siyu.core.settings import get_settings

    channels = await tenants.list_channels(tenant_id)
    safe = {k: v for k, v in (values or {}).items() if k != "api_v3_key"}
    return {"status": await status(tenant_id), "notify_url": notify_url(get_settings().public_base_url, slug),
            "mp_app_id": channels["mp"].app_id if "mp" in channels else "", "values": safe, "errors": errors or {}}
