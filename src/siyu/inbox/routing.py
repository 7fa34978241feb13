"""Routing: which rep gets a waiting conversation.

Eligible: online, active, a member of a team that serves the conversation (channel, language, tag; a
tenant without team rules, or a conversation no team serves, lets every rep take it), below capacity
(`staff.max_concurrent` assigned conversations). Preference: the contact's owner (the WeCom rep who added
them, when that rep is a Siyu agent) → the rep who served this contact last within N days → the
least-loaded → round-robin among equals (longest since their last assignment).

Never double-assigned, never over capacity, with any number of routers at once: the conversation is
locked first; then each candidate's `inbox_agent` row is locked (`SKIP LOCKED`: another router is filling
that seat right now, try the next) and their load is counted under that lock. Every path that gives a
rep a conversation takes that lock, so the count cannot change until this transaction ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from siyu.core import db
from siyu.inbox import conversations as convs
from siyu.inbox.config import InboxSettings, team_routes

RULE_RANK = {"owner": 0, "recent": 1, "least_loaded": 2}


@dataclass(frozen=True)
class Candidate:
    staff_id: int
    capacity: int
    load: int
    rule: str
    last_assigned_epoch: float


async def serving_teams(tenant_id: int, channel: str, contact_id: int) -> list[int]:
    """The teams whose rules serve this conversation; [] means everyone."""
    routes = await team_routes(tenant_id)
    if not routes:
        return []
    contact = await db.fetchrow("SELECT language FROM contact WHERE tenant = $1 AND id = $2", tenant_id, contact_id)
    tags = {int(r["tag"]) for r in await db.fetch(
        "SELECT tag FROM contact_tag WHERE tenant = $1 AND contact = $2", tenant_id, contact_id)}
    language = (contact["language"] if contact else "") or "zh_CN"
    return [r.team_id for r in routes if r.serves(channel, language, tags)]


async def candidates(tenant_id: int, conv: dict[str, Any], contact_id: int,
                     exclude: tuple[int, ...] = ()) -> list[Candidate]:
    """Eligible reps below capacity, in preference order, from ONE query (read without locks; `assign_next`
    re-checks under the lock). The rule: the contact's owner (their WeCom rep), then the rep who served
    them last within the tenant's `recent_days`, then everyone; least load, then longest since an
    assignment, within each."""
    rows = await db.fetch(
        "WITH recent AS (SELECT a.staff FROM inbox_assignment a WHERE a.tenant = $1 AND a.contact = $4 "
        "  AND a.assigned_at > now() - make_interval(days => COALESCE("
        "    (SELECT recent_days FROM inbox_settings WHERE tenant = $1), $5)) "
        "  ORDER BY a.assigned_at DESC LIMIT 1), "
        "owners AS (SELECT DISTINCT staff_userid FROM owner WHERE tenant = $1 AND contact = $4 AND removed_at IS NULL) "
        "SELECT a.staff, s.max_concurrent, COALESCE(extract(epoch FROM a.last_assigned_at), 0) AS last_epoch, "
        "(SELECT count(*) FROM inbox_conversation c WHERE c.tenant = a.tenant AND c.assignee = a.staff "
        "  AND c.status = 'assigned') AS load, "
        "CASE WHEN a.wecom_userid <> '' AND a.wecom_userid IN (SELECT staff_userid FROM owners) THEN 'owner' "
        "  WHEN a.staff IN (SELECT staff FROM recent) THEN 'recent' ELSE 'least_loaded' END AS rule "
        "FROM inbox_agent a JOIN staff s ON s.tenant = a.tenant AND s.id = a.staff "
        "WHERE a.tenant = $1 AND a.presence = 'online' AND s.is_active AND s.role IN ('agent', 'tenant_admin') "
        "AND NOT (a.staff = ANY($2::int[])) "
        "AND (cardinality($3::int[]) = 0 OR EXISTS (SELECT 1 FROM team_member tm WHERE tm.tenant = a.tenant "
        "  AND tm.staff = a.staff AND tm.team = ANY($3::int[])))",
        tenant_id, list(exclude), list(conv["teams"] or ()), contact_id, InboxSettings.recent_days)
    found = [Candidate(int(r["staff"]), int(r["max_concurrent"]), int(r["load"]), str(r["rule"]),
                       float(r["last_epoch"])) for r in rows if r["load"] < r["max_concurrent"]]
    found.sort(key=lambda c: (RULE_RANK[c.rule], c.load, c.last_assigned_epoch, c.staff_id))
    return found


async def assign_next(conv: dict[str, Any], contact_id: int, *, exclude: tuple[int, ...] = (),
                      actor_label: str = "routing") -> dict[str, Any] | None:
    """Give a locked, queued conversation to the best eligible rep; None when nobody can take it now."""
    tenant_id = conv["tenant"]
    for cand in await candidates(tenant_id, conv, contact_id, exclude):
        seat = await db.fetchrow(
            "SELECT a.staff FROM inbox_agent a WHERE a.tenant = $1 AND a.staff = $2 AND a.presence = 'online' "
            "FOR UPDATE SKIP LOCKED", tenant_id, cand.staff_id)
        if seat is None:
            continue  # another router holds this seat right now, or the rep just went away
        load = await db.fetchrow(
            "SELECT count(*) AS n FROM inbox_conversation WHERE tenant = $1 AND assignee = $2 AND status = 'assigned'",
            tenant_id, cand.staff_id)
        if int(load["n"]) >= cand.capacity:
            continue
        return await convs.transition(conv, "assigned", assignee=cand.staff_id, rule=cand.rule,
                                      actor_label=actor_label, contact_id=contact_id)
    return None


async def hold_seat(tenant_id: int, staff_id: int) -> None:
    """Take the rep's routing lock (wait for it): manual assignments and snooze wake-ups call this before
    they add to a rep's load, so routing's count stays exact."""
    await db.execute("INSERT INTO inbox_agent (tenant, staff, presence, presence_at, wecom_userid) "
                     "VALUES ($1, $2, 'offline', now(), '') ON CONFLICT (tenant, staff) DO NOTHING", tenant_id, staff_id)
    await db.fetchrow("SELECT 1 FROM inbox_agent WHERE tenant = $1 AND staff = $2 FOR UPDATE", tenant_id, staff_id)


async def queue_position(tenant_id: int, conv: dict[str, Any]) -> int:
    """How many waiting conversations are ahead of this one (VIP first, then first come)."""
    row = await db.fetchrow(
        "SELECT count(*) AS n FROM inbox_conversation WHERE tenant = $1 AND status = 'queued' AND id <> $2 "
        "AND (vip::int > $3::bool::int OR (vip = $3::bool AND (queued_at, id) < ($4::timestamptz, $2::bigint)))",
        tenant_id, conv["id"], bool(conv["vip"]), conv["queued_at"])
    return int(row["n"])


async def route(tenant_id: int, conversation_id: int, exclude: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """Route one waiting conversation in its own transaction; the assigned row, or None."""
    async with db.transaction():
        conv = await convs.lock(tenant_id, conversation_id)
        if conv["status"] != "queued":
            return None
        return await assign_next(conv, await convs.contact_of(tenant_id, conv["identity"]), exclude=exclude)


async def sla_excluded(tenant_id: int, conv: dict[str, Any]) -> tuple[int, ...]:
    """Reps who let this wait pass its SLA since it was queued: the next rep gets it."""
    rows = await db.fetch(
        "SELECT DISTINCT staff FROM inbox_assignment WHERE tenant = $1 AND conversation = $2 AND end_reason = 'sla' "
        "AND assigned_at >= COALESCE($3, '-infinity'::timestamptz)", tenant_id, conv["id"], conv["queued_at"])
    return tuple(int(r["staff"]) for r in rows)


async def drain(tenant_id: int, limit: int = 200) -> int:
    """Route waiting conversations in queue order (VIP first, then first come) while reps have room.
    Conversations no free rep can serve stay in line; the others behind them still get routed."""
    assigned = 0
    row = await db.fetchrow(
        "SELECT count(*) AS n FROM inbox_agent a JOIN staff s ON s.tenant = a.tenant AND s.id = a.staff "
        "WHERE a.tenant = $1 AND a.presence = 'online' AND s.is_active", tenant_id)
    if int(row["n"]) == 0:
        return 0
    waiting = await db.fetch(
        "SELECT id FROM inbox_conversation WHERE tenant = $1 AND status = 'queued' "
        "ORDER BY vip DESC, queued_at, id LIMIT $2", tenant_id, limit)
    for w in waiting:
        async with db.transaction():
            conv = await db.fetchrow("SELECT * FROM inbox_conversation WHERE tenant = $1 AND id = $2 "
                                     "AND status = 'queued' FOR UPDATE SKIP LOCKED", tenant_id, w["id"])
            if conv is None:
                continue
            conv = dict(conv)
            contact_id = await convs.contact_of(tenant_id, conv["identity"])
            if await assign_next(conv, contact_id, exclude=await sla_excluded(tenant_id, conv)) is not None:
                assigned += 1
    return assigned
