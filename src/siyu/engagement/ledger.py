"""The delivery ledger's one writer: every row of `engagement_delivery` is inserted, claimed, moved and
rescheduled here, and nowhere else (a test scans the source for other writers).

    scheduled ──▶ due ──▶ sending ──▶ sent | skipped | failed | unknown
        │          │         └──▶ waiting_for_rep ──▶ sent | not_sent | unknown
        └▶ skipped └──▶ held_out | skipped | failed

States only move forward (`TRANSITIONS`); a row may stay in `due` or `sending` while a run re-claims it
(a lease: `claimed_at`) or tries its next channel. Rows are keyed (tenant, source, step, person, trigger
key), so a re-run of any producer inserts nothing twice. Times come from the project clock.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siyu.core import db

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "scheduled": ("due", "skipped"),
    "due": ("due", "sending", "skipped", "held_out", "failed"),
    "sending": ("sending", "waiting_for_rep", "sent", "skipped", "failed", "unknown"),
    "waiting_for_rep": ("sent", "not_sent", "unknown"),
}
FINAL = ("sent", "skipped", "failed", "unknown", "held_out", "not_sent")
STATES = ("scheduled", "due", "sending", "waiting_for_rep", *FINAL)
# What counts against the frequency cap and WeChat's monthly mass-send cap: anything that may reach the person.
COUNTED = ("sending", "waiting_for_rep", "sent", "unknown")
# Columns a transition may set besides the state.
_FIELDS = ("channel", "skips", "reason", "errcode", "outbound_key", "wechat_ref", "sender", "batch",
           "next_attempt_at", "counted_at", "sent_at")

_COLUMNS = ("id, tenant, source_kind, source_id, step, contact, trigger_key, entry, purpose, held_out, planned_at, "
            "due_at, state, channel, skips::text AS skips, reason, errcode, outbound_key, wechat_ref, sender, batch, "
            "attempts, next_attempt_at, claimed_at, counted_at, settled_at, sent_at, created_at")
_D_COLUMNS = ", ".join(f"d.{c.strip()}" for c in _COLUMNS.split(","))  # the same, in a statement naming `d`


@dataclass(frozen=True)
class Row:
    id: int
    tenant: int
    source_kind: str
    source_id: int
    step: str
    contact: int
    trigger_key: str
    entry: int | None
    purpose: str
    held_out: bool
    planned_at: datetime
    due_at: datetime
    state: str
    channel: str
    skips: list[dict[str, str]]
    reason: str
    errcode: int | None
    outbound_key: str
    wechat_ref: str
    sender: str
    batch: int | None
    attempts: int
    next_attempt_at: datetime | None
    claimed_at: datetime | None
    counted_at: datetime | None
    settled_at: datetime | None
    sent_at: datetime | None
    created_at: datetime

    @property
    def source(self) -> str:
        return f"{self.source_kind}:{self.source_id}"


def _row(r: Any) -> Row:
    values = dict(r)
    values["skips"] = json.loads(values["skips"])
    return Row(**values)


@dataclass(frozen=True)
class New:
    """A row to schedule."""

    tenant: int
    source_kind: str
    source_id: int
    step: str
    contact: int
    trigger_key: str
    due_at: datetime
    purpose: str
    held_out: bool = False
    entry: int | None = None


class IllegalTransition(Exception):
    pass


def check(frm: Sequence[str], to: str) -> None:
    for state in frm:
        if to not in TRANSITIONS.get(state, ()):
            raise IllegalTransition(f"a delivery cannot go from {state} to {to}")


# --- inserting ---------------------------------------------------------------------------------------------

async def schedule(rows: Sequence[New], now: datetime) -> list[tuple[int, datetime]]:
    """Insert rows that are not in the ledger yet (the others are left as they are). Returns (id, due_at) of
    the rows this call inserted."""
    if not rows:
        return []
    inserted = await db.fetch(
        "INSERT INTO engagement_delivery (tenant, source_kind, source_id, step, contact, trigger_key, entry, purpose, "
        "held_out, planned_at, due_at, state, channel, skips, reason, outbound_key, wechat_ref, sender, attempts, "
        "created_at) SELECT t, k, s, st, c, tk, e, p, h, d, d, 'scheduled', '', '[]'::jsonb, '', '', '', '', 0, $11 "
        "FROM unnest($1::int[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::bigint[], "
        "$8::text[], $9::bool[], $10::timestamptz[]) AS u(t, k, s, st, c, tk, e, p, h, d) "
        "ON CONFLICT (tenant, source_kind, source_id, step, contact, trigger_key) DO NOTHING RETURNING id, due_at",
        [r.tenant for r in rows], [r.source_kind for r in rows], [r.source_id for r in rows], [r.step for r in rows],
        [r.contact for r in rows], [r.trigger_key for r in rows], [r.entry for r in rows], [r.purpose for r in rows],
        [r.held_out for r in rows], [r.due_at for r in rows], now)
    return [(int(r["id"]), r["due_at"]) for r in inserted]


# --- reading -----------------------------------------------------------------------------------------------

async def get(tenant_id: int, delivery_id: int) -> Row | None:
    r = await db.fetchrow(f"SELECT {_COLUMNS} FROM engagement_delivery WHERE tenant = $1 AND id = $2",
                          tenant_id, delivery_id)
    return _row(r) if r else None


async def by_ids(ids: Sequence[int]) -> list[Row]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM engagement_delivery WHERE id = ANY($1::bigint[]) ORDER BY id",
                          list(ids))
    return [_row(r) for r in rows]


# --- the transition function -------------------------------------------------------------------------------

async def transition(row: Row | int, frm: str | Sequence[str], to: str, now: datetime, **fields: Any) -> Row | None:
    """Move one row from one of the states `frm` to `to`, setting `fields`; None when the row is no longer in
    `frm` (another run moved it). Final states record `settled_at`; `due` and `sending` renew the lease."""
    rows = await transition_many([row.id if isinstance(row, Row) else row], frm, to, now, **fields)
    return rows[0] if rows else None


async def transition_many(ids: Sequence[int], frm: str | Sequence[str], to: str, now: datetime,
                          tenant_id: int | None = None, **fields: Any) -> list[Row]:
    frm = (frm,) if isinstance(frm, str) else tuple(frm)
    check(frm, to)
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"not a delivery field: {sorted(unknown)}")
    args: list[Any] = [list(ids), list(frm), to]
    sets = ["state = $3::varchar"]
    for name, value in fields.items():
        args.append(json.dumps(value, ensure_ascii=False) if name == "skips" else value)
        sets.append(f"{name} = ${len(args)}" + ("::jsonb" if name == "skips" else ""))
    args.append(now)
    at = f"${len(args)}::timestamptz"
    if to in FINAL:
        sets.append(f"settled_at = {at}")
    if to in ("due", "sending"):
        sets.append(f"claimed_at = {at}")
    if to == "due":
        sets.append("attempts = attempts + 1")
    if len(sets) == 1 + len(fields):  # nothing names the time: keep the statement's parameters all used
        sets.append(f"claimed_at = COALESCE(claimed_at, {at})")
    where = "id = ANY($1::bigint[]) AND state = ANY($2::text[])"
    if tenant_id is not None:
        args.append(tenant_id)
        where += f" AND tenant = ${len(args)}"
    rows = await db.fetch(f"UPDATE engagement_delivery SET {', '.join(sets)} WHERE {where} RETURNING {_COLUMNS}",
                          *args)
    return [_row(r) for r in rows]


async def settle_sent(tenant_id: int, ids: Sequence[int], sent_ats: Sequence[datetime], now: datetime) -> list[Row]:
    """Many `sending` rows WeChat took, each with the moment it took it, moved to `sent` in one statement
    (rows no longer `sending` are left alone and not returned)."""
    check(("sending",), "sent")
    if not ids:
        return []
    rows = await db.fetch(
        "UPDATE engagement_delivery d SET state = 'sent', sent_at = u.at, settled_at = $4 "
        "FROM unnest($2::bigint[], $3::timestamptz[]) AS u(id, at) WHERE d.tenant = $1 AND d.id = u.id "
        f"AND d.state = 'sending' RETURNING {_D_COLUMNS}",
        tenant_id, list(ids), list(sent_ats), now)
    return [_row(r) for r in rows]


@dataclass(frozen=True)
class Take:
    """One row moving to `sending` on a carrier (see `take_many`)."""

    id: int
    frm: str
    channel: str
    skips: list[dict[str, str]]
    outbound_key: str
    sender: str
    counted_at: datetime


async def take_many(takes: Sequence[Take], now: datetime) -> list[Row]:
    """Many rows moved to `sending`, each on its own carrier, in one statement (what `transition(row, frm,
    "sending", …)` does for one); a row no longer in its `frm` is left alone and not returned."""
    for frm in {t.frm for t in takes}:
        check((frm,), "sending")
    if not takes:
        return []
    rows = await db.fetch(
        "UPDATE engagement_delivery d SET state = 'sending', channel = u.channel, skips = u.skips, "
        "outbound_key = u.okey, sender = u.sender, counted_at = u.counted, batch = NULL, next_attempt_at = NULL, "
        "claimed_at = $8 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[], "
        "$7::timestamptz[]) AS u(id, frm, channel, skips, okey, sender, counted) "
        f"WHERE d.id = u.id AND d.state = u.frm RETURNING {_D_COLUMNS}",
        [t.id for t in takes], [t.frm for t in takes], [t.channel for t in takes],
        [json.dumps(t.skips, ensure_ascii=False) for t in takes], [t.outbound_key for t in takes],
        [t.sender for t in takes], [t.counted_at for t in takes], now)
    return [_row(r) for r in rows]


async def lock_people(tenant_id: int, contact_ids: Sequence[int]) -> None:
    """Hold each person's engagement lock until the transaction ends (taken in one order, so two runs locking
    overlapping sets wait for each other instead of deadlocking)."""
    await db.execute(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended('engagement:person:' || $1::bigint::text "
        "|| ':' || c::text, 0) AS k FROM unnest($2::int[]) AS c ORDER BY k) AS locks", tenant_id, list(contact_ids))


async def marketing_counts(tenant_id: int, contact_ids: Sequence[int], since: datetime) -> dict[int, int]:
    """How many marketing messages each of these people was counted for since `since` (the frequency cap)."""
    rows = await db.fetch(
        "SELECT contact, count(*) AS n FROM engagement_delivery WHERE tenant = $1 AND contact = ANY($2::int[]) "
        "AND counted_at >= $3 AND purpose = 'marketing' AND state = ANY($4::text[]) GROUP BY contact",
        tenant_id, list(contact_ids), since, list(COUNTED))
    return {int(r["contact"]): int(r["n"]) for r in rows}


# --- claiming ----------------------------------------------------------------------------------------------

Hold = Callable[[int, datetime], Awaitable[datetime | None]]


@dataclass
class Claimed:
    rows: list[Row] = field(default_factory=list)
    held: int = 0  # moved to the end of quiet hours


async def claim_due(now: datetime, limit: int, hold: Hold, ids: Sequence[int] | None = None) -> Claimed:
    """Claim up to `limit` scheduled rows that are due (oldest first), skipping rows other runs hold. A row
    whose tenant is in quiet hours stays scheduled and is due again when they end (`hold(tenant, now)` says
    when): held, never dropped. Done in one transaction, so a run that dies leaves the rows scheduled. With
    `ids`, only those rows (a deferred job's)."""
    out = Claimed()
    async with db.transaction():
        picked = await db.fetch(
            "SELECT id, tenant FROM engagement_delivery WHERE state = 'scheduled' AND due_at <= $1 "
            "AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[])) ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now, limit, list(ids) if ids is not None else None)
        if not picked:
            return out
        opening: dict[int, datetime | None] = {}
        for r in picked:
            if r["tenant"] not in opening:
                opening[r["tenant"]] = await hold(int(r["tenant"]), now)
        later = [(int(r["id"]), opening[r["tenant"]]) for r in picked if opening[r["tenant"]] is not None]
        if later:
            await db.execute(
                "UPDATE engagement_delivery d SET due_at = u.due FROM unnest($1::bigint[], $2::timestamptz[]) "
                "AS u(id, due) WHERE d.id = u.id AND d.state = 'scheduled'", [i for i, _ in later],
                [d for _, d in later])
            out.held = len(later)
        ready = [int(r["id"]) for r in picked if opening[r["tenant"]] is None]
        if ready:
            out.rows = await transition_many(ready, "scheduled", "due", now)
    return out


async def reclaim_stale(now: datetime, lease_seconds: float, limit: int) -> list[Row]:
    """Rows a run claimed and never settled (the worker died, Redis lost its job), and rows waiting for a
    rate limit that has passed: claimed again, in the state they were left in."""
    rows: list[Row] = []
    async with db.transaction():
        picked = await db.fetch(
            "SELECT id, state FROM engagement_delivery WHERE state IN ('due', 'sending') AND "
            "(claimed_at < $1::timestamptz - make_interval(secs => $2) OR next_attempt_at <= $1::timestamptz) "
            "ORDER BY claimed_at LIMIT $3 FOR UPDATE SKIP LOCKED", now, lease_seconds, limit)
        for state in ("due", "sending"):
            ids = [int(r["id"]) for r in picked if r["state"] == state]
            if ids:
                rows += await transition_many(ids, state, state, now, next_attempt_at=None)
    return rows


async def waiting_for_rep(now: datetime, older_than_seconds: float, limit: int) -> list[Row]:
    """WeCom tasks to ask about, least recently asked first (asking renews `claimed_at`, not the state)."""
    rows = await db.fetch(
        f"UPDATE engagement_delivery SET claimed_at = $1 WHERE id IN (SELECT id FROM engagement_delivery "
        "WHERE state = 'waiting_for_rep' AND claimed_at < $1::timestamptz - make_interval(secs => $2) "
        f"ORDER BY claimed_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}", now, older_than_seconds, limit)
    return [_row(r) for r in rows]


# --- moving whole sources ----------------------------------------------------------------------------------

async def pause_source(tenant_id: int, source_kind: str, source_id: int) -> int:
    """Scheduled rows of a paused journey or broadcast are not due until it resumes."""
    done = await db.execute(
        "UPDATE engagement_delivery SET due_at = 'infinity' WHERE tenant = $1 AND source_kind = $2 AND source_id = $3 "
        "AND state = 'scheduled'", tenant_id, source_kind, source_id)
    return int(done.split()[-1])


async def resume_source(tenant_id: int, source_kind: str, source_id: int, now: datetime,
                        seconds_apart: float = 0.0) -> int:
    """Due again: each row at its planned time, or now if that has passed; with `seconds_apart`, the rows that
    are late are spread out again from now at that pace (a broadcast's rate)."""
    done = await db.execute(
        "UPDATE engagement_delivery d SET due_at = GREATEST(d.planned_at, $4::timestamptz + "
        "make_interval(secs => $5 * (u.n - 1))) FROM (SELECT id, row_number() OVER (ORDER BY planned_at, id) AS n "
        "FROM engagement_delivery WHERE tenant = $1 AND source_kind = $2 AND source_id = $3 AND state = 'scheduled') u "
        "WHERE d.id = u.id", tenant_id, source_kind, source_id, now, seconds_apart)
    return int(done.split()[-1])


async def skip_source(tenant_id: int, source_kind: str, source_id: int, reason: str, now: datetime,
                      step: str | None = None) -> int:
    """Every scheduled row of a source (or of one of its steps) skipped with `reason`: a cancelled broadcast,
    an archived journey, a removed step."""
    check(("scheduled",), "skipped")
    done = await db.execute(
        "UPDATE engagement_delivery SET state = 'skipped', reason = $4, settled_at = $5 WHERE tenant = $1 "
        "AND source_kind = $2 AND source_id = $3 AND state = 'scheduled' AND ($6::text IS NULL OR step = $6)",
        tenant_id, source_kind, source_id, reason, now, step)
    return int(done.split()[-1])


async def skip_entry(tenant_id: int, entry_id: int, reason: str, now: datetime) -> int:
    """The scheduled rows of one person's entry, when they leave the journey."""
    check(("scheduled",), "skipped")
    done = await db.execute(
        "UPDATE engagement_delivery SET state = 'skipped', reason = $3, settled_at = $4 WHERE tenant = $1 "
        "AND entry = $2 AND state = 'scheduled'", tenant_id, entry_id, reason, now)
    return int(done.split()[-1])


async def page(tenant_id: int, source_kind: str, source_id: int, before_id: int | None, limit: int) -> list[Row]:
    """A source's rows, newest first, in keyset pages by id."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM engagement_delivery WHERE tenant = $1 AND source_kind = $2 AND source_id = $3 "
        "AND ($4::bigint IS NULL OR id < $4) ORDER BY id DESC LIMIT $5", tenant_id, source_kind, source_id,
        before_id, limit)
    return [_row(r) for r in rows]
