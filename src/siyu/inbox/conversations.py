"""Conversations: who may see them, and the one place their state changes.

States: `bot` (auto-replies answer) → `queued` (waiting for a human) → `assigned` (a rep has it) →
`resolved`; an assigned conversation can be `snoozed` (the rep keeps it; it wakes at a time or when the
customer writes). Every change goes through `transition`, which checks it is allowed, keeps the
assignment log, writes the timeline and a line in the thread, and publishes the live update after commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.core import clock, db, effects
from siyu.core.errors import Conflict, NotFound
from siyu.core.i18n import N_
from siyu.timeline import services as timeline
from siyu.wechat import windows

STATUSES = ("bot", "queued", "assigned", "snoozed", "resolved")
ALLOWED: dict[str, frozenset[str]] = {
    "bot": frozenset({"queued", "assigned", "resolved"}),
    "queued": frozenset({"queued", "assigned", "resolved"}),  # queued → queued: sent to another team
    "assigned": frozenset({"assigned", "queued", "snoozed", "resolved"}),  # assigned → assigned: transfer
    "snoozed": frozenset({"assigned", "queued", "resolved"}),
    "resolved": frozenset({"bot", "queued", "assigned"}),
}
PREVIEW_MAX = 140
WITH_A_HUMAN = frozenset({"queued", "assigned", "snoozed"})  # the OA's keyword rules stay quiet
HOLDING = frozenset({"assigned", "snoozed"})  # a rep holds it (and its assignment row is open)


def live_channel(tenant_id: int) -> str:
    return f"siyu:inbox:{tenant_id}"


# --- who sees what ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Viewer:
    """A signed-in person as the inbox scopes them: a rep sees their own conversations (those they hold, and
    those they held last that are resolved or back with the bot) and the waiting ones of their teams; a manager also every conversation of the teams they manage; a tenant admin all."""

    staff_id: int
    name: str
    is_admin: bool
    team_ids: tuple[int, ...]
    managed_team_ids: tuple[int, ...]
    managed_staff_ids: tuple[int, ...]

    @property
    def is_manager(self) -> bool:
        return self.is_admin or bool(self.managed_team_ids)

    def where(self, alias: str, first_param: int) -> tuple[str, list[Any]]:
        """A SQL condition on conversation `alias` with its parameters numbered from `first_param`."""
        if self.is_admin:
            return "TRUE", []
        p = first_param
        own = (f"({alias}.assignee = ${p} OR ({alias}.status IN ('resolved', 'bot') "
               f"AND {alias}.last_assignee = ${p}))")
        waiting = (f"({alias}.status = 'queued' AND (cardinality({alias}.teams) = 0 "
                   f"OR {alias}.teams && ${p + 1}::int[]))")
        clause = f"({own} OR {waiting}"
        args: list[Any] = [self.staff_id, list(self.team_ids)]
        if self.managed_team_ids:
            clause += (f" OR {alias}.teams && ${p + 2}::int[] OR {alias}.assignee = ANY(${p + 3}::int[])")
            args += [list(self.managed_team_ids), list(self.managed_staff_ids)]
        return clause + ")", args

    def where_in_status(self, alias: str, status: str, first_param: int) -> tuple[str, list[Any]]:
        """`where` for conversations known to be in `status`: only the parts that can hold there, so the
        planner can walk the (tenant, status, last_message_at) index in order and stop after a page."""
        if self.is_admin:
            return "TRUE", []
        p = first_param
        parts: list[str] = []
        args: list[Any] = []
        if status in ("assigned", "snoozed"):
            parts.append(f"{alias}.assignee = ${p}")
            args.append(self.staff_id)
        elif status in ("resolved", "bot"):
            parts.append(f"{alias}.last_assignee = ${p}")
            args.append(self.staff_id)
        elif status == "queued":
            parts.append(f"(cardinality({alias}.teams) = 0 OR {alias}.teams && ${p}::int[])")
            args.append(list(self.team_ids))
        if self.managed_team_ids:
            q = p + len(args)
            parts.append(f"{alias}.teams && ${q}::int[] OR {alias}.assignee = ANY(${q + 1}::int[])")
            args += [list(self.managed_team_ids), list(self.managed_staff_ids)]
        return ("(" + " OR ".join(parts) + ")") if parts else "FALSE", args

    def sees(self, conv: dict[str, Any]) -> bool:
        """The same rule as `where`, for one row already read (live updates)."""
        if self.is_admin or conv.get("assignee") == self.staff_id:
            return True
        if conv.get("status") in ("resolved", "bot") and conv.get("last_assignee") == self.staff_id:
            return True
        teams = set(conv.get("teams") or ())
        if conv.get("status") == "queued" and (not teams or teams & set(self.team_ids)):
            return True
        return bool(teams & set(self.managed_team_ids)) or conv.get("assignee") in self.managed_staff_ids


async def viewer_for(tenant_id: int, staff_id: int) -> Viewer:
    row = await db.fetchrow("SELECT id, name, email, role FROM staff WHERE tenant = $1 AND id = $2 AND is_active",
                            tenant_id, staff_id)
    if row is None:
        raise NotFound()
    teams = tuple(int(r["team"]) for r in await db.fetch(
        "SELECT team FROM team_member WHERE tenant = $1 AND staff = $2 ORDER BY team", tenant_id, staff_id))
    managed = tuple(int(r["team"]) for r in await db.fetch(
        "SELECT team FROM inbox_team_route WHERE tenant = $1 AND $2 = ANY(managers) ORDER BY team",
        tenant_id, staff_id))
    members: tuple[int, ...] = ()
    if managed:
        members = tuple(int(r["staff"]) for r in await db.fetch(
            "SELECT DISTINCT staff FROM team_member WHERE tenant = $1 AND team = ANY($2::int[])", tenant_id,
            list(managed)))
    return Viewer(staff_id, row["name"] or row["email"], row["role"] == "tenant_admin", teams, managed, members)


# --- reads -----------------------------------------------------------------------------------------------

CONVERSATION_COLUMNS = (
    "c.id, c.identity, c.channel, c.open_kfid, c.status, c.assignee, c.last_assignee, c.teams, c.vip, c.handoff_reason, c.unanswered, "
    "c.unread, c.queued_at, c.assigned_at, c.first_response_at, c.snoozed_until, c.resolved_at, c.last_message_at, "
    "c.last_inbound_at, c.preview, c.created_at, i.contact, i.external_id, ct.display_name, ct.remark, "
    "ct.language, s.name AS assignee_name, s.email AS assignee_email")
CONVERSATION_FROM = (
    "inbox_conversation c JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
    "JOIN contact ct ON ct.tenant = i.tenant AND ct.id = i.contact "
    "LEFT JOIN staff s ON s.tenant = c.tenant AND s.id = c.assignee")


async def get_conversation(tenant_id: int, viewer: Viewer | None, conversation_id: int) -> dict[str, Any]:
    """One conversation with its contact's name; out of the viewer's scope answers like a missing one."""
    where, args = viewer.where("c", 3) if viewer else ("TRUE", [])
    row = await db.fetchrow(f"SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} "
                            f"WHERE c.tenant = $1 AND c.id = $2 AND {where}", tenant_id, conversation_id, *args)
    if row is None:
        raise NotFound()
    return dict(row)


async def lock(tenant_id: int, conversation_id: int) -> dict[str, Any]:
    """Lock a conversation for a state change (inside a transaction)."""
    row = await try_lock(tenant_id, conversation_id, wait=True)
    if row is None:
        raise NotFound()
    return row


async def try_lock(tenant_id: int, conversation_id: int, wait: bool = False) -> dict[str, Any] | None:
    """`lock`, but a conversation another transaction holds (or a missing one) answers None at once."""
    skip = "" if wait else " SKIP LOCKED"
    row = await db.fetchrow(f"SELECT * FROM inbox_conversation WHERE tenant = $1 AND id = $2 FOR UPDATE{skip}",
                            tenant_id, conversation_id)
    return dict(row) if row else None


async def fetch_row(tenant_id: int, conversation_id: int) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM inbox_conversation WHERE tenant = $1 AND id = $2", tenant_id,
                            conversation_id)
    if row is None:
        raise NotFound()
    return dict(row)


async def contact_of(tenant_id: int, identity_id: int) -> int:
    row = await db.fetchrow("SELECT contact FROM identity WHERE tenant = $1 AND id = $2", tenant_id, identity_id)
    return int(row["contact"])


# --- the one place state changes -------------------------------------------------------------------------

def _epoch(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def system_line(tenant_id: int, conversation_id: int, event: str, at: datetime, source_key: str,
                      **params: Any) -> None:
    """A line in the thread that says what happened (rendered in the reader's language)."""
    await db.execute(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at) VALUES ($1, $2, 'system', 'siyu', 'event', $3, 'noted', $4, $5) "
        "ON CONFLICT (tenant, source_key) DO NOTHING",
        tenant_id, conversation_id, json.dumps({"event": event, **params}, ensure_ascii=False), source_key, at)


