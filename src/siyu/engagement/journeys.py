"""Journeys: create, change, start, pause, resume and archive them (audited), and read them.

A change of an active journey applies to the people already in it step by step: a send step still in the
definition keeps its scheduled rows (they carry its current text when they go), a removed one has them
skipped (`step_removed`), and nobody ever gets a step id twice (the ledger's key). Pausing holds every
scheduled row of the journey; resuming makes them due at their planned time (or now, if that has passed);
archiving skips them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg.exceptions import UniqueViolationError

from siyu.contacts import services as contacts
from siyu.core import clock, db
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.engagement import ledger
from siyu.engagement.definition import Journey, parse
from siyu.segments import services as segments
from siyu.tenants.services import Actor, record_audit

_INT_MAX = 2**31 - 1
# Which status changes a person may ask for.
MOVES = {"draft": ("active", "archived"), "active": ("paused", "archived"), "paused": ("active", "archived"),
         "archived": ()}


@dataclass(frozen=True)
class JourneyRow:
    id: int
    tenant: int
    definition: Journey
    status: str
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.definition.name

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.definition.as_json(), "status": self.status, "version": self.version,
                "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


_COLUMNS = "id, tenant, definition::text AS definition, status, version, created_by, created_at, updated_at"


def _journey(row: Any) -> JourneyRow:
    definition = parse({**json.loads(row["definition"]), "status": row["status"]})
    return JourneyRow(int(row["id"]), int(row["tenant"]), definition, row["status"], int(row["version"]),
                      row["created_by"], row["created_at"], row["updated_at"])


async def get_journey(tenant_id: int, journey_id: int) -> JourneyRow:
    if not 0 < journey_id <= _INT_MAX:
        raise NotFound()
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM engagement_journey WHERE tenant = $1 AND id = $2",
                            tenant_id, journey_id)
    if row is None:
        raise NotFound()
    return _journey(row)


async def list_journeys(tenant_id: int, include_archived: bool = True) -> list[JourneyRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_journey WHERE tenant = $1 "
                          "AND ($2 OR status <> 'archived') ORDER BY status = 'archived', lower(name), id",
                          tenant_id, include_archived)
    return [_journey(r) for r in rows]


async def by_ids(tenant_id: int, ids: set[int]) -> dict[int, JourneyRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_journey WHERE tenant = $1 AND id = ANY($2::int[])",
                          tenant_id, sorted(ids))
    return {int(r["id"]): _journey(r) for r in rows}


async def active_by_trigger(tenant_id: int, kinds: tuple[str, ...]) -> list[JourneyRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_journey WHERE tenant = $1 AND status = 'active' "
                          "AND trigger_kind = ANY($2::text[]) ORDER BY id", tenant_id, list(kinds))
    return [_journey(r) for r in rows]


# --- checks against the tenant -------------------------------------------------------------------------------

async def validate(tenant_id: int, raw: Any) -> Journey:
    """`raw` parsed, then its segments and tags checked against the tenant's own."""
    journey = raw if isinstance(raw, Journey) else parse(raw)
    for segment_id in sorted(journey.segment_ids()):
        try:
            await segments.get_segment(tenant_id, segment_id)
        except NotFound:
            field = "trigger.segment_id" if segment_id == journey.trigger.segment_id else "exit.segment_id"
            raise InvalidInput.one(field, N_("This is an unknown segment; reload the page and choose again.")) from None
    wanted = journey.tag_ids()
    if wanted:
        known = {int(t["id"]) for t in await contacts.list_tags(tenant_id)}
        if wanted - known:
            raise InvalidInput.one("exit.tags_any", N_("This is an unknown tag; reload the page and choose again."))
    return journey


_TAKEN = N_("A journey with this name already exists.")
_NO_MOVE = N_("A journey moves draft → active ⇄ paused → archived; it cannot take this status from where it is.")


