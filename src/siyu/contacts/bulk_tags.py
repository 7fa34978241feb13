"""Tag or untag many contacts at once from the contact list: the ones ticked on the page, or every contact the
list's filters select.

- Ticked ones (at most a page): one transaction now. Ids the person may not see, missing ones and
  merged-away ones are passed over alike (nothing tells them apart); each contact is locked like a single
  tag (`FOR SHARE`: a merge waits), and one audit entry names the tag and the contacts.
- Every matching one: a `contact_bulk_action` row and the job `contacts.bulk_tag`, which walks the matching
  contacts by id in batches. Each batch compiles the filters again, applies the scope of the person who
  started it as it is then (a rep acts only on contacts in their scope), locks its contacts, changes the
  tags with ON CONFLICT / DELETE (a batch done twice changes nothing) and moves the cursor in the same
  transaction: a job run twice, or cut off and run again, ends in the same state. The form's one-time key
  makes a second submit find the first action. The page shows its progress; the start and the end are audited.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg.exceptions import QueryCanceledError

from siyu.contacts import audience as audiences
from siyu.contacts import search as finder
from siyu.contacts.listing import ListFilters, audience_of
from siyu.contacts.scope import EVERYONE, Scope, condition
from siyu.contacts.services import tag_id_for
from siyu.core import clock, db, effects
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit
from siyu.tenants.staff import load_current_user

JOB = "contacts.bulk_tag"
JOB_TRIES = 5
SWEEP = "contacts.sweep_bulk"
ACTIONS = ("tag", "untag")
MAX_SELECTED = 100  # a page of the list
BATCH = 1000
RUN_SECONDS = 20  # a run hands over to a fresh job after this long, well inside arq's job timeout
COUNT_TIMEOUT_MS = 10_000
STALE_SECONDS = 120  # an unfinished action untouched this long is enqueued again by the sweeper
KEY_MAX = 64
_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Outcome:
    matched: int  # contacts acted on (visible, live)
    changed: int  # of those, how many gained or lost the tag


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise InvalidInput.one("action", N_("Choose one of: {choices}."), choices=", ".join(ACTIONS))


async def _tag_for(tenant_id: int, action: str, tag_name: str, tag_id: int | None) -> tuple[int, str]:
    """The tag to add (by name, made on first use, like a single tag) or to remove (an existing one)."""
    if action == "tag":
        return await tag_id_for(tenant_id, tag_name)
    if tag_id is None or not 0 < tag_id <= _INT_MAX:
        raise InvalidInput.one("tag_id", N_("Choose the tag to remove."))
    row = await db.fetchrow("SELECT id, name FROM tag WHERE tenant = $1 AND id = $2", tenant_id, tag_id)
    if row is None:
        raise InvalidInput.one("tag_id", N_("This is an unknown tag; reload the page and choose again."))
    return int(row["id"]), row["name"]


async def _apply(tenant_id: int, action: str, tag: int, ids: list[int]) -> int:
    """Add or remove the tag on these (locked, live) contacts; how many changed."""
    if not ids:
        return 0
    if action == "tag":
        rows = await db.fetch(
            "INSERT INTO contact_tag (tenant, contact, tag, created_at) SELECT $1, unnest($2::int[]), $3, now() "
            "ON CONFLICT (tenant, contact, tag) DO NOTHING RETURNING contact", tenant_id, ids, tag)
    else:
        rows = await db.fetch("DELETE FROM contact_tag WHERE tenant = $1 AND contact = ANY($2::int[]) AND tag = $3 "
                              "RETURNING contact", tenant_id, ids, tag)
    return len(rows)


async def do_tag_selected(tenant_id: int, contact_ids: list[int], action: str, tag_name: str, tag_id: int | None,
                          actor: Actor, scope: Scope = EVERYONE) -> Outcome:
    """Tag (by name) or untag (by id) the ticked contacts that `scope` may see."""
    _check_action(action)
    wanted = sorted({i for i in contact_ids if 0 < i <= _INT_MAX})
    if not wanted:
        raise InvalidInput.one("contact", N_("Tick the contacts first."))
    if len(wanted) > MAX_SELECTED:
        raise InvalidInput.one("contact", N_("Tick at most {max} contacts, or act on all that match."),
                               max=MAX_SELECTED)
    async with db.transaction():
        tag, name = await _tag_for(tenant_id, action, tag_name, tag_id)
        args: list[Any] = [tenant_id, wanted]
        seen = condition(scope, "c", args)
        rows = await db.fetch(
            "SELECT c.id FROM contact c WHERE c.tenant = $1 AND c.id = ANY($2::int[]) AND c.merged_into IS NULL"
            f"{f' AND {seen}' if seen else ''} ORDER BY c.id FOR SHARE OF c", *args)
        ids = [int(r["id"]) for r in rows]
        changed = await _apply(tenant_id, action, tag, ids)
        if ids:
            await record_audit(actor, tenant_id, f"contacts.bulk_{'tagged' if action == 'tag' else 'untagged'}",
                               "tag", tag, {"tag": name, "contacts": len(ids), "changed": changed, "ids": ids})
    return Outcome(len(ids), changed)


# --- every matching contact: an action and its job ----------------------------------------------------------

def _matching(tenant_id: int, search: str, found: audiences.Audience | None, scope: Scope, now: datetime,
              after_id: int | None = None) -> tuple[str, list[Any]]:
    """The condition on `contact c` of the contacts an action reaches, and its values."""
    args: list[Any] = [tenant_id]
    clauses = ["c.tenant = $1", "c.merged_into IS NULL"]
    if after_id is not None:
        args.append(after_id)
        clauses.append(f"c.id > ${len(args)}")
    if found is not None and (filtered := found.where(args, now)) is not None:
        clauses.append(filtered)
    if search:
        clauses.append(finder.text_condition(search, args))
    if (seen := condition(scope, "c", args)) is not None:
        clauses.append(seen)
    return " AND ".join(clauses), args


async def count_matching(tenant_id: int, filters: ListFilters, scope: Scope = EVERYONE) -> int:
    """How many contacts an action on every match would reach now (bounded: a count that takes too long is
    refused rather than left running)."""
    found = await audience_of(tenant_id, filters)
    where, args = _matching(tenant_id, filters.q, found, scope, clock.now())
    try:
        async with db.transaction():
            await db.execute(f"SET LOCAL statement_timeout = {int(COUNT_TIMEOUT_MS)}")
            row = await db.fetchrow(f"SELECT count(*) AS n FROM contact c WHERE {where}", *args)
    except QueryCanceledError:
        raise Conflict(N_("Counting these contacts took too long. Narrow the filters and try again.")) from None
    return int(row["n"])


async def do_start(tenant_id: int, filters: ListFilters, action: str, tag_name: str, tag_id: int | None,
                   request_key: str, actor: Actor, staff_id: int, scope: Scope = EVERYONE) -> int:
    """Start tagging (or untagging) every contact the filters select, as the job `contacts.bulk_tag`; the
    action's id. The same `request_key` again (a second submit) answers the first action."""
    _check_action(action)
    key = (request_key or "").strip()
    if not key or len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        raise InvalidInput.one("request_key", N_("Reload the page and try again."))
    found = await audience_of(tenant_id, filters)
    total = await count_matching(tenant_id, filters, scope)
    async with db.transaction():
        existing = await db.fetchrow("SELECT id FROM contact_bulk_action WHERE tenant = $1 AND request_key = $2",
                                     tenant_id, key)
        if existing is not None:
            return int(existing["id"])
        tag, name = await _tag_for(tenant_id, action, tag_name, tag_id)
        row = await db.fetchrow(
            "INSERT INTO contact_bulk_action (tenant, staff, actor_label, request_key, action, tag, tag_name, search, "
            "definition, filters, state, total, done, changed, after_id, error, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, 'queued', $11, 0, 0, 0, '', now(), now()) "
            "ON CONFLICT (tenant, request_key) DO NOTHING RETURNING id",
            tenant_id, staff_id, actor.label[:254], key, action, tag, name, filters.q,
            json.dumps(found.as_json() if found is not None else {}), json.dumps(filters.as_query()), total)
        if row is None:  # a concurrent submit of the same form won
            raise Conflict(N_("This action was started already."))
        action_id = int(row["id"])
        await record_audit(actor, tenant_id, "contacts.bulk_started", "tag", tag,
                           {"tag": name, "action": action, "filters": filters.as_query(), "total": total,
                            "bulk": action_id})
        await effects.enqueue(JOB, tenant_id, action_id, job_id=f"{JOB}:{tenant_id}:{action_id}:0")
    return action_id


