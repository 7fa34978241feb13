"""People entering journeys, once per (journey, person, trigger key), and leaving them.

Entering schedules the journey's send steps in the ledger at once (the waits summed from the entry; a
`replenishment` wait from the purchase's replenishment date), so every later producer or re-run finds the rows
and inserts nothing twice. The re-entry policy: without `reentry_days`, each trigger key (an order, a follow,
an inactive spell) may enter once; with it, a person who entered within those days does not enter again
whatever the key. The holdout is a stable bucket of (tenant, journey, person): held-out people get ledger rows
too, which become `held_out` when they would have been sent (attribution compares like with like).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siyu.core import clock, db, effects
from siyu.engagement import lane, ledger
from siyu.engagement.journeys import JourneyRow
from siyu.engagement.rules import held_out

SEND_JOB = "engagement.send_due"
NEAR = timedelta(minutes=2)  # rows due sooner get a deferred job of their own; the sweeper finds the others


@dataclass(frozen=True)
class Trigger:
    """What happened to one person that may start journeys."""

    contact_id: int
    key: str  # the trigger key: order id, follow event, inactive spell, …
    at: datetime  # when it happened
    facts: dict[str, Any] = field(default_factory=dict)
    replenish_at: datetime | None = None  # purchases: when the products bought run out
    start: datetime | None = None  # when the steps start counting (default: on entry)


@dataclass(frozen=True)
class EntryRow:
    id: int
    journey: int
    contact: int
    trigger_key: str
    facts: dict[str, Any]
    triggered_at: datetime
    entered_at: datetime
    held_out: bool
    exited_at: datetime | None
    exit_reason: str


def schedule_of(journey: JourneyRow, start: datetime, replenish_at: datetime | None) -> list[tuple[str, str, datetime]]:
    """(step id, purpose, due at) of each send step for an entry at `start`; steps after a replenishment wait
    the purchase has no date for are left out."""
    out: list[tuple[str, str, datetime]] = []
    at = start
    for step in journey.definition.steps:
        if step.kind == "wait":
            if step.until_replenishment:
                if replenish_at is None:
                    break
                at = max(at, replenish_at)
            else:
                assert step.wait is not None
                at = at + step.wait
        elif step.kind == "send" and step.send is not None:
            out.append((step.id, step.send.purpose, at))
    return out


async def enter(tenant_id: int, journey: JourneyRow, trigger: Trigger) -> int | None:
    """Enter one person into one journey; the new entry's id, or None when the key entered before or the
    re-entry policy says no. Idempotent; runs in (or joins) one transaction; jobs go out after commit."""
    now = clock.now()
    definition = journey.definition
    async with db.transaction():
        # Entries of one (journey, person) are decided one at a time: the re-entry window is read and written
        # under this lock, so two triggers at once cannot both pass it.
        await db.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", journey.id, trigger.contact_id)
        if definition.reentry_days:
            recent = await db.fetchrow(
                "SELECT 1 FROM engagement_entry WHERE tenant = $1 AND journey = $2 AND contact = $3 "
                "AND entered_at > $4 LIMIT 1", tenant_id, journey.id, trigger.contact_id,
                now - timedelta(days=definition.reentry_days))
            if recent is not None:
                return None
        hold = held_out(definition.holdout_percent, tenant_id, f"journey:{journey.id}", trigger.contact_id)
        row = await db.fetchrow(
            "INSERT INTO engagement_entry (tenant, journey, contact, trigger_key, facts, triggered_at, entered_at, "
            "journey_version, held_out, exit_reason) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, '') "
            "ON CONFLICT (tenant, journey, contact, trigger_key) DO NOTHING RETURNING id",
            tenant_id, journey.id, trigger.contact_id, trigger.key[:128], json.dumps(trigger.facts, default=str),
            trigger.at, now, journey.version, hold)
        if row is None:
            return None
        entry_id = int(row["id"])
        rows = [ledger.New(tenant_id, "journey", journey.id, step_id, trigger.contact_id, trigger.key[:128], due,
                           purpose, held_out=hold, entry=entry_id)
                for step_id, purpose, due in schedule_of(journey, max(trigger.start or now, now), trigger.replenish_at)]
        inserted = await ledger.schedule(rows, now)
        await kick(tenant_id, inserted, now)
    return entry_id


async def kick(tenant_id: int, inserted: Sequence[tuple[int, datetime]], now: datetime) -> None:
    """After commit, a deferred job for the rows due within the hour (the sweeper is the safety net: a lost
    job only delays a row, and the ledger's states keep a second run from sending it again)."""
    for delivery_id, due in inserted:
        if due - now <= NEAR:
            await effects.enqueue(SEND_JOB, tenant_id, [delivery_id], job_id=f"engagement:send:{delivery_id}",
                                  defer_by=max(0.0, (due - now).total_seconds()), queue=lane.queue())


async def get_entries(tenant_id: int, entry_ids: Sequence[int]) -> dict[int, EntryRow]:
    rows = await db.fetch(
        "SELECT id, journey, contact, trigger_key, facts::text AS facts, triggered_at, entered_at, held_out, "
        "exited_at, exit_reason FROM engagement_entry WHERE tenant = $1 AND id = ANY($2::bigint[])",
        tenant_id, list(entry_ids))
    return {int(r["id"]): EntryRow(int(r["id"]), int(r["journey"]), int(r["contact"]), r["trigger_key"],
                                   json.loads(r["facts"]), r["triggered_at"], r["entered_at"], bool(r["held_out"]),
                                   r["exited_at"], r["exit_reason"]) for r in rows}


async def do_exit(tenant_id: int, entry_id: int, reason: str) -> bool:
    """The person leaves the journey: the entry records why, and its rows still scheduled are skipped with
    that reason. False when they had left already."""
    now = clock.now()
    async with db.transaction():
        left = await db.fetchrow(
            "UPDATE engagement_entry SET exited_at = $3, exit_reason = $4 WHERE tenant = $1 AND id = $2 "
            "AND exited_at IS NULL RETURNING id", tenant_id, entry_id, now, reason[:40])
        if left is None:
            return False
        await ledger.skip_entry(tenant_id, entry_id, reason, now)
    return True
