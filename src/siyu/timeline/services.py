"""The unified timeline: append-only, idempotent by source key, newest first with an opaque cursor.

`append` is what every domain calls. The other writers (`move_*`, `erase_personal`, `insert_locked`)
are for callers that hold the contact locks themselves: the contacts domain's merges and erasures, and
`insert_locked_sql` for routing, which writes an assignment's event in the statement that assigns.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.contacts.live import lock_identity_contact, lock_live
from siyu.core import db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_

KINDS = ("followed", "unfollowed", "message_in", "message_out", "menu_click", "scan", "mp_login", "purchase",
         "wecom_added", "wecom_removed", "handoff", "assignment", "resolution", "broadcast_sent",
         "broadcast_skipped", "broadcast_failed", "note", "merged", "unmerged", "refund")
CHANNELS = ("oa", "mp", "wecom", "siyu")  # siyu: made inside the CRM (notes, merges, assignments)
# What the person did (not what was done to them): these move the contact's last interaction.
INTERACTIONS = frozenset({"followed", "message_in", "menu_click", "scan", "mp_login", "purchase", "wecom_added"})
# Payload keys that say nothing about the person; an erasure keeps only these.
NON_PERSONAL = frozenset({"msg_type", "scene", "key", "state", "user_id", "change_type", "source", "origin",
                          "open_kfid", "merge_id", "survivor", "merged", "reason"})
MAX_PAGE = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    id: int
    contact_id: int
    identity_id: int | None
    occurred_at: datetime
    kind: str
    channel: str
    payload: dict[str, Any]
    source_key: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "contact_id": self.contact_id, "occurred_at": self.occurred_at.isoformat(),
                "kind": self.kind, "channel": self.channel, "payload": self.payload}


@dataclass(frozen=True)
class Page:
    events: list[Event]
    next_cursor: str | None  # None: this is the last page


def _check(kind: str, channel: str, source_key: str) -> None:
    if kind not in KINDS:
        raise InvalidInput.one("kind", N_("Choose one of: {choices}."), choices=", ".join(KINDS))
    if channel not in CHANNELS:
        raise InvalidInput.one("channel", N_("Choose one of: {choices}."), choices=", ".join(CHANNELS))
    if not source_key or len(source_key) > 200:
        raise InvalidInput.one("source_key", N_("Use 1 to {max} characters."), max=200)


async def append(tenant_id: int, contact_id: int | None, kind: str, channel: str, occurred_at: datetime,
                 payload: dict[str, Any], source_key: str, identity_id: int | None = None) -> int | None:
    """Add one event; returns its id, or None when the source key was already there (a retried callback,
    a re-run job). With `identity_id` the event goes to the contact that identity belongs to now (an
    identity's events follow it through merges); otherwise to `contact_id`, or its survivor if merged."""
    _check(kind, channel, source_key)
    async with db.transaction():
        if identity_id is not None:
            live = await lock_identity_contact(tenant_id, identity_id)
        elif contact_id is not None:
            live = await lock_live(tenant_id, contact_id)
        else:
            raise InvalidInput.one("contact_id", N_("A contact or an identity is required."))
        event_id = await insert_locked(tenant_id, live, kind, channel, occurred_at, payload, source_key, identity_id)
        if event_id is not None and kind in INTERACTIONS:
            await db.execute(
                "UPDATE contact SET last_interaction_at = GREATEST(COALESCE(last_interaction_at, $3), $3), "
                "last_purchase_at = CASE WHEN $4 THEN GREATEST(COALESCE(last_purchase_at, $3), $3) "
                "ELSE last_purchase_at END WHERE tenant = $1 AND id = $2",
                tenant_id, live, occurred_at, kind == "purchase")
    return event_id


async def insert_locked(tenant_id: int, contact_id: int, kind: str, channel: str, occurred_at: datetime,
                        payload: dict[str, Any], source_key: str, identity_id: int | None = None) -> int | None:
    """The INSERT behind `append`, for callers that already hold the contact's lock (merges)."""
    sql, args = insert_locked_sql(1, tenant_id, contact_id, kind, channel, occurred_at, payload, source_key,
                                  identity_id)
    row = await db.fetchrow(sql, *args)
    return int(row["id"]) if row else None


async def revise_payload(tenant_id: int, source_key: str, payload: dict[str, Any]) -> bool:
    """Replace the payload of the event with this source key, when its source learned more about what
    happened (a purchase's items reported after its payment). For callers that hold the event's contact
    lock. An erased payload stays erased. Returns whether anything changed."""
    status = await db.execute(
        "UPDATE timeline_event SET payload = $3::jsonb WHERE tenant = $1 AND source_key = $2 "
        "AND NOT payload ? 'erased' AND payload IS DISTINCT FROM $3::jsonb",
        tenant_id, source_key, json.dumps(payload, ensure_ascii=False))
    return status.split()[-1] != "0"


def insert_locked_sql(first_param: int, tenant_id: int, contact_id: int, kind: str, channel: str,
                      occurred_at: datetime, payload: dict[str, Any], source_key: str, identity_id: int | None = None,
                      only_if: str = "TRUE") -> tuple[str, list[Any]]:
    """`insert_locked` as SQL and its arguments (numbered from `first_param`), for a caller that holds the
    contact's lock and writes the event in the same statement as its own rows (a WITH clause): routing.
    `only_if` is a condition that must hold for the event to be written (the caller's re-check that the
    identity still belongs to the locked contact)."""
    _check(kind, channel, source_key)
    p = first_param
    sql = ("INSERT INTO timeline_event (tenant, contact, identity, occurred_at, kind, channel, payload, source_key, "
           f"created_at) SELECT ${p}, ${p + 1}, ${p + 2}, ${p + 3}, ${p + 4}, ${p + 5}, ${p + 6}::jsonb, ${p + 7}, "
           f"now() WHERE {only_if} ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id")
    return sql, [tenant_id, contact_id, identity_id, occurred_at, kind, channel,
                 json.dumps(payload, ensure_ascii=False), source_key]


async def insert_many(tenant_id: int, kind: str, source_sql: str, *args: Any) -> int:
    """Many events of one kind at once, for a writer that holds the contacts' locks and attaches history in
    bulk (a purchase import). `source_sql` is the caller's SELECT of `contact, identity, occurred_at,
    channel, payload (jsonb), source_key` over its own tables, with its parameters from `$2` (`$1` is the
    tenant). Idempotent by source key like `append`; interactions move their contacts' last interaction
    (and a purchase the last purchase) in the same statement. Returns how many events were new."""
    _check(kind, "siyu", "bulk")
    row = await db.fetchrow(
        f"""WITH new AS (
            INSERT INTO timeline_event (tenant, contact, identity, occurred_at, kind, channel, payload, source_key,
                created_at)
            SELECT $1, s.contact, s.identity, s.occurred_at, '{kind}', s.channel, s.payload, s.source_key, now()
            FROM ({source_sql}) AS s
            ON CONFLICT (tenant, source_key) DO NOTHING
            RETURNING contact, occurred_at
        ), latest AS (
            SELECT contact, max(occurred_at) AS at FROM new GROUP BY contact
        ), touched AS (
            UPDATE contact c SET last_interaction_at = GREATEST(c.last_interaction_at, l.at),
                last_purchase_at = CASE WHEN {kind == "purchase"} THEN GREATEST(c.last_purchase_at, l.at)
                                   ELSE c.last_purchase_at END
            FROM latest l WHERE {kind in INTERACTIONS} AND c.tenant = $1 AND c.id = l.contact
                AND (c.last_interaction_at IS NULL OR c.last_interaction_at < l.at
                     OR ({kind == "purchase"} AND (c.last_purchase_at IS NULL OR c.last_purchase_at < l.at)))
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM new) AS n""", tenant_id, *args)
    return int(row["n"])


# --- merges and erasure (the contacts domain holds the locks) ------------------------------------------

async def move_all(tenant_id: int, from_contact: int, to_contact: int) -> list[int]:
    rows = await db.fetch("UPDATE timeline_event SET contact = $3 WHERE tenant = $1 AND contact = $2 RETURNING id",
                          tenant_id, from_contact, to_contact)
    return sorted(int(r["id"]) for r in rows)


async def move_back(tenant_id: int, from_contact: int, to_contact: int, event_ids: Sequence[int],
                    identity_ids: Sequence[int]) -> list[int]:
    """Undo `move_all`: the events that moved, and those that arrived since through the identities that
    go back."""
    rows = await db.fetch(
        "UPDATE timeline_event SET contact = $3 WHERE tenant = $1 AND contact = $2 "
        "AND (id = ANY($4::bigint[]) OR identity = ANY($5::int[])) RETURNING id",
        tenant_id, from_contact, to_contact, list(event_ids), list(identity_ids))
    return sorted(int(r["id"]) for r in rows)


async def _erase_where(column: str, tenant_id: int, value: int) -> int:
    status = await db.execute(
        "UPDATE timeline_event SET payload = COALESCE((SELECT jsonb_object_agg(key, value) FROM "
        "jsonb_each(payload) WHERE key = ANY($3::text[])), '{}'::jsonb) || '{\"erased\": true}'::jsonb "
        f"WHERE tenant = $1 AND {column} = $2 AND NOT payload ? 'erased'",
        tenant_id, value, sorted(NON_PERSONAL))
    return int(status.split()[-1])


async def erase_personal(tenant_id: int, identity_id: int) -> int:
    """Strip an identity's events down to their non-personal keys; the events themselves (kinds, times,
    channels: the counts) stay."""
    return await _erase_where("identity", tenant_id, identity_id)


async def erase_contact_personal(tenant_id: int, contact_id: int) -> int:
    """`erase_personal` for every event of a contact (notes and events made inside the CRM too): a
    data-subject erasure."""
    return await _erase_where("contact", tenant_id, contact_id)


# --- reading ----------------------------------------------------------------------------------------------

def encode_cursor(occurred_at: datetime, event_id: int) -> str:
    micros = (occurred_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, event_id = (int(part) for part in raw.split("."))
        return _EPOCH + timedelta(microseconds=micros), event_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidInput.one("cursor", N_("This cursor is not one Siyu gave out.")) from None


def _choices(values: Iterable[str] | None, allowed: tuple[str, ...], field: str) -> list[str] | None:
    if values is None:
        return None
    chosen = sorted(set(values))
    if not chosen or any(v not in allowed for v in chosen):
        raise InvalidInput.one(field, N_("Choose from: {choices}."), choices=", ".join(allowed))
    return chosen


async def get_event(tenant_id: int, contact_id: int, event_id: int) -> Event:
    """One event of a contact's timeline; another contact's or tenant's is NotFound like a missing one."""
    row = await db.fetchrow(
        "SELECT id, contact, identity, occurred_at, kind, channel, payload::text AS payload, source_key "
        "FROM timeline_event WHERE tenant = $1 AND contact = $2 AND id = $3", tenant_id, contact_id, event_id)
    if row is None:
        raise NotFound()
    return Event(int(row["id"]), int(row["contact"]), row["identity"], row["occurred_at"], row["kind"], row["channel"],
                 json.loads(row["payload"]), row["source_key"])


async def page(tenant_id: int, contact_id: int, cursor: str | None = None, limit: int = 50,
               channels: Iterable[str] | None = None, kinds: Iterable[str] | None = None) -> Page:
    """A contact's events, newest first; `next_cursor` continues after the last one."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_PAGE)
    channel_list = _choices(channels, CHANNELS, "channel")
    kind_list = _choices(kinds, KINDS, "kind")
    before = decode_cursor(cursor) if cursor else None
    if await db.fetchrow("SELECT 1 FROM contact WHERE tenant = $1 AND id = $2", tenant_id, contact_id) is None:
        raise NotFound()
    sql = ["SELECT id, contact, identity, occurred_at, kind, channel, payload::text AS payload, source_key "
           "FROM timeline_event WHERE tenant = $1 AND contact = $2"]
    args: list[Any] = [tenant_id, contact_id]
    if before is not None:
        args += list(before)
        sql.append(f"AND (occurred_at, id) < (${len(args) - 1}, ${len(args)})")
    if channel_list is not None:
        args.append(channel_list)
        sql.append(f"AND channel = ANY(${len(args)}::text[])")
    if kind_list is not None:
        args.append(kind_list)
        sql.append(f"AND kind = ANY(${len(args)}::text[])")
    args.append(limit + 1)
    sql.append(f"ORDER BY occurred_at DESC, id DESC LIMIT ${len(args)}")
    rows = await db.fetch(" ".join(sql), *args)
    events = [Event(int(r["id"]), int(r["contact"]), r["identity"], r["occurred_at"], r["kind"], r["channel"],
                    json.loads(r["payload"]), r["source_key"]) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(events, encode_cursor(events[-1].occurred_at, events[-1].id) if more else None)
