"""Identity resolution and contact locks for many people at once, for writers that attach history in bulk
(commerce's purchase import): the same rules as `resolve` and `live`, set-based.

- `resolve_many`: the identities of many (channel, external id) sightings, created on first sight with a
  contact each (or on the live contact that holds their unionid). Race-safe like `resolve`: identities are
  inserted ON CONFLICT DO NOTHING and the contacts made for the losers are removed in the same transaction;
  the unique unionid index refuses a second live contact (the batch is retried). Sightings whose unionid
  would converge two existing contacts go through `resolve` one by one (a merge is no bulk operation).
- `lock_many`: inside the writer's transaction, lock the live contacts of many identities and contact ids
  (FOR SHARE, lowest id first, the order merges use), following merges, and say where each one is now.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asyncpg.exceptions import DeadlockDetectedError, SerializationError, UniqueViolationError

from siyu.contacts import resolve as single
from siyu.contacts.live import MAX_HOPS
from siyu.core import db
from siyu.core.errors import Conflict
from siyu.core.i18n import N_

log = logging.getLogger("siyu.contacts.bulk")

MAX_ATTEMPTS = 10
RETRYABLE = (UniqueViolationError, DeadlockDetectedError, SerializationError)


@dataclass(frozen=True)
class Sighting:
    external_id: str
    unionid: str | None
    first_at: datetime  # the earliest and latest time the source saw the person (their first and last order)
    last_at: datetime


@dataclass(frozen=True)
class Found:
    identity_id: int
    contact_id: int


_EXISTING = """
SELECT i.id, i.external_id, i.contact, i.unionid, i.last_seen_at, c.unionid AS contact_unionid
FROM identity i JOIN contact c ON c.tenant = i.tenant AND c.id = i.contact
WHERE i.tenant = $1 AND i.channel = $2 AND i.external_id = ANY($3::varchar[])
"""

# New people: a contact each (or the live contact their unionid names), then the identities; an identity
# someone else inserted meanwhile is skipped here and its contact removed below.
_CREATE = """
WITH wanted AS (
    SELECT u.external_id, u.unionid, u.first_at, u.last_at, h.id AS holder,
           CASE WHEN h.id IS NULL THEN nextval(pg_get_serial_sequence('contact', 'id')) END AS new_contact
    FROM unnest($3::varchar[], $4::varchar[], $5::timestamptz[], $6::timestamptz[]) AS u(external_id, unionid, first_at, last_at)
    LEFT JOIN contact h ON h.tenant = $1 AND u.unionid IS NOT NULL AND h.unionid = u.unionid AND h.merged_into IS NULL
), contacts AS (
    INSERT INTO contact (id, tenant, unionid, first_seen_at, created_at, updated_at)
    SELECT new_contact, $1, unionid, first_at, now(), now() FROM wanted WHERE new_contact IS NOT NULL
    RETURNING id
), identities AS (
    INSERT INTO identity (tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, profile)
    SELECT $1, COALESCE(holder, new_contact), $2, external_id, unionid, first_at, last_at, '{}'::jsonb FROM wanted
    ON CONFLICT (tenant, channel, external_id) DO NOTHING
    RETURNING id, external_id, contact
)
SELECT NULL::int AS id, NULL::varchar AS external_id, NULL::int AS contact, (SELECT array_agg(id) FROM contacts) AS made
UNION ALL
SELECT id, external_id, contact, NULL FROM identities
"""


async def resolve_many(tenant_id: int, channel: str, sightings: Sequence[Sighting]) -> dict[str, Found]:
    """The identity (and live contact) of every sighting, by external id. Runs its own transactions."""
    if db.in_transaction():
        raise RuntimeError("resolve_many() runs its own transactions; call it outside one")
    by_id = {s.external_id: s for s in sightings}
    found: dict[str, Found] = {}
    one_by_one: list[Sighting] = []
    for n in range(MAX_ATTEMPTS):
        try:
            async with db.transaction():
                found, one_by_one = await _attempt(tenant_id, channel, by_id)
            break
        except RETRYABLE as exc:
            if n == MAX_ATTEMPTS - 1:
                raise
            log.debug("bulk resolution retried after %s", type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 0.01 * (n + 1)))
    for s in one_by_one:  # a unionid that may join two contacts: the single path, which merges
        r = await single.resolve(tenant_id, channel, s.external_id, unionid=s.unionid, at=s.last_at)
        found[s.external_id] = Found(r.identity_id, r.contact_id)
    return found


async def _attempt(tenant_id: int, channel: str, by_id: dict[str, Sighting]) -> tuple[dict[str, Found], list[Sighting]]:
    found: dict[str, Found] = {}
    one_by_one: list[Sighting] = []
    later: list[tuple[int, datetime]] = []
    for r in await db.fetch(_EXISTING, tenant_id, channel, list(by_id)):
        s = by_id[r["external_id"]]
        found[s.external_id] = Found(int(r["id"]), int(r["contact"]))
        if s.unionid is not None and (r["unionid"] != s.unionid or r["contact_unionid"] != s.unionid):
            one_by_one.append(s)
        elif s.last_at > r["last_seen_at"]:
            later.append((int(r["id"]), s.last_at))
    if later:  # seen again: the same note `resolve` makes of a sighting
        await db.execute(
            "UPDATE identity i SET last_seen_at = GREATEST(i.last_seen_at, u.at) FROM unnest($2::int[], $3::timestamptz[]) "
            "AS u(id, at) WHERE i.tenant = $1 AND i.id = u.id", tenant_id, [i for i, _ in later], [a for _, a in later])
    new: list[Sighting] = []
    unionids: set[str] = set()
    for key, s in by_id.items():
        if key in found:
            continue
        if s.unionid is not None and s.unionid in unionids:
            one_by_one.append(s)  # two new ids with one unionid: the second joins the first's contact
            continue
        if s.unionid is not None:
            unionids.add(s.unionid)
        new.append(s)
    if unionids:  # the live contacts new identities will join must not be merged away meanwhile
        await db.execute("SELECT id FROM contact WHERE tenant = $1 AND unionid = ANY($2::varchar[]) "
                         "AND merged_into IS NULL ORDER BY id FOR SHARE", tenant_id, sorted(unionids))
    if new:
        rows = await db.fetch(_CREATE, tenant_id, channel, [s.external_id for s in new], [s.unionid for s in new],
                              [s.first_at for s in new], [s.last_at for s in new])
        made = {int(c) for r in rows if r["id"] is None for c in r["made"] or []}
        rows = [r for r in rows if r["id"] is not None]
        for r in rows:
            found[r["external_id"]] = Found(int(r["id"]), int(r["contact"]))
        kept = {int(r["contact"]) for r in rows}
        orphans = sorted(made - kept)
        lost = [s.external_id for s in new if s.external_id not in found]
        if lost:  # first seen by someone else meanwhile: theirs stands, ours rolls back
            if orphans:
                await db.execute("DELETE FROM contact WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id, orphans)
            for r in await db.fetch(_EXISTING, tenant_id, channel, lost):
                found[r["external_id"]] = Found(int(r["id"]), int(r["contact"]))
        missing = [s.external_id for s in new if s.external_id not in found]
        if missing:
            raise SerializationError(f"{len(missing)} identities neither inserted nor found")
    return found, one_by_one


async def live_contacts(tenant_id: int, contact_ids: Sequence[int]) -> dict[int, int]:
    """Each contact id that exists in this tenant → the live contact it is (or was merged into). Missing and
    other tenants' ids are left out."""
    out: dict[int, int] = {}
    current = {c: c for c in set(contact_ids) if 0 < c < 2**31}
    for _ in range(MAX_HOPS):
        if not current:
            return out
        rows = await db.fetch("SELECT id, merged_into FROM contact WHERE tenant = $1 AND id = ANY($2::int[])",
                              tenant_id, sorted(set(current.values())))
        at = {int(r["id"]): r["merged_into"] for r in rows}
        following: dict[int, int] = {}
        for asked, now in current.items():
            if now not in at:
                continue
            if at[now] is None:
                out[asked] = now
            else:
                following[asked] = int(at[now])
        current = following
    raise Conflict(N_("This contact's merge chain is too long."))


