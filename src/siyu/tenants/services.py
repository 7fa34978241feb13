"""Tenants, linked WeChat accounts, API keys and the audit log.

Reads take `tenant_id` first and scope by it; `do_*` writes run in one transaction and write their
audit row inside it. A row of another tenant raises the same NotFound as a missing one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.core import db, effects
from siyu.core.clock import now
from siyu.core.crypto import box, mask, sha256_hex
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.tenants import validation as v
from siyu.tenants.tables import ApiKey, AuditLog, ChannelAccount, Tenant

CHANNEL_KINDS = ("oa", "mp", "wecom")


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in staff member, the CLI, or an API key."""

    staff_id: int | None
    label: str
    ip: str = ""

    @classmethod
    def cli(cls) -> Actor:
        return cls(None, "cli")


# --- audit -------------------------------------------------------------------------------------

async def record_audit(
    actor: Actor,
    tenant_id: int | None,
    action: str,
    target_type: str = "",
    target_id: object = "",
    changes: dict[str, Any] | None = None,
) -> None:
    await AuditLog.insert(
        AuditLog(
            tenant=tenant_id,
            actor=actor.staff_id,
            actor_label=actor.label,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            changes=changes or {},
            ip=actor.ip,
        )
    )


# --- tenants -----------------------------------------------------------------------------------

async def list_tenants() -> list[dict[str, Any]]:
    rows = await Tenant.select().order_by(Tenant.created_at, ascending=False)
    counts = await ChannelAccount.select(ChannelAccount.tenant, ChannelAccount.kind)
    linked: dict[int, list[str]] = {}
    for c in counts:
        linked.setdefault(c["tenant"], []).append(c["kind"])
    for r in rows:
        r["linked"] = sorted(linked.get(r["id"], []), key=CHANNEL_KINDS.index)
    return rows


async def get_tenant(tenant_id: int) -> Tenant:
    tenant = await Tenant.objects().where(Tenant.id == tenant_id).first()
    if tenant is None:
        raise NotFound()
    return tenant


async def get_tenant_by_slug(slug: str) -> Tenant:
    tenant = await Tenant.objects().where(Tenant.slug == slug).first()
    if tenant is None:
        raise NotFound()
    return tenant


TENANT_FIELDS: dict[str, v.Checker] = {
    "slug": v.check_slug,
    "name": v.check_name,
    "timezone": v.check_timezone,
    "locale": v.check_locale,
}


async def do_create_tenant(actor: Actor, data: dict[str, Any]) -> Tenant:
    data = {"timezone": "Asia/Shanghai", "locale": "zh_CN", **{k: val for k, val in data.items() if val}}
    clean = v.validate(TENANT_FIELDS, data)
    async with db.transaction():
        if await Tenant.exists().where(Tenant.slug == clean["slug"]):
            raise InvalidInput.one("slug", v.N_("A tenant with this slug already exists."))
        tenant = Tenant(
            slug=clean["slug"], name=clean["name"].strip(), timezone=clean["timezone"], locale=clean["locale"],
            open_platform_bound=bool(data.get("open_platform_bound")),
        )
        await tenant.save()
        await record_audit(actor, tenant.id, "tenant.created", "tenant", tenant.id,
                           {"slug": tenant.slug, "name": tenant.name})
    return tenant


async def do_update_tenant(actor: Actor, tenant_id: int, data: dict[str, Any]) -> Tenant:
    rules = {k: TENANT_FIELDS[k] for k in ("name", "timezone", "locale")}
    clean = v.validate(rules, data)
    async with db.transaction():
        tenant = await get_tenant(tenant_id)
        before = {"name": tenant.name, "timezone": tenant.timezone, "locale": tenant.locale,
                  "open_platform_bound": tenant.open_platform_bound}
        tenant.name = clean["name"].strip()
        tenant.timezone = clean["timezone"]
        tenant.locale = clean["locale"]
        tenant.open_platform_bound = bool(data.get("open_platform_bound"))
        await tenant.save()
        after = {"name": tenant.name, "timezone": tenant.timezone, "locale": tenant.locale,
                 "open_platform_bound": tenant.open_platform_bound}
        changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        if changed:
            await record_audit(actor, tenant.id, "tenant.updated", "tenant", tenant.id, changed)
    return tenant


