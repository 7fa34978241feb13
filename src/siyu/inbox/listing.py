"""Conversations of a tenant in keyset pages by status (the JSON API: the key sees the whole tenant).

NOTE: this file was accidentally overwritten by the inbox-UI helper and rebuilt from what `api.py` and
tests/integration/inbox/test_api.py use; its author may want to put their own version back.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.inbox.conversations import CONVERSATION_COLUMNS, CONVERSATION_FROM, STATUSES

PAGE_SIZE = 25
MAX_PAGE = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KIND = "l"  # list cursors; other cursor kinds (e.g. "q." for queue pages) are refused here


@dataclass(frozen=True)
class Page:
    conversations: list[dict[str, Any]]
    next_cursor: str | None


def _encode(row: dict[str, Any]) -> str:
    at = row["last_message_at"]
    raw = f"{_KIND}.{(at - EPOCH) // timedelta(microseconds=1) if at else ''}.{row['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, micros, ident = raw.split(".")
        if kind != _KIND:
            raise ValueError(kind)
        at = EPOCH + timedelta(microseconds=int(micros)) if micros else None
        return at, int(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput.one("cursor", N_("This page link is broken; start from the first page.")) from exc


async def list_by_status(tenant_id: int, status: str | None, cursor: str | None = None,
                         limit: int = PAGE_SIZE) -> Page:
    """Newest message first (conversations without a message yet first, as the index orders them)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput.one("status", N_("Choose one of: {choices}."), choices=", ".join(STATUSES))
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_PAGE)
    args: list[Any] = [tenant_id]
    where = ["c.tenant = $1"]
    if status is not None:
        args.append(status)
        where.append(f"c.status = ${len(args)}")
    if cursor:
        at, ident = _decode(cursor)
        args.append(ident)
        if at is None:
            where.append(f"((c.last_message_at IS NULL AND c.id < ${len(args)}) OR c.last_message_at IS NOT NULL)")
        else:
            args.append(at)
            where.append(f"(c.last_message_at, c.id) < (${len(args)}, ${len(args) - 1})")
    args.append(limit + 1)
    rows = [dict(r) for r in await db.fetch(
        f"SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} WHERE {' AND '.join(where)} "
        f"ORDER BY c.last_message_at DESC, c.id DESC LIMIT ${len(args)}", *args)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode(rows[-1]) if more and rows else None)
