"""Contacts: reads, tags, rep owners, per-tenant settings and the unfollow erasure.

Every function takes `tenant_id` first and scopes every query by it; another tenant's id raises the same
NotFound as a missing one. Writers that attach rows to a contact lock it first (see `live`), so they
never race a merge. Identity resolution is in `resolve`, merges in `merge`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.contacts.live import lock_identity_contact, lock_live
from siyu.contacts.merge import do_merge, do_unmerge, list_merges
from siyu.contacts.resolve import resolve, resolve_identity
from siyu.core import clock, db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit
from siyu.timeline import services as timeline
from siyu.wechat.events import erase_personal_payloads

__all__ = ["do_merge", "do_unmerge", "list_merges", "resolve", "resolve_identity"]

TAG_MAX = 40
NOTE_MAX = 2000


# --- reads ------------------------------------------------------------------------------------------------

async def get_contact(tenant_id: int, contact_id: int) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM contact WHERE tenant = $1 AND id = $2", tenant_id, contact_id)
    if row is None:
        raise NotFound()
    return dict(row)


async def display_names(tenant_id: int, contact_ids: Sequence[int]) -> dict[int, str]:
    """Contact id → display name ("" when the person has none), for many contacts in one read; another
    tenant's or a missing id is left out."""
    if not contact_ids:
        return {}
    rows = await db.fetch("SELECT id, display_name FROM contact WHERE tenant = $1 AND id = ANY($2::int[])",
                          tenant_id, sorted(set(contact_ids)))
    return {int(r["id"]): r["display_name"] or "" for r in rows}


async def identities_of(tenant_id: int, contact_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, channel, external_id, unionid, first_seen_at, last_seen_at, profile::text AS profile, erased_at, "
        "enriched_at FROM identity WHERE tenant = $1 AND contact = $2 ORDER BY channel, id", tenant_id, contact_id)
    return [{**dict(r), "profile": json.loads(r["profile"])} for r in rows]


async def owners_of(tenant_id: int, contact_id: int, include_removed: bool = False) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, identity, staff_userid, state, remark, description, tags::text AS tags, added_at, removed_at "
        "FROM owner WHERE tenant = $1 AND contact = $2 AND ($3 OR removed_at IS NULL) ORDER BY added_at, id",
        tenant_id, contact_id, include_removed)
    return [{**dict(r), "tags": json.loads(r["tags"])} for r in rows]


# --- tags ------------------------------------------------------------------------------------------------

def _tag_name(name: str) -> str:
    clean = " ".join((name or "").split())
    if not clean or len(clean) > TAG_MAX:
        raise InvalidInput.one("name", N_("Use 1 to {max} characters."), max=TAG_MAX)
    return clean