async def do_set_tenant_status(actor: Actor, tenant_id: int, status: str) -> Tenant:
    if status not in ("active", "suspended"):
        raise InvalidInput.one("status", v.N_("Choose one of: {choices}."), choices="active, suspended")
    async with db.transaction():
        tenant = await get_tenant(tenant_id)
        if tenant.status != status:
            await Tenant.update({Tenant.status: status}).where(Tenant.id == tenant_id)
            action = "tenant.suspended" if status == "suspended" else "tenant.reactivated"
            await record_audit(actor, tenant_id, action, "tenant", tenant_id,
                               {"status": [tenant.status, status]})
            await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))
            if status == "active":
                # What waited while suspended (callbacks stored unprocessed, held sends), after commit. The
                # job is the wechat domain's, enqueued by name (tenants sits below wechat); the sweeper
                # hands it all over too, should this job be lost.
                await effects.enqueue("wechat.resume_tenant", tenant_id,
                                      job_id=f"wechat.resume:{tenant_id}:{now().timestamp():.6f}")
            tenant.status = status
    return tenant


# --- linked WeChat accounts ----------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelView:
    """What pages and the API may see of a linked account: secrets only masked, and of the callback Token
    only whether it is set (`do_reveal_secrets` gives it to a tenant admin who re-enters their password)."""

    id: int
    kind: str
    app_id: str
    oa_kind: str | None
    message_mode: str
    push_format: str
    original_id: str | None
    agent_id: str | None
    kf_enabled: bool
    token_set: bool
    secret_masked: str
    aes_key_masked: str
    last_check_at: datetime | None
    last_check_ok: bool | None
    last_check_code: int | None
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["last_check_at"] = self.last_check_at.isoformat() if self.last_check_at else None
        d["updated_at"] = self.updated_at.isoformat()
        return d


@dataclass(frozen=True)
class ChannelCredentials:
    """Decrypted credentials, for the WeChat package only; never rendered or logged."""

    tenant_id: int
    kind: str
    app_id: str
    secret: str
    token: str
    aes_key: str
    message_mode: str
    push_format: str
    agent_id: str | None

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"ChannelCredentials(tenant_id={self.tenant_id}, kind={self.kind!r}, app_id={self.app_id!r})"


def _context(tenant_id: int, kind: str, column: str) -> str:
    # Bind each ciphertext to its tenant, account kind and column.
    return f"channel_account:{tenant_id}:{kind}:{column}"


def _masked_secret(row: ChannelAccount) -> str:
    """Bullets and the last four characters, read by decrypting: no part of a secret is stored in clear."""
    tid = row.tenant if isinstance(row.tenant, int) else row.tenant.id
    return mask(box().open(row.secret_encrypted, _context(tid, row.kind, "secret")))


def _view(row: ChannelAccount) -> ChannelView:
    return ChannelView(
        id=row.id, kind=row.kind, app_id=row.app_id, oa_kind=row.oa_kind, message_mode=row.message_mode,
        push_format=row.push_format, original_id=row.original_id, agent_id=row.agent_id,
        kf_enabled=row.kf_enabled, token_set=bool(row.token_encrypted),
        secret_masked=_masked_secret(row), aes_key_masked="•" * 8,
        last_check_at=row.last_check_at, last_check_ok=row.last_check_ok, last_check_code=row.last_check_code,
        updated_at=row.updated_at,
    )


async def list_channels(tenant_id: int) -> dict[str, ChannelView]:
    rows = await ChannelAccount.objects().where(ChannelAccount.tenant == tenant_id)
    return {r.kind: _view(r) for r in rows}


async def get_channel(tenant_id: int, kind: str) -> ChannelView:
    row = await _channel_row(tenant_id, kind)
    return _view(row)


