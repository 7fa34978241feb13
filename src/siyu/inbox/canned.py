"""Canned replies: texts a rep inserts by typing `/shortcut` in the composer. Tenant-wide ones (no owner)
are kept by managers and admins; personal ones by their owner alone. A personal shortcut may shadow a
tenant-wide one of the same name (the composer offers the personal one)."""

from __future__ import annotations

import re
from typing import Any

from asyncpg.exceptions import UniqueViolationError

from siyu.core import db
from siyu.core.errors import FieldError, Forbidden, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox.actions import REPLY_MAX
from siyu.inbox.conversations import Viewer
from siyu.tenants.services import Actor, record_audit

SHORTCUT_RE = re.compile(r"^[^\s/]{1,32}$")
TITLE_MAX = 80
SCOPES = ("personal", "tenant")


def _clean(data: dict[str, Any]) -> tuple[str, str, str]:
    errors: list[FieldError] = []
    shortcut = str(data.get("shortcut") or "").strip().lstrip("/")
    if not SHORTCUT_RE.match(shortcut):
        errors.append(FieldError("shortcut", N_("1 to 32 characters without spaces or “/”."), {}))
    title = " ".join(str(data.get("title") or "").split())
    if len(title) > TITLE_MAX:
        errors.append(FieldError("title", N_("Use 1 to {max} characters."), {"max": TITLE_MAX}))
    body = str(data.get("body") or "").strip()
    if not body or len(body) > REPLY_MAX or len(body.encode()) > 2048:
        errors.append(FieldError("body", N_("Write 1 to {max} characters (WeChat takes 2048 bytes)."),
                                 {"max": REPLY_MAX}))
    if errors:
        raise InvalidInput(errors)
    return shortcut, title, body


async def list_canned(tenant_id: int, staff_id: int) -> list[dict[str, Any]]:
    """The replies a rep can use: their own, then the tenant-wide ones, by shortcut."""
    rows = await db.fetch(
        "SELECT id, owner, shortcut, title, body, updated_at FROM inbox_canned_reply "
        "WHERE tenant = $1 AND (owner IS NULL OR owner = $2) ORDER BY owner IS NULL, lower(shortcut), id",
        tenant_id, staff_id)
    return [dict(r) for r in rows]


def composer_choices(replies: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One entry per shortcut (a personal one wins), for the composer's `/shortcut` expansion."""
    seen: dict[str, dict[str, str]] = {}
    for r in replies:  # personal ones come first
        seen.setdefault(r["shortcut"].lower(), {"shortcut": r["shortcut"], "title": r["title"], "body": r["body"]})
    return sorted(seen.values(), key=lambda r: r["shortcut"].lower())


async def expand_shortcut(tenant_id: int, staff_id: int, text: str) -> str:
    """A message that is exactly a known `/shortcut` (the composer's Ctrl+Enter came before the pick, or
    the page ran without JavaScript) is that reply's text, never the literal "/shortcut"; anything else
    stays as written."""
    word = (text or "").strip()
    if not word.startswith("/") or not SHORTCUT_RE.match(word[1:]):
        return text
    row = await db.fetchrow(
        "SELECT body FROM inbox_canned_reply WHERE tenant = $1 AND (owner IS NULL OR owner = $2) "
        "AND lower(shortcut) = lower($3) ORDER BY owner IS NULL LIMIT 1", tenant_id, staff_id, word[1:])
    return str(row["body"]) if row else text


async def get_canned(tenant_id: int, viewer: Viewer, canned_id: int) -> dict[str, Any]:
    """One reply the viewer may use (someone else's personal reply answers like a missing one)."""
    row = await db.fetchrow(
        "SELECT id, owner, shortcut, title, body, updated_at FROM inbox_canned_reply "
        "WHERE tenant = $1 AND id = $2 AND (owner IS NULL OR owner = $3)", tenant_id, canned_id, viewer.staff_id)
    if row is None:
        raise NotFound()
    return dict(row)


def can_edit(viewer: Viewer, row: dict[str, Any]) -> bool:
    return row["owner"] == viewer.staff_id or (row["owner"] is None and viewer.is_manager)


def _require_edit(viewer: Viewer, row: dict[str, Any]) -> None:
    if not can_edit(viewer, row):
        raise Forbidden(N_("Only managers and admins can change the replies everyone shares."))


async def _write(sql: str, *args: Any) -> Any:
    try:
        return await db.fetchrow(sql, *args)
    except UniqueViolationError:
        raise InvalidInput.one("shortcut", N_("This shortcut is taken; choose another one.")) from None


async def do_create_canned(tenant_id: int, viewer: Viewer, data: dict[str, Any], actor: Actor) -> int:
    shortcut, title, body = _clean(data)
    scope = str(data.get("scope") or "personal")
    if scope not in SCOPES:
        raise InvalidInput.one("scope", N_("Choose one of: {choices}."), choices=", ".join(SCOPES))
    owner = viewer.staff_id if scope == "personal" else None
    if owner is None and not viewer.is_manager:
        raise Forbidden(N_("Only managers and admins can change the replies everyone shares."))
    async with db.transaction():
        row = await _write(
            "INSERT INTO inbox_canned_reply (tenant, owner, shortcut, title, body, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, now(), now()) RETURNING id", tenant_id, owner, shortcut, title, body)
        await record_audit(actor, tenant_id, "inbox.canned.created", "canned_reply", row["id"],
                           {"shortcut": shortcut, "scope": scope})
    return int(row["id"])


async def do_update_canned(tenant_id: int, viewer: Viewer, canned_id: int, data: dict[str, Any],
                           actor: Actor) -> None:
    async with db.transaction():
        row = await get_canned(tenant_id, viewer, canned_id)
        _require_edit(viewer, row)
        shortcut, title, body = _clean(data)
        await _write("UPDATE inbox_canned_reply SET shortcut = $3, title = $4, body = $5, updated_at = now() "
                     "WHERE tenant = $1 AND id = $2 RETURNING id", tenant_id, canned_id, shortcut, title, body)
        await record_audit(actor, tenant_id, "inbox.canned.updated", "canned_reply", canned_id,
                           {"shortcut": [row["shortcut"], shortcut]})


async def do_delete_canned(tenant_id: int, viewer: Viewer, canned_id: int, actor: Actor) -> None:
    async with db.transaction():
        row = await get_canned(tenant_id, viewer, canned_id)
        _require_edit(viewer, row)
        await db.execute("DELETE FROM inbox_canned_reply WHERE tenant = $1 AND id = $2", tenant_id, canned_id)
        await record_audit(actor, tenant_id, "inbox.canned.deleted", "canned_reply", canned_id,
                           {"shortcut": row["shortcut"]})
