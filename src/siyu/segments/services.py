"""Saved segments: create, change and delete them (audited), read them, and count or stream their members.

Counts are computed when asked, never stored: a segment is a question about the contacts as they are now.
Members come in pages keyed by contact id (ascending), so a broadcast can stream a whole audience with a
stable cursor while contacts keep changing. Every function takes `tenant_id` first and scopes every query by
it; another tenant's segment raises the same NotFound as a missing one, and another tenant's tag id in a
definition is an unknown tag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg.exceptions import QueryCanceledError, UniqueViolationError

from siyu.contacts.scope import EVERYONE, Scope, condition
from siyu.core import clock, db
from siyu.core.errors import Conflict, FieldError, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.segments.definition import CHANNELS, Definition, Params, linked, parse, where
from siyu.tenants.services import Actor, record_audit

NAME_MAX = 80
DESCRIPTION_MAX = 500
PAGE_SIZE = 50
MAX_PAGE = 500
SAMPLE_SIZE = 5
# A live count runs while someone edits filters: past this it is refused rather than left to pile up.
COUNT_TIMEOUT_MS = 10_000
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Segment:
    id: int
    name: str
    description: str
    definition: Definition
    created_by: str
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "definition": self.definition.as_json(), "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True)
class Breakdown:
    """How many contacts a definition selects, and how many of them are linked on each channel."""

    total: int
    oa: int
    mp: int
    wecom: int

    def share(self, channel: str) -> float:
        return getattr(self, channel) / self.total if self.total else 0.0


@dataclass(frozen=True)
class MemberPage:
    contacts: list[dict[str, Any]]  # id, display_name, avatar_url, unionid, erased_at, last_*_at, channels
    next_after: int | None  # pass back as `after_id`; None: this was the last page


# --- definitions -------------------------------------------------------------------------------------------

async def validate_definition(tenant_id: int, raw: Any) -> Definition:
    """`raw` checked in shape, then against the tenant: every tag must be one of its own."""
    definition = raw if isinstance(raw, Definition) else parse(raw)
    wanted = definition.tag_ids()
    if wanted:
        rows = await db.fetch("SELECT id FROM tag WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id,
                              sorted(wanted))
        known = {int(r["id"]) for r in rows}
        for name, ids in (("tags", definition.tags), ("exclude_tags", definition.exclude_tags)):
            if set(ids) - known:
                raise InvalidInput.one(name, N_("This is an unknown tag; reload the page and choose again."))
    return definition


def _clean_name(name: str) -> str:
    clean = " ".join((name or "").split())
    if not clean or len(clean) > NAME_MAX:
        raise InvalidInput.one("name", N_("Use 1 to {max} characters."), max=NAME_MAX)
    return clean


def _clean_description(description: str) -> str:
    clean = (description or "").strip()
    if len(clean) > DESCRIPTION_MAX:
        raise InvalidInput.one("description", N_("Use at most {max} characters."), max=DESCRIPTION_MAX)
    return clean


# --- reads -------------------------------------------------------------------------------------------------

_COLUMNS = "id, name, description, definition::text AS definition, created_by, created_at, updated_at"


def _segment(row: Any) -> Segment:
    return Segment(id=int(row["id"]), name=row["name"], description=row["description"],
                   definition=parse(json.loads(row["definition"])), created_by=row["created_by"],
                   created_at=row["created_at"], updated_at=row["updated_at"])


async def get_segment(tenant_id: int, segment_id: int) -> Segment:
    if not 0 < segment_id <= _INT_MAX:  # ids are 32-bit: a larger one names nothing (and must not reach asyncpg)
        raise NotFound()
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM segment WHERE tenant = $1 AND id = $2", tenant_id, segment_id)
    if row is None:
        raise NotFound()
    return _segment(row)


async def list_segments(tenant_id: int) -> list[Segment]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM segment WHERE tenant = $1 ORDER BY lower(name), id", tenant_id)
    return [_segment(r) for r in rows]


async def known_owners(tenant_id: int) -> list[dict[str, Any]]:
    """The WeCom UserIDs of reps who own live contacts now, with how many: the choices for the owner filter."""
    rows = await db.fetch(
        "SELECT o.staff_userid AS userid, count(DISTINCT o.contact) AS contacts FROM owner o "
        "WHERE o.tenant = $1 AND o.removed_at IS NULL GROUP BY o.staff_userid ORDER BY o.staff_userid", tenant_id)
    return [dict(r) for r in rows]


# --- counting and members -----------------------------------------------------------------------------------

async def _bounded(sql: str, *args: Any) -> list[Any]:
    """Run a counting query under a statement timeout (only in a transaction of its own: SET LOCAL must not
    leak into a caller's transaction)."""
    if db.in_transaction():
        return await db.fetch(sql, *args)
    try:
        async with db.transaction():
            await db.execute(f"SET LOCAL statement_timeout = {int(COUNT_TIMEOUT_MS)}")
            return await db.fetch(sql, *args)
    except QueryCanceledError:
        raise Conflict(N_("Counting this segment took too long. Try again, or narrow it down.")) from None


async def count(tenant_id: int, definition: Definition | dict[str, Any]) -> int:
    """How many live contacts the definition selects now."""
    d = await validate_definition(tenant_id, definition) if isinstance(definition, dict) else definition
    params = Params(tenant_id)
    rows = await _bounded(f"SELECT count(*) AS n FROM contact c WHERE {where(d, params, '$1', clock.now())}",
                          *params.values)
    return int(rows[0]["n"])


async def breakdown(tenant_id: int, definition: Definition | dict[str, Any]) -> Breakdown:
    """The count and, in the same scan, how many of those contacts are linked on each channel."""
    d = await validate_definition(tenant_id, definition) if isinstance(definition, dict) else definition
    params = Params(tenant_id)
    selects = where(d, params, "$1", clock.now())
    per_channel = ", ".join(f"count(*) FILTER (WHERE {linked(repr(ch))}) AS {ch}" for ch in CHANNELS)
    rows = await _bounded(f"SELECT count(*) AS total, {per_channel} FROM contact c WHERE {selects}", *params.values)
    r = rows[0]
    return Breakdown(int(r["total"]), int(r["oa"]), int(r["mp"]), int(r["wecom"]))


async def members_of(tenant_id: int, definition: Definition, after_id: int | None = None,
                     limit: int = PAGE_SIZE, scope: Scope = EVERYONE) -> MemberPage:
    """The definition's contacts with ids above `after_id` that `scope` may see (a rep on the pages; the
    API and broadcasts read the whole audience), lowest id first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_PAGE)
    params = Params(tenant_id)
    selects = where(definition, params, "$1", clock.now())
    seen = condition(scope, "c", params.values)
    if seen is not None:
        selects += f" AND {seen}"
    after = f" AND c.id > {params.add(after_id)}" if after_id is not None else ""
    take = params.add(limit + 1)
    rows = await db.fetch(
        "SELECT c.id, c.display_name, c.avatar_url, c.unionid, c.erased_at, c.first_seen_at, "
        "c.last_interaction_at, c.last_purchase_at, ARRAY(SELECT DISTINCT i.channel FROM identity i "
        "WHERE i.tenant = c.tenant AND i.contact = c.id AND i.erased_at IS NULL) AS channels "
        f"FROM contact c WHERE {selects}{after} ORDER BY c.id LIMIT {take}", *params.values)
    contacts = []
    for r in rows[:limit]:
        item = dict(r)
        item["channels"] = [ch for ch in CHANNELS if ch in (r["channels"] or [])]
        contacts.append(item)
    more = len(rows) > limit
    return MemberPage(contacts, int(contacts[-1]["id"]) if more else None)


async def members_among(tenant_id: int, definition: Definition, contact_ids: list[int]) -> set[int]:
    """Which of these contacts the definition selects now (the re-engagement engine's "left the segment")."""
    if not contact_ids:
        return set()
    params = Params(tenant_id)
    condition = where(definition, params, "$1", clock.now())
    among = params.add(sorted(set(contact_ids)))
    rows = await db.fetch(f"SELECT c.id FROM contact c WHERE {condition} AND c.id = ANY({among}::int[])",
                          *params.values)
    return {int(r["id"]) for r in rows}


async def members(tenant_id: int, segment_id: int, after_id: int | None = None,
                  limit: int = PAGE_SIZE, scope: Scope = EVERYONE) -> MemberPage:
    """A saved segment's members now, in pages keyed by contact id: feed `next_after` back as `after_id`
    until it is None. Each contact appears at most once across the pages of one pass."""
    segment = await get_segment(tenant_id, segment_id)
    return await members_of(tenant_id, segment.definition, after_id, limit, scope)


# --- writes ------------------------------------------------------------------------------------------------

async def _name_taken(tenant_id: int, name: str, except_id: int | None = None) -> bool:
    row = await db.fetchrow("SELECT 1 FROM segment WHERE tenant = $1 AND lower(name) = lower($2) "
                            "AND id IS DISTINCT FROM $3", tenant_id, name, except_id)
    return row is not None


_TAKEN = N_("A segment with this name already exists.")


async def _checked(tenant_id: int, name: str, description: str, definition: Definition | dict[str, Any],
                   segment_id: int | None = None) -> tuple[str, str, Definition]:
    """Name, description and definition, cleaned; or every mistake among them at once, each at its field."""
    errors: list[FieldError] = []
    clean = note = None
    try:
        clean = _clean_name(name)
    except InvalidInput as exc:
        errors += exc.errors
    try:
        note = _clean_description(description)
    except InvalidInput as exc:
        errors += exc.errors
    d = None
    try:
        d = await validate_definition(tenant_id, definition)
    except InvalidInput as exc:
        errors += exc.errors
    if clean is not None and await _name_taken(tenant_id, clean, segment_id):
        errors.insert(0, FieldError("name", _TAKEN))
    if errors:
        raise InvalidInput(errors)
    assert clean is not None and note is not None and d is not None
    return clean, note, d


async def do_create_segment(tenant_id: int, name: str, definition: Definition | dict[str, Any], actor: Actor,
                            description: str = "") -> int:
    clean, note, d = await _checked(tenant_id, name, description, definition)
    async with db.transaction():
        if await db.fetchrow("SELECT 1 FROM tenant WHERE id = $1", tenant_id) is None:
            raise NotFound()
        row = await db.fetchrow(
            "INSERT INTO segment (tenant, name, description, definition, created_by, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5, now(), now()) ON CONFLICT (tenant, lower(name)) DO NOTHING "
            "RETURNING id", tenant_id, clean, note, json.dumps(d.as_json()), actor.label[:254])
        if row is None:
            raise InvalidInput.one("name", _TAKEN)
        segment_id = int(row["id"])
        await record_audit(actor, tenant_id, "segment.created", "segment", segment_id,
                           {"name": clean, "definition": d.as_json()})
    return segment_id


async def do_update_segment(tenant_id: int, segment_id: int, name: str, definition: Definition | dict[str, Any],
                            actor: Actor, description: str = "") -> Segment:
    await get_segment(tenant_id, segment_id)  # a foreign id is a 404 before the input is judged
    clean, note, d = await _checked(tenant_id, name, description, definition, segment_id)
    async with db.transaction():
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM segment WHERE tenant = $1 AND id = $2 FOR UPDATE",
                                tenant_id, segment_id)
        if row is None:
            raise NotFound()
        before = _segment(row)
        if await _name_taken(tenant_id, clean, segment_id):
            raise InvalidInput.one("name", _TAKEN)
        try:
            await db.execute(
                "UPDATE segment SET name = $3, description = $4, definition = $5::jsonb, updated_at = now() "
                "WHERE tenant = $1 AND id = $2", tenant_id, segment_id, clean, note, json.dumps(d.as_json()))
        except UniqueViolationError:  # renamed to a name another request took since the check
            raise InvalidInput.one("name", _TAKEN) from None
        changed: dict[str, Any] = {}
        for key, old, new in (("name", before.name, clean), ("description", before.description, note),
                              ("definition", before.definition.as_json(), d.as_json())):
            if old != new:
                changed[key] = [old, new]
        if changed:
            await record_audit(actor, tenant_id, "segment.updated", "segment", segment_id, changed)
    return await get_segment(tenant_id, segment_id)


async def do_delete_segment(tenant_id: int, segment_id: int, actor: Actor) -> None:
    async with db.transaction():
        row = await db.fetchrow("DELETE FROM segment WHERE tenant = $1 AND id = $2 RETURNING name, definition::text",
                                tenant_id, segment_id)
        if row is None:
            raise NotFound()
        await record_audit(actor, tenant_id, "segment.deleted", "segment", segment_id,
                           {"name": row["name"], "definition": json.loads(row["definition"])})