async def _channel_row(tenant_id: int, kind: str) -> ChannelAccount:
    if kind not in CHANNEL_KINDS:
        raise NotFound()
    row = await ChannelAccount.objects().where(
        (ChannelAccount.tenant == tenant_id) & (ChannelAccount.kind == kind)
    ).first()
    if row is None:
        raise NotFound()
    return row


async def channel_credentials(tenant_id: int, kind: str) -> ChannelCredentials:
    row = await _channel_row(tenant_id, kind)
    b = box()
    return ChannelCredentials(
        tenant_id=tenant_id, kind=kind, app_id=row.app_id,
        secret=b.open(row.secret_encrypted, _context(tenant_id, kind, "secret")),
        token=_open_token(row),
        aes_key=b.open(row.aes_key_encrypted, _context(tenant_id, kind, "aes_key")),
        message_mode=row.message_mode, push_format=row.push_format, agent_id=row.agent_id,
    )


@dataclass(frozen=True)
class ApiCredentials:
    """What calling WeChat's API as an account takes (no callback Token or AES key); never logged."""

    app_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ApiCredentials(app_id={self.app_id!r})"


_OPENED_MAX = 1024
_opened: dict[tuple[str, str], str] = {}  # (sealed secret, context) → the secret: opened once per process


async def api_credentials(tenant_id: int, kind: str) -> ApiCredentials:
    """The app id and secret of a tenant's linked account, for each call to WeChat's API: one lean read every
    time, so a link, unlink or new secret takes effect at once in every process; the sealed secret is opened
    once per process (a send would otherwise pay for a full row read and three decryptions). NotFound when
    the account is not linked."""
    if kind not in CHANNEL_KINDS:
        raise NotFound()
    row = await db.fetchrow("SELECT app_id, secret_encrypted FROM channel_account WHERE tenant = $1 AND kind = $2",
                            tenant_id, kind)
    if row is None:
        raise NotFound()
    key = (str(row["secret_encrypted"]), _context(tenant_id, kind, "secret"))
    secret = _opened.get(key)
    if secret is None:
        secret = box().open(*key)
        if len(_opened) >= _OPENED_MAX:
            _opened.clear()
        _opened[key] = secret
    return ApiCredentials(str(row["app_id"]), secret)


def _open_token(row: ChannelAccount) -> str:
    tid = row.tenant if isinstance(row.tenant, int) else row.tenant.id
    return box().open(row.token_encrypted, _context(tid, row.kind, "token")) if row.token_encrypted else ""


async def do_reveal_secrets(actor: Actor, tenant_id: int, kind: str) -> tuple[str, str]:
    """(Token, EncodingAESKey) in clear, for the tenant admin who pastes them into the WeChat console again
    and has just re-entered their password (the view checks it). Audited, without the values."""
    async with db.transaction():
        row = await _channel_row(tenant_id, kind)
        aes_key = box().open(row.aes_key_encrypted, _context(tenant_id, kind, "aes_key"))
        await record_audit(actor, tenant_id, f"channel.{kind}.revealed", "channel_account", row.id,
                           {"app_id": row.app_id})
    return _open_token(row), aes_key


