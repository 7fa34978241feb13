"""Broadcasts: one message to a segment, now or at a time, paced, with a holdout; pause, resume, cancel; the
fan-out into the ledger; progress by state and reason.

The fan-out walks the segment's members by contact id (segments' keyset pages) and schedules one ledger row
per person, spaced `60 / rate_per_minute` seconds apart from `pace_next_at`: the pace is held by the rows'
due times, so it survives restarts, and the sweeper sends each row when it is due. Each page is one
transaction that also moves the cursor, so a fan-out that dies resumes where it stopped and a re-run inserts
nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from siyu.core import clock, db, effects
from siyu.core.errors import Conflict, FieldError, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.engagement import lane, ledger
from siyu.engagement.definition import Message, clean_name, parse_message
from siyu.engagement.definition import _Errors as Errors
from siyu.engagement.rules import held_out
from siyu.segments import services as segments
from siyu.tenants.services import Actor, record_audit

FANOUT_JOB = "engagement.fan_out"
PAGE = 500  # segments give at most 500 members a page
_INT_MAX = 2**31 - 1
MOVES = {"draft": ("scheduled", "cancelled"), "scheduled": ("paused", "cancelled"), "sending": ("paused", "cancelled"),
         "paused": ("sending", "cancelled"), "cancelled": (), "done": ()}


@dataclass(frozen=True)
class BroadcastRow:
    id: int
    tenant: int
    name: str
    segment_id: int
    message: Message
    send_at: datetime | None
    rate_per_minute: int | None
    holdout_percent: int
    status: str
    targeted: int
    fanned_out: bool
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def seconds_apart(self) -> float:
        return 60.0 / self.rate_per_minute if self.rate_per_minute else 0.0

    def as_json(self) -> dict[str, Any]:
        iso = (lambda t: t.isoformat() if t else None)  # noqa: E731
        return {"id": self.id, "name": self.name, "segment_id": self.segment_id, "message": self.message.as_json(),
                "send_at": iso(self.send_at), "rate_per_minute": self.rate_per_minute,
                "holdout_percent": self.holdout_percent, "status": self.status, "targeted": self.targeted,
                "created_by": self.created_by, "created_at": iso(self.created_at),
                "started_at": iso(self.started_at), "finished_at": iso(self.finished_at)}


_COLUMNS = ("id, tenant, name, segment_id, message::text AS message, send_at, rate_per_minute, holdout_percent, status, "
            "targeted, fanned_out, created_by, created_at, started_at, finished_at")


def _broadcast(r: Any) -> BroadcastRow:
    return BroadcastRow(int(r["id"]), int(r["tenant"]), r["name"], int(r["segment_id"]),
                        parse_message(json.loads(r["message"]), "message", Errors()),  # type: ignore[arg-type]
                        r["send_at"], r["rate_per_minute"], int(r["holdout_percent"]), r["status"], int(r["targeted"]),
                        bool(r["fanned_out"]), r["created_by"], r["created_at"], r["started_at"], r["finished_at"])


async def get_broadcast(tenant_id: int, broadcast_id: int) -> BroadcastRow:
    if not 0 < broadcast_id <= _INT_MAX:
        raise NotFound()
    r = await db.fetchrow(f"SELECT {_COLUMNS} FROM engagement_broadcast WHERE tenant = $1 AND id = $2",
                          tenant_id, broadcast_id)
    if r is None:
        raise NotFound()
    return _broadcast(r)


async def by_ids(tenant_id: int, ids: set[int]) -> dict[int, BroadcastRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_broadcast WHERE tenant = $1 AND id = ANY($2::int[])",
                          tenant_id, sorted(ids))
    return {int(r["id"]): _broadcast(r) for r in rows}


async def list_broadcasts(tenant_id: int, limit: int = 100) -> list[BroadcastRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_broadcast WHERE tenant = $1 AND segment_id <> 0 ORDER BY id DESC LIMIT $2",
                          tenant_id, limit)
    return [_broadcast(r) for r in rows]


# --- creating and moving ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Draft:
    name: str
    segment_id: int
    message: Message
    send_at: datetime | None
    rate_per_minute: int | None
    holdout_percent: int


async def check(tenant_id: int, raw: dict[str, Any]) -> Draft:
    """A broadcast's fields checked (every mistake named by its field), its segment against the tenant's."""
    errors = Errors()
    unknown = sorted(str(k)[:40] for k in set(raw) - {"name", "segment_id", "message", "send_at", "rate_per_minute",
                                                       "holdout_percent"})
    for key in unknown:
        errors.add(key, N_("Broadcasts have no field of this name."))
    name = clean_name(raw.get("name"), errors)
    segment_id = raw.get("segment_id")
    if not isinstance(segment_id, int) or isinstance(segment_id, bool) or not 0 < segment_id <= _INT_MAX:
        errors.add("segment_id", N_("Choose a segment."))
        segment_id = 0
    message = parse_message(raw.get("message"), "message", errors)
    send_at = raw.get("send_at")
    if send_at is not None and not isinstance(send_at, datetime):
        errors.add("send_at", N_("Give a date and time with its offset, like 2026-12-24T20:00:00+08:00."))
        send_at = None
    rate = raw.get("rate_per_minute")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= 1_000_000):
        errors.add("rate_per_minute", N_("Enter a whole number from {low} to {high}."), low=1, high=1_000_000)
        rate = None
    holdout = raw.get("holdout_percent", 0)
    if not isinstance(holdout, int) or isinstance(holdout, bool) or not 0 <= holdout <= 90:
        errors.add("holdout_percent", N_("Enter a whole number from {low} to {high}."), low=0, high=90)
        holdout = 0
    if errors.found:
        raise InvalidInput(errors.found)
    try:
        await segments.get_segment(tenant_id, segment_id)
    except NotFound:
        raise InvalidInput([FieldError("segment_id", N_("This is an unknown segment; reload the page and choose "
                                                        "again."))]) from None
    assert message is not None
    return Draft(name, segment_id, message, send_at, rate, holdout)


async def do_create_broadcast(tenant_id: int, raw: dict[str, Any], actor: Actor, schedule: bool = True) -> BroadcastRow:
    """A broadcast, scheduled for `send_at` (now when absent) unless `schedule` is False (a draft)."""
    draft = await check(tenant_id, raw)
    now = clock.now()
    send_at = max(draft.send_at or now, now)
    async with db.transaction():
        row = await db.fetchrow(
            "INSERT INTO engagement_broadcast (tenant, name, segment_id, message, send_at, rate_per_minute, "
            "holdout_percent, status, fanned_out, targeted, created_by, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, false, 0, $9, $10, $10) RETURNING id",
            tenant_id, draft.name, draft.segment_id, json.dumps(draft.message.as_json(), ensure_ascii=False), send_at,
            draft.rate_per_minute, draft.holdout_percent, "scheduled" if schedule else "draft", actor.label[:254], now)
        broadcast_id = int(row["id"])
        await record_audit(actor, tenant_id, "broadcast.created", "broadcast", broadcast_id,
                           {"name": draft.name, "segment_id": draft.segment_id, "status":
                            "scheduled" if schedule else "draft"})
        if schedule:
            await _kick(tenant_id, broadcast_id, send_at, now)
    return await get_broadcast(tenant_id, broadcast_id)


async def _kick(tenant_id: int, broadcast_id: int, send_at: datetime, now: datetime) -> None:
    await effects.enqueue(FANOUT_JOB, tenant_id, broadcast_id, job_id=f"engagement:fanout:{broadcast_id}:"
                          f"{int(send_at.timestamp())}", defer_by=max(0.0, (send_at - now).total_seconds()),
                          queue=lane.queue())


async def do_set_status(tenant_id: int, broadcast_id: int, status: str, actor: Actor) -> BroadcastRow:
    """Schedule a draft, pause, resume (→ sending) or cancel."""
    current = await get_broadcast(tenant_id, broadcast_id)
    if status == current.status:
        return current
    if status not in MOVES.get(current.status, ()):
        raise Conflict(N_("A broadcast moves draft → scheduled → sending ⇄ paused, and may be cancelled until it "
                          "is done; it cannot take this status from where it is."), field="status")
    now = clock.now()
    async with db.transaction():
        moved = await db.fetchrow("UPDATE engagement_broadcast SET status = $4, updated_at = $5 WHERE tenant = $1 "
                                  "AND id = $2 AND status = $3 RETURNING id", tenant_id, broadcast_id, current.status,
                                  status, now)
        if moved is None:
            raise Conflict(N_("The broadcast changed meanwhile; reload the page."), field="status")
        if status == "paused":
            await ledger.pause_source(tenant_id, "broadcast", broadcast_id)
        elif status == "sending":
            left = await ledger.resume_source(tenant_id, "broadcast", broadcast_id, now, current.seconds_apart)
            await db.execute("UPDATE engagement_broadcast SET pace_next_at = $3 WHERE tenant = $1 AND id = $2",
                             tenant_id, broadcast_id, now + timedelta(seconds=current.seconds_apart * left))
            if not current.fanned_out:
                await _kick(tenant_id, broadcast_id, now, now)
        elif status == "cancelled":
            await ledger.skip_source(tenant_id, "broadcast", broadcast_id, "cancelled", now)
            await db.execute("UPDATE engagement_broadcast SET finished_at = $3 WHERE tenant = $1 AND id = $2",
                             tenant_id, broadcast_id, now)
        elif status == "scheduled":
            send_at = max(current.send_at or now, now)
            await db.execute("UPDATE engagement_broadcast SET send_at = $3 WHERE tenant = $1 AND id = $2",
                             tenant_id, broadcast_id, send_at)
            await _kick(tenant_id, broadcast_id, send_at, now)
        await record_audit(actor, tenant_id, "broadcast.status", "broadcast", broadcast_id,
                           {"name": current.name, "status": [current.status, status]})
    return await get_broadcast(tenant_id, broadcast_id)


# --- fan-out ------------------------------------------------------------------------------------------------

async def fan_out(tenant_id: int, broadcast_id: int, pages: int = 1_000_000) -> int:
    """Schedule the ledger rows of a broadcast whose time has come, page by page; returns how many rows this
    call added. Safe to run again and concurrently (each page locks the broadcast)."""
    added = 0
    for _ in range(pages):
        now = clock.now()
        async with db.transaction():
            b = await db.fetchrow(
                "SELECT id, segment_id, status, send_at, rate_per_minute, holdout_percent, fanned_after, fanned_out, "
                "targeted, pace_next_at, message->>'purpose' AS purpose FROM engagement_broadcast WHERE tenant = $1 AND id = $2 FOR UPDATE",
                tenant_id, broadcast_id)
            if b is None or b["fanned_out"] or b["status"] not in ("scheduled", "sending") or b["send_at"] > now:
                return added
            if b["status"] == "scheduled":
                await db.execute("UPDATE engagement_broadcast SET status = 'sending', started_at = $3, "
                                 "pace_next_at = $3 WHERE tenant = $1 AND id = $2", tenant_id, broadcast_id, now)
            start = max(b["pace_next_at"] or now, now)
            apart = 60.0 / b["rate_per_minute"] if b["rate_per_minute"] else 0.0
            segment = await segments.get_segment(tenant_id, int(b["segment_id"]))
            page = await segments.members_of(tenant_id, segment.definition, b["fanned_after"], PAGE)
            rows = [ledger.New(tenant_id, "broadcast", broadcast_id, "message", int(c["id"]), "",
                               start + timedelta(seconds=apart * n), b["purpose"],
                               held_out=held_out(int(b["holdout_percent"]), tenant_id, f"broadcast:{broadcast_id}",
                                                 int(c["id"])))
                    for n, c in enumerate(page.contacts)]
            inserted = await ledger.schedule(rows, now)
            last = page.contacts[-1]["id"] if page.contacts else b["fanned_after"]
            await db.execute(
                "UPDATE engagement_broadcast SET fanned_after = $3, fanned_out = $4, targeted = targeted + $5, "
                "pace_next_at = $6, updated_at = $7 WHERE tenant = $1 AND id = $2", tenant_id, broadcast_id, last,
                page.next_after is None, len(inserted), start + timedelta(seconds=apart * len(rows)), now)
            added += len(inserted)
            if page.next_after is None:
                return added
    return added


async def due_fan_outs(now: datetime, limit: int = 20) -> list[tuple[int, int]]:
    rows = await db.fetch("SELECT tenant, id FROM engagement_broadcast WHERE status IN ('scheduled', 'sending') "
                          "AND NOT fanned_out AND send_at <= $1 ORDER BY send_at LIMIT $2", now, limit)
    return [(int(r["tenant"]), int(r["id"])) for r in rows]


async def finish_done(now: datetime) -> int:
    """Broadcasts fanned out with nothing left to send are done."""
    rows = await db.fetch(
        "UPDATE engagement_broadcast b SET status = 'done', finished_at = $1, updated_at = $1 "
        "WHERE b.status = 'sending' AND b.fanned_out AND NOT EXISTS (SELECT 1 FROM engagement_delivery d "
        "WHERE d.tenant = b.tenant AND d.source_kind = 'broadcast' AND d.source_id = b.id "
        "AND d.state IN ('scheduled', 'due', 'sending')) RETURNING id", now)
    return len(rows)


async def do_test_send(tenant_id: int, contact_id: int, message: Message, actor: Actor) -> int:
    """A test of a message to one contact: a finished broadcast of its own (so the row carries this message),
    one ledger row due now, sent by the worker at once through the same ladder; quiet hours and the frequency
    cap do not apply to a test (step "test", left out of every figure). Returns the ledger row's id."""
    now = clock.now()
    async with db.transaction():
        row = await db.fetchrow(
            "INSERT INTO engagement_broadcast (tenant, name, segment_id, message, holdout_percent, status, fanned_out, "
            "targeted, created_by, created_at, updated_at, started_at, finished_at) VALUES ($1, $2, 0, $3::jsonb, 0, "
            "'done', true, 1, $4, $5, $5, $5, $5) RETURNING id", tenant_id, f"Test {now:%Y-%m-%d %H:%M:%S}",
            json.dumps(message.as_json(), ensure_ascii=False), actor.label[:254], now)
        broadcast_id = int(row["id"])
        [(delivery_id, _)] = await ledger.schedule([ledger.New(tenant_id, "broadcast", broadcast_id, "test", contact_id,
                                                               "test", now, message.purpose)], now)
        await record_audit(actor, tenant_id, "broadcast.test", "broadcast", broadcast_id, {"contact": contact_id})
        await effects.enqueue(TEST_JOB, tenant_id, [delivery_id], True, job_id=f"engagement:test:{delivery_id}",
                              queue=lane.queue())
    return delivery_id


TEST_JOB = "engagement.send_due"
