"""Merging two contacts and undoing it, each in one transaction: nothing half-merged is ever visible.

A merge moves the merged contact's identities, timeline events, tags, owners and the rows of registered
carriers (other domains' per-contact rows, such as purchases: see `Carrier`) to the survivor, fills
the survivor's empty profile fields from the merged one (the survivor's value wins when both are set; the
earliest first sight, the latest interaction), marks the merged contact `merged_into` the survivor and
logs a `contact_merge` row whose snapshot names every moved row and every survivor field it changed. The
unmerge reads that snapshot back: identities, their events (including those that arrived through them
since), tags and owners return, and survivor fields the merge filled are restored unless edited since.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.contacts.live import lock_pair
from siyu.core import db
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit
from siyu.timeline import services as timeline

SYSTEM = Actor(None, "system")
REASONS = ("unionid", "manual")
PROFILE_FIELDS = ("display_name", "avatar_url", "phone", "remark", "language")
TIME_FIELDS = ("first_seen_at", "last_interaction_at", "last_purchase_at", "erased_at")


@dataclass(frozen=True)
class Carrier:
    """Rows a domain above contacts keeps per contact (purchases, …) that must move with the person through
    merges like the contact's own history, without this module naming their tables. A domain registers one
    with `carry`; the composition roots make sure it is registered in every process that can merge.

    `move(tenant, merged, survivor)` moves every row of the merged contact to the survivor and returns their
    ids (kept in the merge's snapshot under `name`); `move_back(tenant, survivor, merged, ids, identities)`
    undoes it: the rows that moved and those that arrived since through the identities going back. Both run
    inside the merge's transaction, with both contacts locked."""

    name: str
    move: Callable[[int, int, int], Awaitable[list[int]]]
    move_back: Callable[[int, int, int, Sequence[int], Sequence[int]], Awaitable[list[int]]]


_carriers: dict[str, Carrier] = {}


def carry(carrier: Carrier) -> None:
    """Register a carrier (again under the same name: replaced, so registering twice is harmless)."""
    _carriers[carrier.name] = carrier


def carriers() -> list[Carrier]:
    return list(_carriers.values())


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _same(current: Any, recorded: Any) -> bool:
    if isinstance(current, datetime) and isinstance(recorded, str):
        return current == datetime.fromisoformat(recorded)
    return bool(current == recorded)


def _restored(field: str, recorded: Any) -> Any:
    return datetime.fromisoformat(recorded) if field in TIME_FIELDS and recorded is not None else recorded


def _survivor_changes(survivor: dict[str, Any], merged: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What the survivor takes from the merged contact: field → (before, after)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for field in PROFILE_FIELDS:
        if not survivor[field] and merged[field]:
            changes[field] = (survivor[field], merged[field])
    if survivor["unionid"] is None and merged["unionid"] is not None:
        changes["unionid"] = (None, merged["unionid"])
    if merged["first_seen_at"] < survivor["first_seen_at"]:
        changes["first_seen_at"] = (survivor["first_seen_at"], merged["first_seen_at"])
    for field in ("last_interaction_at", "last_purchase_at"):
        theirs, ours = merged[field], survivor[field]
        if theirs is not None and (ours is None or theirs > ours):
            changes[field] = (ours, theirs)
    if survivor["erased_at"] is not None and merged["erased_at"] is None:
        changes["erased_at"] = (survivor["erased_at"], None)
    return changes


async def _set_fields(tenant_id: int, contact_id: int, values: dict[str, Any]) -> None:
    """The survivor's fields after a merge or its undo. Its `updated_at` moves even when no field does: its
    identities changed, and the API's list (`updated_since`) is how an integrator's copy learns of it."""
    names = sorted(values)
    assignments = "".join(f"{name} = ${i + 3}, " for i, name in enumerate(names))
    await db.execute(f"UPDATE contact SET {assignments}updated_at = now() WHERE tenant = $1 AND id = $2",
                     tenant_id, contact_id, *(values[n] for n in names))


async def merge_locked(tenant_id: int, survivor_id: int, merged_id: int, reason: str, actor: Actor) -> int:
    """The merge itself, for callers that hold both contacts' locks and checked both are live."""
    rows = {int(r["id"]): dict(r) for r in await db.fetch(
        "SELECT * FROM contact WHERE tenant = $1 AND id = ANY($2::int[])", tenant_id, [survivor_id, merged_id])}
    survivor, merged = rows[survivor_id], rows[merged_id]
    identities = await db.fetch("UPDATE identity SET contact = $3 WHERE tenant = $1 AND contact = $2 RETURNING id",
                                tenant_id, merged_id, survivor_id)
    events = await timeline.move_all(tenant_id, merged_id, survivor_id)
    # A tag both carry stays the survivor's; the merged contact's row goes, kept whole in the snapshot.
    dropped = await db.fetch(
        "DELETE FROM contact_tag WHERE tenant = $1 AND contact = $2 AND tag IN "
        "(SELECT tag FROM contact_tag WHERE tenant = $1 AND contact = $3) RETURNING id, tag, created_at",
        tenant_id, merged_id, survivor_id)
    moved_tags = await db.fetch(
        "UPDATE contact_tag SET contact = $3 WHERE tenant = $1 AND contact = $2 RETURNING id",
        tenant_id, merged_id, survivor_id)
    owners = await db.fetch("UPDATE owner SET contact = $3 WHERE tenant = $1 AND contact = $2 RETURNING id",
                            tenant_id, merged_id, survivor_id)
    carried = {c.name: await c.move(tenant_id, merged_id, survivor_id) for c in carriers()}
    # Out of the unionid index first, so the survivor can take the unionid over.
    await db.execute("UPDATE contact SET merged_into = $3, updated_at = now() WHERE tenant = $1 AND id = $2",
                     tenant_id, merged_id, survivor_id)
    changes = _survivor_changes(survivor, merged)
    await _set_fields(tenant_id, survivor_id, {k: after for k, (_before, after) in changes.items()})
    snapshot = {
        "identities": sorted(int(r["id"]) for r in identities),
        "events": events,
        "tags_moved": sorted(int(r["id"]) for r in moved_tags),
        "tags_dropped": [{"id": int(r["id"]), "tag": int(r["tag"]), "created_at": r["created_at"].isoformat()}
                         for r in dropped],
        "owners": sorted(int(r["id"]) for r in owners),
        "carried": carried,
        "survivor": {k: [_plain(before), _plain(after)] for k, (before, after) in changes.items()},
    }
    row = await db.fetchrow(
        "INSERT INTO contact_merge (tenant, survivor, merged, reason, actor_label, snapshot, created_at, undone_by) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, now(), '') RETURNING id, created_at",
        tenant_id, survivor_id, merged_id, reason, actor.label, json.dumps(snapshot))
    merge_id = int(row["id"])
    payload = {"merge_id": merge_id, "survivor": survivor_id, "merged": merged_id, "reason": reason}
    for contact_id, side in ((survivor_id, "survivor"), (merged_id, "merged")):
        await timeline.insert_locked(tenant_id, contact_id, "merged", "siyu", row["created_at"], payload,
                                     f"merge:{merge_id}:{side}")
    await record_audit(actor, tenant_id, "contact.merged", "contact", survivor_id,
                       {"merge_id": merge_id, "merged": merged_id, "reason": reason,
                        "identities": len(snapshot["identities"]), "events": len(events)})
    return merge_id


async def do_merge(tenant_id: int, survivor_id: int, merged_id: int, reason: str, actor: Actor) -> int:
    """Merge `merged_id` into `survivor_id`; returns the merge's id (for the unmerge)."""
    if survivor_id == merged_id:
        raise InvalidInput.one("merged_id", N_("A contact cannot be merged with itself."))
    if reason not in REASONS:
        raise InvalidInput.one("reason", N_("Choose one of: {choices}."), choices=", ".join(REASONS))
    async with db.transaction():
        rows = await lock_pair(tenant_id, survivor_id, merged_id)
        for field, contact_id in (("survivor_id", survivor_id), ("merged_id", merged_id)):
            if rows[contact_id]["merged_into"] is not None:
                raise Conflict(N_("This contact was merged into another one."), field=field)
        return await merge_locked(tenant_id, survivor_id, merged_id, reason, actor)


async def do_unmerge(tenant_id: int, merge_id: int, actor: Actor) -> None:
    """Undo a merge. An undone merge answers Conflict; so does one whose survivor was merged away since
    (undo the later merge first)."""
    async with db.transaction():
        log = await db.fetchrow(
            "SELECT survivor, merged, undone_at, snapshot::text AS snapshot FROM contact_merge "
            "WHERE tenant = $1 AND id = $2 FOR UPDATE", tenant_id, merge_id)
        if log is None:
            raise NotFound()
        if log["undone_at"] is not None:
            raise Conflict(N_("This merge is already undone."))
        survivor_id, merged_id = int(log["survivor"]), int(log["merged"])
        rows = await lock_pair(tenant_id, survivor_id, merged_id)
        survivor, merged = rows[survivor_id], rows[merged_id]
        if survivor["merged_into"] is not None or merged["merged_into"] != survivor_id:
            raise Conflict(N_("The contact was merged again since; undo that merge first."))
        snap = json.loads(log["snapshot"])
        # The survivor's fields first: it may give the unionid back to the contact it came from.
        await _set_fields(tenant_id, survivor_id, {
            field: _restored(field, before) for field, (before, after) in snap["survivor"].items()
            if _same(survivor[field], after)})
        if merged["unionid"] is not None and await db.fetchrow(
                "SELECT 1 FROM contact WHERE tenant = $1 AND unionid = $2 AND merged_into IS NULL",
                tenant_id, merged["unionid"]):
            raise Conflict(N_("Another contact holds this contact's unionid now; merge those first."))
        await db.execute("UPDATE contact SET merged_into = NULL, updated_at = now() WHERE tenant = $1 AND id = $2",
                         tenant_id, merged_id)
        identities = [int(i) for i in snap["identities"]]
        await db.execute("UPDATE identity SET contact = $3 WHERE tenant = $1 AND contact = $2 AND id = ANY($4::int[])",
                         tenant_id, survivor_id, merged_id, identities)
        events = await timeline.move_back(tenant_id, survivor_id, merged_id, snap["events"], identities)
        await db.execute(
            "UPDATE contact_tag SET contact = $3 WHERE tenant = $1 AND contact = $2 AND id = ANY($4::int[])",
            tenant_id, survivor_id, merged_id, snap["tags_moved"])
        for tag in snap["tags_dropped"]:  # unless the tag was deleted meanwhile
            await db.execute(
                "INSERT INTO contact_tag (id, tenant, contact, tag, created_at) "
                "SELECT $2, $1, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM tag WHERE tenant = $1 AND id = $4) "
                "ON CONFLICT DO NOTHING",
                tenant_id, tag["id"], merged_id, tag["tag"], datetime.fromisoformat(tag["created_at"]))
        await db.execute("UPDATE owner SET contact = $3 WHERE tenant = $1 AND contact = $2 AND identity = ANY($4::int[])",
                         tenant_id, survivor_id, merged_id, identities)
        carried = snap.get("carried", {})
        unknown = sorted(set(carried) - set(_carriers))
        if unknown:  # a process that cannot move these rows back must not half-undo the merge
            raise RuntimeError(f"cannot undo merge {merge_id}: no carrier registered for {', '.join(unknown)}")
        for c in carriers():  # a merge made before a carrier existed still takes back what came through identities
            await c.move_back(tenant_id, survivor_id, merged_id, [int(i) for i in carried.get(c.name, [])], identities)
        done = await db.fetchrow(
            "UPDATE contact_merge SET undone_at = now(), undone_by = $3 WHERE tenant = $1 AND id = $2 "
            "RETURNING undone_at", tenant_id, merge_id, actor.label)
        payload = {"merge_id": merge_id, "survivor": survivor_id, "merged": merged_id}
        for contact_id, side in ((survivor_id, "survivor"), (merged_id, "merged")):
            await timeline.insert_locked(tenant_id, contact_id, "unmerged", "siyu", done["undone_at"], payload,
                                         f"unmerge:{merge_id}:{side}")
        await record_audit(actor, tenant_id, "contact.unmerged", "contact", merged_id,
                           {"merge_id": merge_id, "survivor": survivor_id, "identities": len(identities),
                            "events": len(events)})


async def was_undone(tenant_id: int, a: int, b: int) -> bool:
    """Whether an agent undid a merge of these two: automatic convergence leaves them apart then."""
    row = await db.fetchrow(
        "SELECT 1 FROM contact_merge WHERE tenant = $1 AND undone_at IS NOT NULL "
        "AND ((survivor = $2 AND merged = $3) OR (survivor = $3 AND merged = $2)) LIMIT 1", tenant_id, a, b)
    return row is not None


async def list_merges(tenant_id: int, contact_id: int) -> list[dict[str, Any]]:
    """The merges this contact took part in, newest first (without snapshots)."""
    rows = await db.fetch(
        "SELECT id, survivor, merged, reason, actor_label, created_at, undone_at, undone_by FROM contact_merge "
        "WHERE tenant = $1 AND (survivor = $2 OR merged = $2) ORDER BY created_at DESC, id DESC",
        tenant_id, contact_id)
    return [dict(r) for r in rows]
