"""What a manager reads: the queue now, the reps' load, and how fast conversations were answered and
resolved, day by day over the last two weeks.

Scope: a tenant admin sees the whole brand; a team manager (`inbox_team_route.managers`) sees the teams they
manage: the members of those teams, and the conversations routed to those teams or held by those members
(the manager's part of `Viewer.where`). Anyone else is refused.

The figures come from the assignment log (`inbox_assignment`):
- first response: `first_response_at - assigned_at` of each assignment answered, on the day it was assigned;
- resolution: from `queued_at` (when the wait for a human began; `assigned_at` when nobody waited) to
  `ended_at` of each assignment that ended `resolved`, on the day it was resolved;
- handed off: conversations the bot handed to a human (the `queued` line in the thread with a handoff
  trigger as its reason: keyword, menu, unanswered, vip, api), per day.
Median and p90 are PostgreSQL's `percentile_cont` (linear interpolation between the two nearest values).
Days are the tenant's calendar days (`tenant.timezone`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from siyu.core import clock, db
from siyu.core.errors import Forbidden
from siyu.core.i18n import N_
from siyu.inbox.conversations import Viewer

DAYS = 14
HANDOFF_TRIGGERS = ("keyword", "menu", "unanswered", "vip", "api")


@dataclass(frozen=True)
class Scope:
    """The part of the brand a manager's figures cover."""

    everything: bool
    team_ids: tuple[int, ...] = ()
    staff_ids: tuple[int, ...] = ()

    def where(self, conv: str, staff_column: str, first_param: int) -> tuple[str, list[Any]]:
        """Conversations routed to the teams, or held (`staff_column`) by their members."""
        if self.everything:
            return "TRUE", []
        p = first_param
        return (f"({conv}.teams && ${p}::int[] OR {staff_column} = ANY(${p + 1}::int[]))",
                [list(self.team_ids), list(self.staff_ids)])

    def about(self, conversation_column: str, staff_column: str | None, first_param: int) -> tuple[str, list[Any]]:
        """The same rule for a row that names its conversation: an assignment (served by a member, whose
        column is `staff_column`) or a message (`staff_column` None: its conversation is held by a member).
        Nothing to join for an admin; for a manager the conversation is looked up only when needed."""
        if self.everything:
            return "TRUE", []
        p = first_param
        served = f"{staff_column} = ANY(${p + 1}::int[]) OR " if staff_column else ""
        held = "" if staff_column else f" OR c.assignee = ANY(${p + 1}::int[])"
        return (f"({served}EXISTS (SELECT 1 FROM inbox_conversation c WHERE c.tenant = $1 "
                f"AND c.id = {conversation_column} AND (c.teams && ${p}::int[]{held})))",
                [list(self.team_ids), list(self.staff_ids)])


def scope_of(viewer: Viewer) -> Scope:
    if viewer.is_admin:
        return Scope(True)
    if not viewer.managed_team_ids:
        raise Forbidden(N_("The manager view is for team managers and the brand's administrators. "
                           "Ask an administrator to make you the manager of a team."))
    return Scope(False, viewer.managed_team_ids, viewer.managed_staff_ids)


@dataclass(frozen=True)
class QueueNow:
    waiting: int
    vip: int
    oldest_queued_at: datetime | None
    oldest_wait_seconds: float | None


@dataclass(frozen=True)
class RepLoad:
    staff_id: int
    name: str
    presence: str  # online | away | offline
    assigned: int  # what counts against the capacity (routing's count)
    snoozed: int
    capacity: int

    @property
    def share(self) -> float:
        return self.assigned / self.capacity if self.capacity > 0 else 0.0


@dataclass(frozen=True)
class Spread:
    """How many, and their median and p90 in seconds (None when there were none)."""

    n: int = 0
    median: float | None = None
    p90: float | None = None


@dataclass(frozen=True)
class Day:
    day: date
    first_response: Spread = field(default_factory=Spread)
    resolution: Spread = field(default_factory=Spread)
    handed_off: int = 0
    unanswered: int = 0  # assignments that ended without a reply (the SLA took them back, a transfer, …)


@dataclass(frozen=True)
class Figures:
    scope: Scope
    timezone: str
    now: datetime
    queue: QueueNow
    reps: list[RepLoad]
    days: list[Day]