def generate_token() -> str:
    """A callback Token to paste into the WeChat console (3–32 letters and digits)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def generate_aes_key() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(43))


def validate_channel(kind: str, data: dict[str, Any], existing: bool) -> dict[str, str]:
    """Validate a link form. When the account exists, blank secrets mean "keep the stored ones"."""
    rules = v.CHANNEL_FIELDS[kind]
    secret_field = "secret" if kind == "wecom" else "app_secret"
    optional = ("original_id",) + ((secret_field, "aes_key", "token") if existing else ())
    defaults = {"oa": {"mode": "safe", "oa_kind": "service"}, "mp": {"push_format": "xml"}, "wecom": {}}[kind]
    merged = {**defaults, **{k: val for k, val in data.items() if val not in (None, "")}}
    return v.validate(rules, merged, optional=optional)


async def do_link_channel(actor: Actor, tenant_id: int, kind: str, data: dict[str, Any]) -> ChannelView:
    """Add or replace the tenant's account of `kind` (oa | mp | wecom)."""
    if kind not in CHANNEL_KINDS:
        raise NotFound()
    async with db.transaction():
        await get_tenant(tenant_id)
        row = await ChannelAccount.objects().where(
            (ChannelAccount.tenant == tenant_id) & (ChannelAccount.kind == kind)
        ).first()
        clean = validate_channel(kind, data, existing=row is not None)
        app_id = clean["corp_id"] if kind == "wecom" else clean["app_id"]
        secret = clean["secret"] if kind == "wecom" else clean["app_secret"]
        b = box()
        created = row is None
        if row is None:
            row = ChannelAccount(tenant=tenant_id, kind=kind, created_at=now())
        previous_app_id = None if created else row.app_id
        previous_mode = None if created else row.message_mode
        previous_aes_key = None if created else b.open(row.aes_key_encrypted, _context(tenant_id, kind, "aes_key"))
        # An existing account's Token left empty is kept, like its secrets.
        token_changed = created or (bool(clean["token"]) and _open_token(row) != clean["token"])
        row.app_id = app_id
        if token_changed:
            row.token_encrypted = b.seal(clean["token"], _context(tenant_id, kind, "token"))
        if kind == "oa":
            row.oa_kind = clean["oa_kind"]
            row.message_mode = clean["mode"]
        elif kind == "mp":
            row.push_format = clean["push_format"]
            row.message_mode = "safe"
        else:
            row.agent_id = clean["agent_id"]
            row.kf_enabled = str(data.get("kf_enabled") or "").lower() in ("1", "true", "on", "yes")
            row.message_mode = "safe"  # WeCom callbacks are always encrypted
        row.original_id = clean.get("original_id") or None
        secrets_changed = []
        if secret:
            row.secret_encrypted = b.seal(secret, _context(tenant_id, kind, "secret"))
            secrets_changed.append("secret")
        if clean["aes_key"]:
            row.aes_key_encrypted = b.seal(clean["aes_key"], _context(tenant_id, kind, "aes_key"))
            secrets_changed.append("aes_key")
        if app_id != previous_app_id or secrets_changed:
            # New credentials: the last connection check no longer says anything.
            row.last_check_at = None
            row.last_check_ok = None
            row.last_check_code = None
        callback_changed = (app_id != previous_app_id or token_changed or row.message_mode != previous_mode
                            or (bool(clean["aes_key"]) and clean["aes_key"] != previous_aes_key))
        if callback_changed:
            # New callback settings: WeChat has to check the URL with them (the console's "submit") again.
            row.url_check_at = None
            row.url_check_outcome = ""
        row.updated_at = now()
        await row.save()
        changes: dict[str, Any] = {"app_id": app_id, "secrets_changed": secrets_changed, "token_changed": token_changed}
        for key in ("oa_kind", "message_mode", "push_format", "original_id", "agent_id", "kf_enabled"):
            changes[key] = getattr(row, key)
        await record_audit(actor, tenant_id, f"channel.{kind}.{'linked' if created else 'updated'}",
                           "channel_account", row.id, changes)
        await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))
    return _view(row)


async def do_unlink_channel(actor: Actor, tenant_id: int, kind: str) -> None:
    async with db.transaction():
        row = await _channel_row(tenant_id, kind)
        await ChannelAccount.delete().where(
            (ChannelAccount.id == row.id) & (ChannelAccount.tenant == tenant_id)
        )
        await record_audit(actor, tenant_id, f"channel.{kind}.unlinked", "channel_account", row.id,
                           {"app_id": row.app_id})
        await db.notify(db.ACCOUNTS_CHANGED, str(tenant_id))


async def do_record_check(actor: Actor, tenant_id: int, kind: str, ok: bool, code: int | None) -> None:
    async with db.transaction():
        row = await _channel_row(tenant_id, kind)
        await ChannelAccount.update({
            ChannelAccount.last_check_at: now(), ChannelAccount.last_check_ok: ok,
            ChannelAccount.last_check_code: code,
        }).where((ChannelAccount.id == row.id) & (ChannelAccount.tenant == tenant_id))
        await record_audit(actor, tenant_id, f"channel.{kind}.checked", "channel_account", row.id,
                           {"ok": ok, "errcode": code})


