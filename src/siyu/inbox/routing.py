"""Routing: which rep gets a waiting conversation.

Eligible: online, active, a member of a team that serves the conversation (channel, language, tag; a
tenant without team rules, or a conversation no team serves, lets every rep take it), below capacity
(`staff.max_concurrent` assigned conversations). Preference: the contact's owner (the WeCom rep who added
them, when that rep is a Siyu agent) → the rep who served this contact last within N days → the
least-loaded → round-robin among equals (longest since their last assignment).

Never double-assigned, never over capacity, with any number of routers at once: the conversation is
locked first; then one statement locks the best candidate's `inbox_agent` row (`SKIP LOCKED`: another
router is filling that seat right now, take the next) and re-checks its load on the locked row. The load
lives on that row, kept by a trigger on `inbox_conversation` that must take the same lock to change it,
so it cannot change until this transaction ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from siyu.core import db
from siyu.inbox import conversations as convs
from siyu.inbox.config import InboxSettings, team_routes

RULES = ("owner", "recent", "least_loaded")  # in order of preference
# Besides these: `follow_up` (the customer wrote again; back to the rep who resolved it, `return_to`),
# `manual` and `reopen` (a person chose).


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


def _eligible(tail: str, teams: str = "$3", contact: str = "$4", conversation: str = "$6", queued_at: str = "$7",
              where: str = "TRUE", recent_days: str = "$5") -> str:
    """The eligible reps of a conversation with the rule that prefers each: the contact's owner (their WeCom
    rep), then the rep who served them last within the tenant's `recent_days`, then everyone. A rep who let
    this wait pass its first-reply deadline comes after those who did not (skipped once, not forever): the
    fewest misses since it was queued first, then the oldest miss, so when every eligible rep has missed it
    the conversation still goes to one of them (the one who missed longest ago) instead of waiting for
    nobody. Parameters: $1 tenant,
    $2 excluded reps; the default recent days, the conversation's serving teams ([] = everyone), contact,
    id and queue time are parameters $5, $3, $4, $6, $7 unless given otherwise (`route` reads them from
    the row it locks in the same statement)."""
    return (
        "SELECT a.staff, s.max_concurrent, a.load, COALESCE(NULLIF(s.name, ''), s.email) AS label, "
        "CASE WHEN a.wecom_userid <> '' AND a.wecom_userid IN (SELECT o.staff_userid FROM owner o "
        f"    WHERE o.tenant = $1 AND o.contact = {contact} AND o.removed_at IS NULL) THEN 0 "
        "  WHEN a.staff = (SELECT r.staff FROM inbox_assignment r WHERE r.tenant = $1 "
        f"    AND r.contact = {contact} AND r.assigned_at > now() - make_interval(days => COALESCE("
        f"      (SELECT recent_days FROM inbox_settings WHERE tenant = $1), {recent_days})) "
        "    ORDER BY r.assigned_at DESC LIMIT 1) THEN 1 ELSE 2 END AS pref, "
        "COALESCE(extract(epoch FROM a.last_assigned_at), 0) AS last_epoch, missed.n AS missed "
        "FROM inbox_agent a JOIN staff s ON s.tenant = a.tenant AND s.id = a.staff "
        "CROSS JOIN LATERAL (SELECT count(*) AS n, max(x.assigned_at) AS at FROM inbox_assignment x "
        f"  WHERE x.tenant = $1 AND x.conversation = {conversation} AND x.staff = a.staff AND x.end_reason = 'sla' "
        f"  AND x.assigned_at >= COALESCE({queued_at}, '-infinity'::timestamptz)) missed "
        f"WHERE {where} AND a.tenant = $1 AND a.presence = 'online' AND a.load < s.max_concurrent "
        "AND s.is_active AND s.role IN ('agent', 'tenant_admin') AND NOT (a.staff = ANY($2::int[])) "
        f"AND (cardinality({teams}::int[]) = 0 OR EXISTS (SELECT 1 FROM team_member tm WHERE tm.tenant = a.tenant "
        f"  AND tm.staff = a.staff AND tm.team = ANY({teams}::int[]))) "
        "ORDER BY missed.n, missed.at NULLS FIRST, pref, a.load, a.last_assigned_at NULLS FIRST, a.staff " + tail)


async def candidates(tenant_id: int, conv: dict[str, Any], contact_id: int,
                     exclude: tuple[int, ...] = ()) -> list[Candidate]:
    """Eligible reps below capacity, in preference order (least load, then longest since an assignment,
    within each rule), read without locks: what routing would choose now."""
    rows = await db.fetch(_eligible(""), tenant_id, list(exclude), list(conv["teams"] or ()), contact_id,
                          InboxSettings.recent_days, conv["id"], conv["queued_at"])
    return [Candidate(int(r["staff"]), int(r["max_concurrent"]), int(r["load"]), RULES[int(r["pref"])],
                      float(r["last_epoch"])) for r in rows]


async def assign_next(conv: dict[str, Any], contact_id: int, *, exclude: tuple[int, ...] = (),
                      actor_label: str = "routing", contact_locked: bool = False) -> dict[str, Any] | None:
    """Give a locked, queued conversation to the best eligible rep; None when nobody can take it now.

    One statement chooses and locks the seat: rows are locked in preference order, a seat another router
    holds is skipped, and a seat changed since the statement began is re-checked on its newest version
    (its load included) before it is taken, so the load read under the lock is exact."""
    seat = await db.fetchrow(_eligible("LIMIT 1 FOR UPDATE OF a SKIP LOCKED"), conv["tenant"], list(exclude),
                             list(conv["teams"] or ()), contact_id, InboxSettings.recent_days, conv["id"],
                             conv["queued_at"])
    if seat is None:
        return None
    return await convs.transition(conv, "assigned", assignee=int(seat["staff"]), rule=RULES[int(seat["pref"])],
                                  actor_label=actor_label, contact_id=contact_id, contact_locked=contact_locked,
                                  assignee_label=str(seat["label"]))


async def return_to(conv: dict[str, Any], contact_id: int, staff_id: int | None) -> dict[str, Any] | None:
    """Give a locked conversation the customer wrote to again back to the rep who resolved it (`staff_id`),
    when that rep can take it now: online, active, below capacity (their teams do not matter: they served
    it). None when they cannot; routing decides then. Their seat is locked as routing locks it (after the
    conversation), and its load is re-checked on the locked row."""
    if staff_id is None:
        return None
    seat = await db.fetchrow(
        "SELECT a.staff, COALESCE(NULLIF(s.name, ''), s.email) AS label FROM inbox_agent a "
        "JOIN staff s ON s.tenant = a.tenant AND s.id = a.staff WHERE a.tenant = $1 AND a.staff = $2 "
        "AND a.presence = 'online' AND a.load < s.max_concurrent AND s.is_active "
        "AND s.role IN ('agent', 'tenant_admin') FOR UPDATE OF a", conv["tenant"], staff_id)
    if seat is None:
        return None
    return await convs.transition(conv, "assigned", assignee=staff_id, rule="follow_up", actor_label="routing",
                                  contact_id=contact_id, assignee_label=str(seat["label"]))


async def hold_seats(tenant_id: int, *staff_ids: int | None) -> None:
    """Take reps' routing locks (wait for them), lowest id first: a manual assignment, transfer or snooze
    wake-up calls this with the rep who gets the conversation and the one who holds it now, before the
    load trigger moves their loads, so two opposite transfers cannot deadlock and routing's view of a
    seat stays exact."""
    ids = sorted({int(s) for s in staff_ids if s is not None})
    await db.execute("INSERT INTO inbox_agent (tenant, staff, presence, presence_at, wecom_userid) "
                     "SELECT $1, unnest($2::int[]), 'offline', now(), '' ON CONFLICT (tenant, staff) DO NOTHING",
                     tenant_id, ids)
    await db.fetch("SELECT 1 FROM inbox_agent WHERE tenant = $1 AND staff = ANY($2::int[]) ORDER BY staff FOR UPDATE",
                   tenant_id, ids)


async def queue_position(tenant_id: int, conv: dict[str, Any]) -> int:
    """How many waiting conversations are ahead of this one (VIP first, then first come)."""
    row = await db.fetchrow(
        "SELECT count(*) AS n FROM inbox_conversation WHERE tenant = $1 AND status = 'queued' AND id <> $2 "
        "AND (vip::int > $3::bool::int OR (vip = $3::bool AND (queued_at, id) < ($4::timestamptz, $2::bigint)))",
        tenant_id, conv["id"], bool(conv["vip"]), conv["queued_at"])
    return int(row["n"])


# Settings for a routing transaction (`set_config(…, true)`: this transaction only), sent with its lock.
#
# It commits without waiting for its WAL to reach the disk: still atomic and seen by everyone at once;
# only a crash in the next fraction of a second can forget it, and then the conversation is simply waiting
# again and the drain routes it anew. Anything durable that follows (a rep's reply, the notice to the
# customer in the send ledger) flushes the WAL up to it as well.
#
# Its statements use their generic plans: they are index lookups by tenant and id whose best plan does not
# depend on the values, and planning the seat pick anew each time costs more than running it.
ROUTING_SETTINGS = {"synchronous_commit": "off", "plan_cache_mode": "force_generic_plan"}


async def route(tenant_id: int, conversation_id: int, exclude: tuple[int, ...] = (),
                skip_locked: bool = False) -> dict[str, Any] | None:
    """Route one waiting conversation in its own transaction; the assigned row, or None (not waiting, no
    rep free, or — with `skip_locked` — another transaction has it right now).

    One statement locks the conversation, share-locks its live contact (the contacts' lock protocol,
    `siyu.contacts.live`: a merge that commits meanwhile updates that contact row, so the lock re-reads it
    and a contact merged away drops out), sets `ROUTING_SETTINGS` and picks and locks the seat
    (`assign_next`'s rules, reading the conversation from the row it just locked); one more assigns
    (`convs.transition`, which checks the identity is still on that contact before writing the timeline
    under the lock)."""
    async with db.transaction():
        skip = " SKIP LOCKED" if skip_locked else ""
        sets = "".join(f", set_config('{k}', '{v}', true) AS setting_{k}" for k, v in ROUTING_SETTINGS.items())
        row = await db.fetchrow(
            f"WITH conv AS MATERIALIZED (SELECT c.*, ct.id AS contact_now{sets} FROM inbox_conversation c "
            "  JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
            "  JOIN contact ct ON ct.tenant = i.tenant AND ct.id = i.contact AND ct.merged_into IS NULL "
            f"  WHERE c.tenant = $1 AND c.id = $3 FOR UPDATE OF c{skip} FOR SHARE OF ct) "
            "SELECT conv.*, seat.staff AS seat_staff, seat.label AS seat_label, seat.pref AS seat_pref FROM conv "
            "LEFT JOIN LATERAL (" + _eligible("LIMIT 1 FOR UPDATE OF a SKIP LOCKED", teams="conv.teams",
                                              contact="conv.contact_now", conversation="conv.id",
                                              queued_at="conv.queued_at", where="conv.status = 'queued'",
                                              recent_days="$4::int")
            + ") seat ON true",
            tenant_id, list(exclude), conversation_id, InboxSettings.recent_days)
        if row is None:  # missing, held elsewhere (skip_locked), or its contact was just merged away
            conv = await convs.try_lock(tenant_id, conversation_id, wait=not skip_locked)
            if conv is None or conv["status"] != "queued":
                return None
            return await assign_next(conv, await convs.contact_of(tenant_id, conv["identity"]), exclude=exclude)
        conv = {k: v for k, v in dict(row).items() if not k.startswith(("setting_", "seat_"))}
        contact_id = int(conv.pop("contact_now"))
        if conv["status"] != "queued" or row["seat_staff"] is None:
            return None
        return await convs.transition(conv, "assigned", assignee=int(row["seat_staff"]),
                                      rule=RULES[int(row["seat_pref"])], actor_label="routing", contact_id=contact_id,
                                      contact_locked=True, assignee_label=str(row["seat_label"]))


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
        if await route(tenant_id, int(w["id"]), skip_locked=True) is not None:
            assigned += 1
    return assigned