async def tenant_zone(tenant_id: int) -> ZoneInfo:
    row = await db.fetchrow("SELECT timezone FROM tenant WHERE id = $1", tenant_id)
    try:
        return ZoneInfo((row["timezone"] if row else "") or "Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


async def queue_now(tenant_id: int, scope: Scope, now: datetime | None = None) -> QueueNow:
    now = now or clock.now()
    where, args = scope.where("c", "c.assignee", 2)
    row = await db.fetchrow(
        "SELECT count(*) AS waiting, count(*) FILTER (WHERE c.vip) AS vip, min(c.queued_at) AS oldest "
        f"FROM inbox_conversation c WHERE c.tenant = $1 AND c.status = 'queued' AND {where}", tenant_id, *args)
    oldest = row["oldest"]
    return QueueNow(int(row["waiting"]), int(row["vip"]), oldest,
                    max(0.0, (now - oldest).total_seconds()) if oldest else None)


async def reps_load(tenant_id: int, scope: Scope) -> list[RepLoad]:
    """The reps in scope (an admin: every active agent, and admins who have used the inbox), busiest first
    among the online ones."""
    if scope.everything:
        who, args = "(s.role = 'agent' OR (s.role = 'tenant_admin' AND a.staff IS NOT NULL))", []
    else:
        who, args = "s.id = ANY($2::int[])", [list(scope.staff_ids)]
    rows = await db.fetch(
        "SELECT s.id, COALESCE(NULLIF(s.name, ''), s.email) AS name, s.max_concurrent, "
        "COALESCE(a.presence, 'offline') AS presence, l.assigned, l.snoozed "
        "FROM staff s LEFT JOIN inbox_agent a ON a.tenant = s.tenant AND a.staff = s.id "
        "CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE c.status = 'assigned') AS assigned, "
        "  count(*) FILTER (WHERE c.status = 'snoozed') AS snoozed FROM inbox_conversation c "
        "  WHERE c.tenant = s.tenant AND c.assignee = s.id AND c.status IN ('assigned', 'snoozed')) AS l "
        f"WHERE s.tenant = $1 AND s.is_active AND {who} "
        "ORDER BY CASE COALESCE(a.presence, 'offline') WHEN 'online' THEN 0 WHEN 'away' THEN 1 ELSE 2 END, "
        "l.assigned DESC, lower(COALESCE(NULLIF(s.name, ''), s.email)), s.id", tenant_id, *args)
    return [RepLoad(int(r["id"]), r["name"], r["presence"], int(r["assigned"]), int(r["snoozed"]),
                    int(r["max_concurrent"])) for r in rows]


def day_range(zone: ZoneInfo, now: datetime, days: int = DAYS) -> tuple[list[date], datetime]:
    """The last `days` calendar days in the tenant's zone (today last), and the instant the first began."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    return [first + timedelta(days=k) for k in range(days)], datetime.combine(first, time(0), tzinfo=zone)


async def daily(tenant_id: int, scope: Scope, zone: ZoneInfo, now: datetime | None = None,
                days: int = DAYS) -> list[Day]:
    """First-response and resolution times (median, p90) and handoffs, per day: three queries."""
    now = now or clock.now()
    dates, since = day_range(zone, now, days)
    tz = zone.key
    where, args = scope.about("a.conversation", "a.staff", 4)
    # percentile_cont skips NULLs: an assignment without a reply counts only as unanswered (once it ended).
    response_secs = "extract(epoch FROM a.first_response_at - a.assigned_at)"
    answered = await db.fetch(
        "SELECT (a.assigned_at AT TIME ZONE $2)::date AS day, count(a.first_response_at) AS n, "
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {response_secs}) AS median, "
        f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {response_secs}) AS p90, "
        "count(*) FILTER (WHERE a.first_response_at IS NULL AND a.ended_at IS NOT NULL) AS unanswered "
        f"FROM inbox_assignment a WHERE a.tenant = $1 AND a.assigned_at >= $3 AND {where} GROUP BY 1",
        tenant_id, tz, since, *args)
    resolution_secs = "extract(epoch FROM a.ended_at - COALESCE(a.queued_at, a.assigned_at))"
    resolved = await db.fetch(
        "SELECT (a.ended_at AT TIME ZONE $2)::date AS day, count(*) AS n, "
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {resolution_secs}) AS median, "
        f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {resolution_secs}) AS p90 "
        f"FROM inbox_assignment a WHERE a.tenant = $1 AND a.end_reason = 'resolved' AND a.ended_at >= $3 AND {where} "
        "GROUP BY 1", tenant_id, tz, since, *args)
    where_m, args_m = scope.about("m.conversation", None, 5)
    handed = await db.fetch(
        "SELECT (m.created_at AT TIME ZONE $2)::date AS day, count(*) AS n FROM inbox_message m "
        "WHERE m.tenant = $1 AND m.direction = 'system' AND m.msg_type = 'event' AND m.created_at >= $3 "
        "AND left(m.body, 1) = '{' AND m.body::jsonb ->> 'event' = 'queued' "
        f"AND m.body::jsonb ->> 'reason' = ANY($4::text[]) AND {where_m} GROUP BY 1",
        tenant_id, tz, since, list(HANDOFF_TRIGGERS), *args_m)

    def spreads(rows: list[Any]) -> dict[date, Spread]:
        return {r["day"]: Spread(int(r["n"]), None if r["median"] is None else float(r["median"]),
                                 None if r["p90"] is None else float(r["p90"])) for r in rows if r["n"]}

    first = spreads(answered)
    missed = {r["day"]: int(r["unanswered"]) for r in answered if r["unanswered"]}
    done = spreads(resolved)
    handoffs = {r["day"]: int(r["n"]) for r in handed}
    return [Day(d, first.get(d, Spread()), done.get(d, Spread()), handoffs.get(d, 0), missed.get(d, 0))
            for d in dates]


async def figures(tenant_id: int, viewer: Viewer, now: datetime | None = None) -> Figures:
    """Everything the manager view shows; Forbidden for a rep who manages no team."""
    scope = scope_of(viewer)
    now = now or clock.now()
    zone = await tenant_zone(tenant_id)
    return Figures(scope, zone.key, now, await queue_now(tenant_id, scope, now), await reps_load(tenant_id, scope),
                   await daily(tenant_id, scope, zone, now))