def callback_url(public_base_url: str, slug: str, kind: str) -> str:
    return f"{public_base_url}/wechat/{slug}/{kind}"


# --- secrets rotation ------------------------------------------------------------------------------

SEALED_COLUMNS = ("secret", "aes_key", "token")  # `<column>_encrypted` on channel_account


async def do_rotate_secrets() -> tuple[int, int]:
    """Re-seal every stored secret under the current key. Returns (rotated, already current)."""
    b = box()
    rotated = current = 0
    async with db.transaction():
        rows = await ChannelAccount.objects().lock_rows("UPDATE")
        for row in rows:
            tid = row.tenant if isinstance(row.tenant, int) else row.tenant.id
            changed = False
            for column in SEALED_COLUMNS:
                attr = f"{column}_encrypted"
                sealed = getattr(row, attr)
                if sealed and b.needs_rotation(sealed):
                    ctx = _context(tid, row.kind, column)
                    setattr(row, attr, b.seal(b.open(sealed, ctx), ctx))
                    changed = True
            if changed:
                await row.save([ChannelAccount.secret_encrypted, ChannelAccount.aes_key_encrypted,
                                ChannelAccount.token_encrypted])
                rotated += 1
            else:
                current += 1
        if rotated:
            await record_audit(Actor.cli(), None, "secrets.rotated", "", "", {"accounts": rotated})
            await db.notify(db.ACCOUNTS_CHANGED, "")
    return rotated, current


# --- API keys ------------------------------------------------------------------------------------

API_KEY_PREFIX = "siyu_"


async def list_api_keys(tenant_id: int) -> list[dict[str, Any]]:
    return await ApiKey.select(
        ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.created_at, ApiKey.last_used_at, ApiKey.revoked_at,
        ApiKey.created_by.email.as_alias("created_by_email"),
    ).where(ApiKey.tenant == tenant_id).order_by(ApiKey.created_at, ascending=False)


async def do_create_api_key(actor: Actor, tenant_id: int, name: str) -> tuple[int, str]:
    """Returns (id, key). The key is shown once; only its hash is stored."""
    name = name.strip()
    if len(name) > 80:
        raise InvalidInput.one("name", v.N_("Use at most 80 characters."))
    prefix = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    async with db.transaction():
        await get_tenant(tenant_id)
        row = ApiKey(tenant=tenant_id, name=name, prefix=prefix, key_hash=sha256_hex(key),
                     created_by=actor.staff_id)
        await row.save()
        await record_audit(actor, tenant_id, "api_key.created", "api_key", row.id, {"name": name, "prefix": prefix})
    return row.id, key


async def do_revoke_api_key(actor: Actor, tenant_id: int, key_id: int) -> None:
    async with db.transaction():
        row = await ApiKey.objects().where((ApiKey.id == key_id) & (ApiKey.tenant == tenant_id)).first()
        if row is None:
            raise NotFound()
        if row.revoked_at is not None:
            raise Conflict(v.N_("This key is already revoked."))
        await ApiKey.update({ApiKey.revoked_at: now()}).where(ApiKey.id == key_id)
        await record_audit(actor, tenant_id, "api_key.revoked", "api_key", key_id, {"prefix": row.prefix})


async def authenticate_api_key(key: str) -> tuple[int, int] | None:
    """(tenant_id, key_id) for a valid, unrevoked key of an active tenant; None otherwise."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix = key[len(API_KEY_PREFIX):].split("_", 1)[0]
    row = await ApiKey.select(ApiKey.id, ApiKey.tenant, ApiKey.key_hash, ApiKey.revoked_at,
                              ApiKey.tenant.status.as_alias("tenant_status")).where(ApiKey.prefix == prefix).first()
    if row is None or row["revoked_at"] is not None or row["tenant_status"] != "active":
        return None
    from siyu.core.crypto import constant_time_equals

    if not constant_time_equals(row["key_hash"], sha256_hex(key)):
        return None
    await ApiKey.update({ApiKey.last_used_at: now()}).where(ApiKey.id == row["id"])
    return row["tenant"], row["id"]