async def get_action(tenant_id: int, action_id: int, staff_id: int | None = None) -> dict[str, Any]:
    """One action; with `staff_id`, only if that person started it (a rep sees only their own)."""
    if not 0 < action_id <= _INT_MAX:
        raise NotFound()
    row = await db.fetchrow(
        "SELECT id, staff, actor_label, action, tag, tag_name, search, filters::text AS filters, state, total, done, "
        "changed, error, created_at, updated_at, finished_at FROM contact_bulk_action WHERE tenant = $1 AND id = $2",
        tenant_id, action_id)
    if row is None or (staff_id is not None and row["staff"] != staff_id):
        raise NotFound()
    return {**dict(row), "filters": json.loads(row["filters"])}


async def _fail(tenant_id: int, action_id: int, error: str) -> None:
    async with db.transaction():
        row = await db.fetchrow(
            "UPDATE contact_bulk_action SET state = 'failed', error = $3, updated_at = now(), finished_at = now() "
            "WHERE tenant = $1 AND id = $2 AND state IN ('queued', 'running') RETURNING tag, tag_name, done, changed",
            tenant_id, action_id, error)
        if row is not None:
            await record_audit(Actor(None, "system"), tenant_id, "contacts.bulk_failed", "tag", int(row["tag"]),
                               {"tag": row["tag_name"], "bulk": action_id, "done": row["done"],
                                "changed": row["changed"], "error": error})


