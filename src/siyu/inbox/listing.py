"""Conversations of a tenant in keyset pages, newest message first, optionally of one status: the JSON
API's list (an API key sees the whole tenant; the inbox pages list through `boxes.py`, in a viewer's scope).

Newest first is `last_message_at DESC, id DESC`; a conversation that never had a message sorts first, as
the index `inbox_conversation_recent (tenant, status, last_message_at DESC, id DESC)` orders NULLs. Without
a status filter each status is its own branch of a UNION ALL that reads its first rows from that index and
stops, so a page over 100,000 conversations reads at most a page per status instead of sorting them all.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.inbox.conversations import CONVERSATION_COLUMNS, CONVERSATION_FROM, STATUSES

PAGE_SIZE = 25
MAX_PAGE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORDER = "c.last_message_at DESC, c.id DESC"


@dataclass(frozen=True)
class Page:
    conversations: list[dict[str, Any]]
    next_cursor: str | None  # None: this is the last page


def encode_cursor(row: dict[str, Any]) -> str:
    at = row["last_message_at"]
    micros = "-" if at is None else str((at - _EPOCH) // timedelta(microseconds=1))
    return base64.urlsafe_b64encode(f"r.{micros}.{int(row['id'])}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, int]:
    try:
        kind, micros, last_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(".")
        if kind != "r":
            raise ValueError(kind)
        return (None if micros == "-" else _EPOCH + timedelta(microseconds=int(micros))), int(last_id)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidInput.one("cursor", N_("This cursor is not one Siyu gave out.")) from None


def list_query(tenant_id: int, status: str | None, cursor: str | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL of one page (`limit` + 1 rows, to know whether there is more) and its arguments."""
    args: list[Any] = [tenant_id, limit + 1]
    after = ""
    if cursor:
        at, last_id = decode_cursor(cursor)
        args.append(last_id)
        if at is None:
            after = " AND (c.last_message_at IS NOT NULL OR c.id < $3)"
        else:
            args.append(at)
            after = " AND (c.last_message_at, c.id) < ($4, $3)"
    branches = [f"(SELECT c.id FROM inbox_conversation c WHERE c.tenant = $1 AND c.status = '{s}'{after} "
                f"ORDER BY {_ORDER} LIMIT $2)" for s in ((status,) if status else STATUSES)]
    return (f"SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} WHERE c.tenant = $1 AND c.id IN "
            f"({' UNION ALL '.join(branches)}) ORDER BY {_ORDER} LIMIT $2", args)


async def list_by_status(tenant_id: int, status: str | None, cursor: str | None = None,
                         limit: int = PAGE_SIZE) -> Page:
    """One page (one query). `status` None: every status."""
    if status is not None and status not in STATUSES:
        raise InvalidInput.one("status", N_("Choose one of: {choices}."), choices=", ".join(STATUSES))
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_PAGE)
    sql, args = list_query(tenant_id, status, cursor, limit)
    rows = [dict(r) for r in await db.fetch(sql, *args)]
    page = rows[:limit]
    return Page(page, encode_cursor(page[-1]) if len(rows) > limit else None)