async def list_tags(tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's tags with how many live contacts carry each."""
    rows = await db.fetch(
        "SELECT t.id, t.name, count(ct.id) AS contacts FROM tag t LEFT JOIN contact_tag ct "
        "ON ct.tenant = t.tenant AND ct.tag = t.id WHERE t.tenant = $1 GROUP BY t.id ORDER BY lower(t.name)",
        tenant_id)
    return [dict(r) for r in rows]


async def tags_of(tenant_id: int, contact_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT t.id, t.name FROM contact_tag ct JOIN tag t ON t.id = ct.tag AND t.tenant = ct.tenant "
        "WHERE ct.tenant = $1 AND ct.contact = $2 ORDER BY lower(t.name)", tenant_id, contact_id)
    return [dict(r) for r in rows]


async def tag_id_for(tenant_id: int, name: str) -> tuple[int, str]:
    """The tag called `name` (names compare case-insensitively), made on first use: its id and its name as
    kept. Joins the caller's transaction."""
    clean = _tag_name(name)
    async with db.transaction():
        await db.execute(
            "INSERT INTO tag (tenant, name, created_at) VALUES ($1, $2, now()) "
            "ON CONFLICT (tenant, lower(name)) DO NOTHING", tenant_id, clean)
        tag = await db.fetchrow("SELECT id, name FROM tag WHERE tenant = $1 AND lower(name) = lower($2)",
                                tenant_id, clean)
    return int(tag["id"]), tag["name"]


async def do_tag(tenant_id: int, contact_id: int, name: str, actor: Actor) -> int:
    """Tag a contact (creating the tag on first use; names compare case-insensitively). Returns the tag id;
    tagging twice changes nothing."""
    clean = _tag_name(name)
    async with db.transaction():
        live = await lock_live(tenant_id, contact_id, share=True)
        await db.execute(
            "INSERT INTO tag (tenant, name, created_at) VALUES ($1, $2, now()) "
            "ON CONFLICT (tenant, lower(name)) DO NOTHING", tenant_id, clean)
        tag = await db.fetchrow("SELECT id FROM tag WHERE tenant = $1 AND lower(name) = lower($2)", tenant_id, clean)
        added = await db.fetchrow(
            "INSERT INTO contact_tag (tenant, contact, tag, created_at) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (tenant, contact, tag) DO NOTHING RETURNING id", tenant_id, live, tag["id"])
        if added:
            await record_audit(actor, tenant_id, "contact.tagged", "contact", live, {"tag": clean})
    return int(tag["id"])


async def do_untag(tenant_id: int, contact_id: int, tag_id: int, actor: Actor) -> bool:
    """Remove a tag from a contact; False when it did not carry it."""
    async with db.transaction():
        live = await lock_live(tenant_id, contact_id, share=True)
        removed = await db.fetchrow(
            "DELETE FROM contact_tag ct USING tag t WHERE ct.tenant = $1 AND ct.contact = $2 AND ct.tag = $3 "
            "AND t.tenant = ct.tenant AND t.id = ct.tag RETURNING t.name", tenant_id, live, tag_id)
        if removed:
            await record_audit(actor, tenant_id, "contact.untagged", "contact", live, {"tag": removed["name"]})
    return removed is not None


# --- notes ------------------------------------------------------------------------------------------------

async def do_add_note(tenant_id: int, contact_id: int, text: str, actor: Actor) -> int:
    """An agent's note on the contact's timeline. Each note is a deliberate new event, so its source key
    is fresh every time (a resubmitted form adds a second note, as a second click would)."""
    clean = (text or "").strip()
    if not clean or len(clean) > NOTE_MAX:
        raise InvalidInput.one("text", N_("Use 1 to {max} characters."), max=NOTE_MAX)
    event_id = await timeline.append(tenant_id, contact_id, "note", "siyu", clock.now(),
                                     {"text": clean, "by": actor.label}, f"note:{uuid.uuid4()}")
    assert event_id is not None  # a fresh source key never collides
    return event_id


# --- rep owners (WeCom follow users) ---------------------------------------------------------------------

# Callbacks of one customer can be processed out of order (separate batches, retries), so each change
# applies only if it is newer than what the row records; a removal seen before its add leaves a row that
# the add, arriving later, completes.

async def record_owner_added(tenant_id: int, identity_id: int, staff_userid: str, at: datetime,
                             state: str = "") -> None:
    """The rep added this customer at `at`. Idempotent; a re-add after a removal opens ownership again."""
    async with db.transaction():
        contact_id = await lock_identity_contact(tenant_id, identity_id, share=True)
        await db.execute(
            "INSERT INTO owner (tenant, contact, identity, staff_userid, state, remark, added_at) "
            "VALUES ($1, $2, $3, $4, $5, '', $6) ON CONFLICT (tenant, identity, staff_userid) DO UPDATE SET "
            "added_at = CASE WHEN owner.removed_at > EXCLUDED.added_at THEN LEAST(owner.added_at, EXCLUDED.added_at) "
            "  ELSE GREATEST(owner.added_at, EXCLUDED.added_at) END, "
            "state = CASE WHEN owner.removed_at > EXCLUDED.added_at AND owner.state <> '' THEN owner.state "
            "  WHEN EXCLUDED.added_at >= owner.added_at OR owner.state = '' THEN EXCLUDED.state ELSE owner.state END, "
            "removed_at = CASE WHEN owner.removed_at > EXCLUDED.added_at THEN owner.removed_at END",
            tenant_id, contact_id, identity_id, staff_userid[:64], state[:64], at)


async def record_owner_removed(tenant_id: int, identity_id: int, staff_userid: str, at: datetime) -> None:
    """The rep and the customer stopped being contacts at `at` (either side deleted the other). Idempotent;
    a removal older than the latest add changes nothing."""
    async with db.transaction():
        contact_id = await lock_identity_contact(tenant_id, identity_id, share=True)
        await db.execute(
            "INSERT INTO owner (tenant, contact, identity, staff_userid, state, remark, added_at, removed_at) "
            "VALUES ($1, $2, $3, $4, '', '', $5, $5) ON CONFLICT (tenant, identity, staff_userid) DO UPDATE SET "
            "removed_at = GREATEST(owner.removed_at, EXCLUDED.removed_at) WHERE owner.added_at <= EXCLUDED.removed_at",
            tenant_id, contact_id, identity_id, staff_userid[:64], at)


# --- settings and the unfollow erasure -------------------------------------------------------------------

@dataclass(frozen=True)
class ContactSettings:
    erase_on_unfollow: bool = True


async def get_settings(tenant_id: int) -> ContactSettings:
    row = await db.fetchrow("SELECT erase_on_unfollow FROM contact_settings WHERE tenant = $1", tenant_id)
    return ContactSettings(bool(row["erase_on_unfollow"])) if row else ContactSettings()


async def do_set_erase_on_unfollow(tenant_id: int, enabled: bool, actor: Actor) -> None:
    async with db.transaction():
        if await db.fetchrow("SELECT 1 FROM tenant WHERE id = $1", tenant_id) is None:
            raise NotFound()
        before = await get_settings(tenant_id)
        await db.execute(
            "INSERT INTO contact_settings (tenant, erase_on_unfollow, updated_at) VALUES ($1, $2, now()) "
            "ON CONFLICT (tenant) DO UPDATE SET erase_on_unfollow = EXCLUDED.erase_on_unfollow, updated_at = now()",
            tenant_id, enabled)
        if before.erase_on_unfollow != enabled:
            await record_audit(actor, tenant_id, "contacts.settings.updated", "tenant", tenant_id,
                               {"erase_on_unfollow": [before.erase_on_unfollow, enabled]})


async def erase_on_unfollow(tenant_id: int, identity_id: int, unfollowed_at: datetime) -> bool:
    """WeChat's rule on an OA unfollow: erase what the identity told us about the person (its profile,
    the personal parts of its events' payloads and of its stored callbacks, and the contact's display fields when no other active
    identity remains). Kept: the rows, kinds, times and channels (counts, non-personal history).
    Skipped when the tenant turned it off, or the identity was seen again after this unfollow."""
    if not (await get_settings(tenant_id)).erase_on_unfollow:
        return False
    async with db.transaction():
        contact_id = await lock_identity_contact(tenant_id, identity_id)
        identity = await db.fetchrow(
            "SELECT channel, external_id, last_seen_at, erased_at FROM identity WHERE tenant = $1 AND id = $2 "
            "FOR NO KEY UPDATE", tenant_id, identity_id)
        if identity["erased_at"] is not None or identity["last_seen_at"] > unfollowed_at:
            return False  # erased already (a re-run), or followed again since
        await db.execute("UPDATE identity SET profile = '{}'::jsonb, erased_at = now() "
                         "WHERE tenant = $1 AND id = $2", tenant_id, identity_id)
        events = await timeline.erase_personal(tenant_id, identity_id)
        callbacks = await erase_personal_payloads(tenant_id, identity["channel"], identity["external_id"],
                                                  until=unfollowed_at)
        others = await db.fetchrow(
            "SELECT count(*) AS n FROM identity WHERE tenant = $1 AND contact = $2 AND id <> $3 AND erased_at IS NULL",
            tenant_id, contact_id, identity_id)
        contact_erased = others["n"] == 0
        if contact_erased:
            await db.execute(
                "UPDATE contact SET display_name = '', avatar_url = '', phone = '', remark = '', language = '', "
                "erased_at = COALESCE(erased_at, now()), updated_at = now() WHERE tenant = $1 AND id = $2",
                tenant_id, contact_id)
        await record_audit(Actor(None, "system"), tenant_id, "contact.erased_on_unfollow", "identity", identity_id,
                           {"contact": contact_id, "events": events, "callbacks": callbacks,
                            "contact_erased": contact_erased})
    return True
