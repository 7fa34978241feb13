"""Identity resolution: an inbound (channel, external id) becomes a contact, and identities that share a
unionid converge on one contact.

Race safety rests on the database, not on timing:
- `identity (tenant, channel, external_id)` is unique: first sight is an INSERT … ON CONFLICT DO NOTHING;
  the loser of a race rolls back its new contact and retries, then finds the winner's identity.
- `contact (tenant, unionid) WHERE unionid IS NOT NULL AND merged_into IS NULL` is unique: at most one
  live contact per unionid can ever be committed. Two transactions that give the same unionid to two
  contacts collide there (UniqueViolation); the loser retries, finds the winner's contact and merges.
- Merges lock both contacts FOR NO KEY UPDATE, lowest id first, then re-check what they read before
  the lock; a deadlock or serialization failure is retried like a collision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from asyncpg.exceptions import DeadlockDetectedError, SerializationError, UniqueViolationError

from siyu.contacts import merge
from siyu.contacts.live import lock_pair
from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_

log = logging.getLogger("siyu.contacts.resolve")

CHANNELS = ("oa", "mp", "wecom")
MAX_ATTEMPTS = 40
RETRYABLE = (UniqueViolationError, DeadlockDetectedError, SerializationError)
T = TypeVar("T")


class _Again(Exception):
    """What this transaction read has changed under it: roll back and start over."""


@dataclass(frozen=True)
class Resolved:
    identity_id: int
    contact_id: int
    created: bool  # the identity was seen for the first time


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    for n in range(MAX_ATTEMPTS):
        try:
            async with db.transaction():
                return await attempt()
        except (_Again, *RETRYABLE) as exc:
            if n == MAX_ATTEMPTS - 1:
                raise
            log.debug("identity resolution retried after %s", type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 0.002 * (n + 1)))  # spread the contenders
    raise AssertionError("unreachable")


def _validate(channel: str, external_id: str, unionid: str | None) -> None:
    if channel not in CHANNELS:
        raise InvalidInput.one("channel", N_("Choose one of: {choices}."), choices=", ".join(CHANNELS))
    if not external_id or len(external_id) > 128:
        raise InvalidInput.one("external_id", N_("Use 1 to {max} characters."), max=128)
    if unionid is not None and (not unionid or len(unionid) > 64):
        raise InvalidInput.one("unionid", N_("Use 1 to {max} characters."), max=64)


async def resolve_identity(tenant_id: int, channel: str, external_id: str, unionid: str | None = None,
                           at: datetime | None = None, profile: dict[str, Any] | None = None) -> int:
    """The contact of this identity, creating both on first sight. See `resolve`."""
    return (await resolve(tenant_id, channel, external_id, unionid, at, profile)).contact_id


async def resolve(tenant_id: int, channel: str, external_id: str, unionid: str | None = None,
                  at: datetime | None = None, profile: dict[str, Any] | None = None) -> Resolved:
    """Find or create the identity, note when it was seen (and its unionid and profile fields if given),
    and when its unionid (given now or stored earlier) belongs to another live contact, merge the two.

    `at` is when the person was seen (an inbound event's time, an MP login). Leave it None for what an API
    tells about them (user info, externalcontact/get): that is not a sighting, and must not look like one
    to the unfollow erasure, which skips identities seen after the unfollow.

    Runs its own short transactions and retries them, so it must not be called inside one."""
    _validate(channel, external_id, unionid)
    if db.in_transaction():
        raise RuntimeError("resolve() retries its own transactions; call it outside a transaction")
    profile_json = json.dumps(profile, ensure_ascii=False) if profile else None

    async def upsert() -> tuple[Resolved, str | None, str | None]:
        return await _upsert(tenant_id, channel, external_id, unionid, at, profile_json)

    resolved, identity_unionid, contact_unionid = await _retrying(upsert)
    if identity_unionid is None or contact_unionid is not None:
        # No unionid, or the contact has one already (the same, or another one an agent merged by hand:
        # left as the agent made it).
        return resolved

    async def converge() -> int:
        return await _converge(tenant_id, resolved.identity_id, identity_unionid)

    return Resolved(resolved.identity_id, await _retrying(converge), resolved.created)


async def _upsert(tenant_id: int, channel: str, external_id: str, unionid: str | None, seen: datetime | None,
                  profile_json: str | None) -> tuple[Resolved, str | None, str | None]:
    # An identity seen after its erasure (a re-follow) is active again.
    row = await db.fetchrow(
        "UPDATE identity AS i SET last_seen_at = GREATEST(i.last_seen_at, COALESCE($4::timestamptz, i.last_seen_at)), "
        "unionid = COALESCE($5, i.unionid), "
        "erased_at = CASE WHEN $4::timestamptz > i.last_seen_at THEN NULL ELSE i.erased_at END, "
        "profile = CASE WHEN $6::jsonb IS NULL THEN i.profile ELSE i.profile || $6::jsonb END "
        "FROM contact AS c WHERE i.tenant = $1 AND i.channel = $2 AND i.external_id = $3 AND c.id = i.contact "
        "RETURNING i.id, i.contact, i.unionid, c.unionid AS contact_unionid",
        tenant_id, channel, external_id, seen, unionid, profile_json)
    if row is not None:
        return Resolved(int(row["id"]), int(row["contact"]), False), row["unionid"], row["contact_unionid"]

    contact_id = None
    if unionid is not None:
        # Join the live contact that has this unionid; FOR SHARE keeps it from being merged away until
        # this identity is committed (a merge then moves it along).
        found = await db.fetchrow(
            "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL FOR SHARE",
            tenant_id, unionid)
        contact_id = int(found["id"]) if found else None
    if contact_id is None:
        # The unique partial index refuses a second live contact with this unionid: UniqueViolation, retry.
        created = await db.fetchrow(
            "INSERT INTO contact (tenant, unionid, first_seen_at, created_at, updated_at) "
            "VALUES ($1, $2, COALESCE($3::timestamptz, now()), now(), now()) RETURNING id", tenant_id, unionid, seen)
        contact_id = int(created["id"])
    inserted = await db.fetchrow(
        "INSERT INTO identity (tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, profile) "
        "VALUES ($1, $2, $3, $4, $5, COALESCE($6::timestamptz, now()), COALESCE($6::timestamptz, now()), "
        "COALESCE($7::jsonb, '{}'::jsonb)) "
        "ON CONFLICT (tenant, channel, external_id) DO NOTHING RETURNING id",
        tenant_id, contact_id, channel, external_id, unionid, seen, profile_json)
    if inserted is None:
        raise _Again()  # a concurrent first sight won; our contact rolls back with this transaction
    return Resolved(int(inserted["id"]), contact_id, True), unionid, unionid


async def _converge(tenant_id: int, identity_id: int, unionid: str) -> int:
    """Give the identity's contact its unionid, or merge it with the live contact that has it."""
    current = await db.fetchrow("SELECT contact FROM identity WHERE tenant = $1 AND id = $2", tenant_id, identity_id)
    contact_id = int(current["contact"])
    holder = await db.fetchrow("SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL",
                               tenant_id, unionid)
    holder_id = int(holder["id"]) if holder else None
    if holder_id == contact_id:
        return contact_id
    rows = await lock_pair(tenant_id, contact_id, holder_id if holder_id is not None else contact_id)
    # Re-check under the locks what was read before them.
    again = await db.fetchrow("SELECT contact FROM identity WHERE tenant = $1 AND id = $2", tenant_id, identity_id)
    if int(again["contact"]) != contact_id or any(r["merged_into"] is not None for r in rows.values()):
        raise _Again()
    if holder_id is not None and rows[holder_id]["unionid"] != unionid:
        raise _Again()
    own = rows[contact_id]["unionid"]
    if own is not None:
        return contact_id  # it got one meanwhile (this one, or another an agent chose to keep)
    if holder_id is None:
        # Raises UniqueViolation if another contact took this unionid since the read: retried.
        await db.execute("UPDATE contact SET unionid = $3, updated_at = now() WHERE tenant = $1 AND id = $2",
                         tenant_id, contact_id, unionid)
        return contact_id
    if await merge.was_undone(tenant_id, contact_id, holder_id):
        return contact_id  # an agent split these two: the unionid does not join them again
    survivor, merged = min(contact_id, holder_id), max(contact_id, holder_id)  # the older contact stays
    await merge.merge_locked(tenant_id, survivor, merged, "unionid", merge.SYSTEM)
    return survivor