async def transition(conv: dict[str, Any], to: str, *, reason: str = "", actor_label: str = "system",
                     assignee: int | None = None, rule: str = "", end_reason: str = "",
                     snoozed_until: datetime | None = None, keep_queue_time: bool = False,
                     contact_id: int | None = None, contact_locked: bool = False,
                     assignee_label: str | None = None) -> dict[str, Any]:
    """Move a locked conversation (`lock`) to `to`. Returns the updated row. `contact_locked`: the caller
    holds the lock of `contact_id` (`routing.route`); with the assignee's name (`assignee_label`) known
    too, an assignment's timeline event is written in the same statement as the assignment."""
    tenant_id, conv_id, frm = conv["tenant"], conv["id"], conv["status"]
    if to not in ALLOWED[frm]:
        raise Conflict(N_("This conversation cannot change that way now (it may have changed meanwhile)."))
    if to in HOLDING and assignee is None:
        raise ValueError("assigned and snoozed conversations need an assignee")
    now = clock.now()
    keeps_holder = frm in HOLDING and to in HOLDING and assignee == conv["assignee"]
    if frm in HOLDING and not keeps_holder:
        await db.execute(
            "UPDATE inbox_assignment SET ended_at = $3, end_reason = $4 WHERE tenant = $1 AND conversation = $2 "
            "AND ended_at IS NULL", tenant_id, conv_id, now, end_reason or to)
    values: dict[str, Any] = {"status": to, "updated_at": now}
    if to == "bot":
        # From `resolved`, the time it was resolved stays: a follow-up the bot cannot answer then goes
        # straight to a person (`handoff.is_follow_up`).
        values.update(assignee=None, queued_at=None, assigned_at=None, first_response_at=None, snoozed_until=None,
                      unanswered=0, handoff_reason="")
    elif to == "queued":
        values.update(assignee=None, assigned_at=None, first_response_at=None, snoozed_until=None, resolved_at=None,
                      queued_at=conv["queued_at"] if keep_queue_time and conv["queued_at"] else now)
        if frm in ("bot", "resolved"):
            values["handoff_reason"] = reason
    elif to == "assigned":
        values.update(assignee=assignee, last_assignee=assignee, snoozed_until=None, resolved_at=None)
        if not keeps_holder:
            values.update(assigned_at=now, first_response_at=None)
    elif to == "snoozed":
        values.update(snoozed_until=snoozed_until)
    elif to == "resolved":
        values.update(assignee=None, resolved_at=now, snoozed_until=None, unanswered=0, unread=0)
    names = sorted(values)
    sets = ", ".join(f"{n} = ${i + 3}" for i, n in enumerate(names))
    update = f"UPDATE inbox_conversation SET {sets} WHERE tenant = $1 AND id = $2 RETURNING *"
    params: list[Any] = [tenant_id, conv_id, *(values[n] for n in names)]
    assigns = to == "assigned" and not keeps_holder
    silence = (frm in WITH_A_HUMAN) != (to in WITH_A_HUMAN)
    if silence or (assigns and contact_id is None):
        who = await db.fetchrow("SELECT contact, external_id FROM identity WHERE tenant = $1 AND id = $2",
                                tenant_id, conv["identity"])
        contact_id = int(who["contact"]) if contact_id is None else contact_id
        contact_locked = False
        if silence:
            await windows.set_bot_silenced(tenant_id, conv["channel"], who["external_id"], to in WITH_A_HUMAN)
    stamp = _epoch(now)
    kind, payload = None, {"conversation": conv_id, "channel": conv["channel"]}
    if assigns:
        rule = rule or "manual"
        n = len(params)
        key = f"inbox:{conv_id}:assignment:{stamp}"
        timeline_cte = ""
        extra: list[Any] = []
        if contact_locked and assignee_label is not None and contact_id is not None:
            # The event, written only if the identity still belongs to the contact the caller locked (a new
            # statement sees every commit); otherwise `timeline.append` below takes the long way.
            event_sql, extra = timeline.insert_locked_sql(
                n + 7, tenant_id, contact_id, "assignment", "siyu", now,
                {**payload, "to": assignee_label, "rule": rule, "by": actor_label}, key, conv["identity"],
                only_if=f"(SELECT contact FROM identity WHERE tenant = $1 AND id = ${n + 9}) = ${n + 8}")
            timeline_cte = f"event AS ({event_sql}), "
        # The conversation, the assignment log, the rep's round-robin time and the line in the thread (and
        # the timeline event) in one statement.
        row = dict(await db.fetchrow(
            f"WITH conv AS ({update}), "
            f"assignment AS (INSERT INTO inbox_assignment (tenant, conversation, contact, staff, rule, queued_at, "
            f"  assigned_at, end_reason) VALUES ($1, $2, ${n + 1}, ${n + 2}, ${n + 3}, ${n + 4}, ${n + 5}, '') "
            f"  RETURNING id), "
            f"seat AS (UPDATE inbox_agent SET last_assigned_at = ${n + 5} WHERE tenant = $1 AND staff = ${n + 2}), "
            f"rep AS (SELECT COALESCE(NULLIF(name, ''), email) AS label FROM staff WHERE tenant = $1 AND id = ${n + 2}), "
            f"{timeline_cte}"
            f"line AS (INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, "
            f"  status, source_key, created_at) SELECT $1, $2, 'system', 'siyu', 'event', "
            f"  jsonb_build_object('event', 'assigned', 'to', rep.label, 'rule', ${n + 3}::text, "
            f"  'by', ${n + 6}::text)::text, 'noted', 'sys:' || $2 || ':assigned:' || assignment.id, ${n + 5} "
            f"  FROM assignment, rep ON CONFLICT (tenant, source_key) DO NOTHING) "
            f"SELECT conv.*, assignment.id AS assignment_id, rep.label AS assignee_label, "
            f"{'(SELECT count(*) FROM event)' if timeline_cte else '0'} AS events_written "
            f"FROM conv, assignment, rep",
            *params, contact_id, assignee, rule, conv["queued_at"], now, actor_label, *extra))
        label = row.pop("assignee_label")
        if row.pop("events_written"):
            kind = None  # written above
        else:
            kind = "assignment"
            contact_locked = False  # the long way: lock the identity's contact now
        payload = {**payload, "to": label, "rule": rule, "by": actor_label}
        # row["assignment_id"]: its SLA is watched by the inbox sweep (jobs.sweep)
    else:
        row = dict(await db.fetchrow(update, *params))
        contact_locked = False
        if to == "queued":
            kind, payload = "handoff", {**payload, "reason": reason or conv["handoff_reason"], "by": actor_label}
            await system_line(tenant_id, conv_id, "queued", now, f"sys:{conv_id}:queued:{stamp}", reason=reason,
                              by=actor_label)
        elif to == "resolved":
            kind, payload = "resolution", {**payload, "by": actor_label}
            await system_line(tenant_id, conv_id, "resolved", now, f"sys:{conv_id}:resolved:{stamp}",
                              by=actor_label)
        elif to == "snoozed":
            await system_line(tenant_id, conv_id, "snoozed", now, f"sys:{conv_id}:snoozed:{stamp}", by=actor_label,
                              until=snoozed_until.isoformat() if snoozed_until else "")
        elif to == "bot" and frm == "resolved":
            await system_line(tenant_id, conv_id, "reopened", now, f"sys:{conv_id}:reopened:{stamp}",
                              by=actor_label, **({"reason": reason} if reason else {}))
    if kind is not None:
        await timeline.append(tenant_id, None, kind, "siyu", now, payload, f"inbox:{conv_id}:{kind}:{stamp}",
                              identity_id=conv["identity"])
    row["previous_assignee"] = conv["assignee"]
    await announce(row, f"status:{to}")
    return row


async def announce(conv: dict[str, Any], event: str) -> None:
    """Tell every web process (after commit) that this conversation changed; each relays it to the
    viewers whose scope includes it."""
    await effects.publish(live_channel(conv["tenant"]), {
        "conversation": conv["id"], "event": event, "status": conv["status"], "assignee": conv["assignee"],
        "teams": list(conv["teams"] or ()), "previous_assignee": conv.get("previous_assignee"),
        "last_assignee": conv.get("last_assignee")})