async def run_batch(tenant_id: int, action_id: int, batch: int = BATCH) -> bool:
    """One batch of the action (its own transaction); True while there is more to do."""
    a = await db.fetchrow(
        "SELECT staff, actor_label, action, tag, tag_name, search, definition::text AS definition, state "
        "FROM contact_bulk_action WHERE tenant = $1 AND id = $2", tenant_id, action_id)
    if a is None or a["state"] not in ("queued", "running"):
        return False
    person = await load_current_user(int(a["staff"])) if a["staff"] is not None else None
    if person is None or person.tenant_id != tenant_id:
        await _fail(tenant_id, action_id, N_("The person who started it can no longer work in Siyu."))
        return False
    scope = await audiences.scope_for(tenant_id, person.id, person.role)
    definition = json.loads(a["definition"])
    try:
        found = await audiences.compiler().definition(tenant_id, definition) if definition else None
    except InvalidInput:
        await _fail(tenant_id, action_id, N_("Its filters name a tag that was deleted."))
        return False
    now = clock.now()
    async with db.transaction():
        again = await db.fetchrow("SELECT state, after_id FROM contact_bulk_action WHERE tenant = $1 AND id = $2 "
                                  "FOR UPDATE", tenant_id, action_id)
        if again is None or again["state"] not in ("queued", "running"):
            return False
        where, args = _matching(tenant_id, a["search"], found, scope, now, int(again["after_id"]))
        args.append(batch)
        # FOR SHARE: a merge of one of these waits until the batch is written (the tag goes with the person).
        rows = await db.fetch(f"SELECT c.id FROM contact c WHERE {where} ORDER BY c.id LIMIT ${len(args)} "
                              "FOR SHARE OF c", *args)
        ids = [int(r["id"]) for r in rows]
        changed = await _apply(tenant_id, a["action"], int(a["tag"]), ids)
        more = len(ids) == batch
        row = await db.fetchrow(
            "UPDATE contact_bulk_action SET state = $3::text, after_id = $4, done = done + $5, "
            "changed = changed + $6, updated_at = now(), finished_at = CASE WHEN $3::text = 'done' THEN now() END "
            "WHERE tenant = $1 AND id = $2 RETURNING done, changed",
            tenant_id, action_id, "running" if more else "done", ids[-1] if ids else int(again["after_id"]),
            len(ids), changed)
        if not more:
            await record_audit(Actor(person.id, a["actor_label"]), tenant_id,
                               f"contacts.bulk_{'tagged' if a['action'] == 'tag' else 'untagged'}", "tag",
                               int(a["tag"]), {"tag": a["tag_name"], "contacts": row["done"],
                                               "changed": row["changed"], "bulk": action_id})
    return more


async def run(tenant_id: int, action_id: int, part: int = 0, seconds: float = RUN_SECONDS) -> None:
    """Batches until the action is done; after `seconds` the rest goes to a fresh job (part + 1)."""
    started = time.monotonic()
    while await run_batch(tenant_id, action_id):
        if time.monotonic() - started > seconds:
            async with db.transaction():
                await effects.enqueue(JOB, tenant_id, action_id, part + 1,
                                      job_id=f"{JOB}:{tenant_id}:{action_id}:{part + 1}")
            return


async def unfinished(older_than_seconds: int = STALE_SECONDS) -> list[tuple[int, int]]:
    """(tenant, action) of the actions not finished and untouched for a while: the sweeper enqueues them again
    (their job was lost with Redis, or the worker died)."""
    rows = await db.fetch(
        "SELECT tenant, id FROM contact_bulk_action WHERE state IN ('queued', 'running') "
        "AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT 100", older_than_seconds)
    return [(int(r["tenant"]), int(r["id"])) for r in rows]