async def do_create_journey(tenant_id: int, raw: Any, actor: Actor) -> JourneyRow:
    journey = await validate(tenant_id, raw)
    now = clock.now()
    async with db.transaction():
        try:
            row = await db.fetchrow(
                "INSERT INTO engagement_journey (tenant, name, trigger_kind, definition, status, version, "
                "holdout_percent, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4::jsonb, $5, 1, $6, $7, "
                "$8, $8) RETURNING id", tenant_id, journey.name, journey.trigger.kind, json.dumps(journey.as_json()),
                journey.status, journey.holdout_percent, actor.label[:254], now)
        except UniqueViolationError:
            raise InvalidInput.one("name", _TAKEN) from None
        journey_id = int(row["id"])
        await record_audit(actor, tenant_id, "journey.created", "journey", journey_id,
                           {"name": journey.name, "status": journey.status})
    return await get_journey(tenant_id, journey_id)


async def do_update_journey(tenant_id: int, journey_id: int, raw: Any, actor: Actor) -> JourneyRow:
    """Replace the definition (a new version) and apply the status it names."""
    await get_journey(tenant_id, journey_id)  # a foreign id is a 404 before the input is judged
    journey = await validate(tenant_id, raw)
    now = clock.now()
    async with db.transaction():
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM engagement_journey WHERE tenant = $1 AND id = $2 FOR UPDATE",
                                tenant_id, journey_id)
        if row is None:
            raise NotFound()
        before = _journey(row)
        if journey.status != before.status and journey.status not in MOVES[before.status]:
            raise Conflict(_NO_MOVE, field="status")
        if before.status == "archived":
            raise Conflict(N_("An archived journey cannot be changed."), field="status")
        try:
            await db.execute(
                "UPDATE engagement_journey SET name = $3, trigger_kind = $4, definition = $5::jsonb, status = $6, "
                "holdout_percent = $7, version = version + 1, updated_at = $8 WHERE tenant = $1 AND id = $2",
                tenant_id, journey_id, journey.name, journey.trigger.kind, json.dumps(journey.as_json()),
                journey.status, journey.holdout_percent, now)
        except UniqueViolationError:
            raise InvalidInput.one("name", _TAKEN) from None
        kept = {s.id for s in journey.sends()}
        removed = [s.id for s in before.definition.sends() if s.id not in kept]
        skipped = 0
        for step in removed:
            skipped += await ledger.skip_source(tenant_id, "journey", journey_id, "step_removed", now, step=step)
        await _apply_status(tenant_id, journey_id, before.status, journey.status, now)
        await record_audit(actor, tenant_id, "journey.updated", "journey", journey_id,
                           {"name": journey.name, "version": before.version + 1, "steps_removed": removed,
                            "skipped": skipped,
                            **({"status": [before.status, journey.status]} if journey.status != before.status else {})})
    return await get_journey(tenant_id, journey_id)


async def do_set_status(tenant_id: int, journey_id: int, status: str, actor: Actor) -> JourneyRow:
    current = await get_journey(tenant_id, journey_id)
    if status not in MOVES:
        raise InvalidInput.one("status", N_("Choose one of: {choices}."), choices=", ".join(MOVES))
    if status == current.status:
        return current
    if status not in MOVES[current.status]:
        raise Conflict(_NO_MOVE, field="status")
    now = clock.now()
    async with db.transaction():
        moved = await db.fetchrow(
            "UPDATE engagement_journey SET status = $4::text, definition = jsonb_set(definition, '{status}', to_jsonb($4::text)), "
            "updated_at = $5 WHERE tenant = $1 AND id = $2 AND status = $3 RETURNING id",
            tenant_id, journey_id, current.status, status, now)
        if moved is None:
            raise Conflict(N_("The journey changed meanwhile; reload the page."), field="status")
        await _apply_status(tenant_id, journey_id, current.status, status, now)
        await record_audit(actor, tenant_id, "journey.status", "journey", journey_id,
                           {"name": current.name, "status": [current.status, status]})
    return await get_journey(tenant_id, journey_id)


async def _apply_status(tenant_id: int, journey_id: int, before: str, after: str, now: datetime) -> None:
    if before == after:
        return
    if after == "paused":
        await ledger.pause_source(tenant_id, "journey", journey_id)
    elif after == "active" and before == "paused":
        await ledger.resume_source(tenant_id, "journey", journey_id, now)
    elif after == "archived":
        await ledger.skip_source(tenant_id, "journey", journey_id, "journey_archived", now)