async def by_unionids(tenant_id: int, unionids: Sequence[str]) -> dict[str, int]:
    """The live contact that holds each unionid (those no contact holds are left out)."""
    rows = await db.fetch("SELECT id, unionid FROM contact WHERE tenant = $1 AND unionid = ANY($2::varchar[]) "
                          "AND merged_into IS NULL", tenant_id, sorted(set(unionids)))
    return {r["unionid"]: int(r["id"]) for r in rows}


@dataclass(frozen=True)
class Locked:
    identities: dict[int, int]  # identity id → its live contact, locked
    contacts: dict[int, int]  # contact id → the live contact it is now, locked


async def lock_many(tenant_id: int, identity_ids: Sequence[int], contact_ids: Sequence[int]) -> Locked:
    """Lock (FOR SHARE) the live contacts of these identities and contacts, lowest id first, and say where
    each is now. Writers that only add rows take this share lock; merges (FOR NO KEY UPDATE) wait for it,
    so rows added under it are moved by any merge that follows. Inside the writer's transaction."""
    if not db.in_transaction():
        raise RuntimeError("lock_many() must run inside siyu.core.db.transaction()")
    identities = sorted(set(identity_ids))
    asked = sorted(set(contact_ids))
    locked: set[int] = set()
    for _ in range(MAX_HOPS):
        of_identity = {int(r["id"]): int(r["contact"]) for r in await db.fetch(
            "SELECT id, contact FROM identity WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id, identities)}
        lives = await live_contacts(tenant_id, asked)
        wanted = sorted((set(of_identity.values()) | set(lives.values())) - locked)
        if wanted:
            rows = await db.fetch("SELECT id FROM contact WHERE tenant = $1 AND id = ANY($2::int[]) ORDER BY id FOR SHARE",
                                  tenant_id, wanted)
            locked |= {int(r["id"]) for r in rows}
        # Read again under the locks: a merge that committed meanwhile moved identities or contacts.
        again = {int(r["id"]): int(r["contact"]) for r in await db.fetch(
            "SELECT id, contact FROM identity WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id, identities)}
        lives_again = await live_contacts(tenant_id, asked)
        merged = {int(r["id"]) for r in await db.fetch(
            "SELECT id FROM contact WHERE tenant = $1 AND id = ANY($2::int[]) AND merged_into IS NOT NULL",
            tenant_id, sorted(set(again.values())))}
        if again == of_identity and lives_again == lives and not merged \
                and set(again.values()) | set(lives_again.values()) <= locked:
            return Locked(again, lives_again)
    raise Conflict(N_("These contacts keep moving between merges."))
