"""Locking the live contact. Every writer that attaches rows to a contact (identities, timeline events,
tags, owners) locks that contact first and follows `merged_into` to the survivor, so a concurrent merge
either sees the new row (and moves it) or runs first (and the writer lands on the survivor). Merges lock
both contacts, lowest id first, before they touch any dependent row: one lock order, no cycles.

`share` (FOR SHARE) lets writers that only add rows run side by side; writers that also update the
contact row take FOR NO KEY UPDATE from the start (never upgrade a share lock: two upgraders deadlock).
Both modes let foreign-key checks (FOR KEY SHARE) through.
"""

from __future__ import annotations

from siyu.core import db
from siyu.core.errors import Conflict, NotFound
from siyu.core.i18n import N_

MAX_HOPS = 32  # a chain of merges longer than this is a bug, not a person


def _mode(share: bool) -> str:
    return "FOR SHARE" if share else "FOR NO KEY UPDATE"


async def lock_live(tenant_id: int, contact_id: int, share: bool = False) -> int:
    """Lock `contact_id`, or the contact it was merged into, and return the live id. Missing and
    another tenant's contact both raise NotFound. Call inside a transaction."""
    if not db.in_transaction():
        raise RuntimeError("lock_live() must run inside siyu.core.db.transaction()")
    current = contact_id
    for _ in range(MAX_HOPS):
        row = await db.fetchrow(
            f"SELECT merged_into FROM contact WHERE tenant = $1 AND id = $2 {_mode(share)}", tenant_id, current)
        if row is None:
            raise NotFound()
        if row["merged_into"] is None:
            return current
        current = int(row["merged_into"])
    raise Conflict(N_("This contact's merge chain is too long."))


async def lock_identity_contact(tenant_id: int, identity_id: int, share: bool = False) -> int:
    """Lock the contact an identity belongs to right now and return its id. An identity only moves while
    its contact is locked (merge, unmerge), so once the lock is held the answer stays true."""
    if not db.in_transaction():
        raise RuntimeError("lock_identity_contact() must run inside siyu.core.db.transaction()")
    for _ in range(MAX_HOPS):
        # Read and lock in one statement. A merge that committed meanwhile has updated the contact row, so
        # the lock re-reads it and a contact merged away drops out; the identity is read again below
        # (a new statement sees every commit) because an unmerge moves it without touching that row.
        locked = await db.fetchrow(
            f"SELECT c.id FROM identity i JOIN contact c ON c.tenant = i.tenant AND c.id = i.contact "
            f"WHERE i.tenant = $1 AND i.id = $2 AND c.merged_into IS NULL {_mode(share)} OF c", tenant_id, identity_id)
        again = await db.fetchrow("SELECT contact FROM identity WHERE tenant = $1 AND id = $2", tenant_id,
                                  identity_id)
        if again is None:
            raise NotFound()
        if locked is not None and int(again["contact"]) == int(locked["id"]):
            return int(locked["id"])
        # The identity moved between the read and the lock (a merge or unmerge committed): read again.
    raise Conflict(N_("This identity keeps moving between contacts."))


async def lock_pair(tenant_id: int, first: int, second: int) -> dict[int, dict[str, object]]:
    """Lock two contacts lowest id first (the one order every merge uses) and return their rows by id;
    a missing or foreign id raises NotFound."""
    rows = await db.fetch(
        "SELECT * FROM contact WHERE tenant = $1 AND id = ANY($2::int[]) ORDER BY id FOR NO KEY UPDATE",
        tenant_id, sorted({first, second}))
    found = {int(r["id"]): dict(r) for r in rows}
    if first not in found or second not in found:
        raise NotFound()
    return found


async def lock_live_many(tenant_id: int, contact_ids: list[int], share: bool = False) -> dict[int, int]:
    """`lock_live` for many contacts in one statement (locked in id order, as merges lock): contact id → live
    id. A contact merged away meanwhile is followed one at a time; a missing one is left out. Call inside a
    transaction."""
    if not db.in_transaction():
        raise RuntimeError("lock_live_many() must run inside siyu.core.db.transaction()")
    rows = await db.fetch(
        f"SELECT id, merged_into FROM contact WHERE tenant = $1 AND id = ANY($2::int[]) ORDER BY id {_mode(share)}",
        tenant_id, sorted(set(contact_ids)))
    live: dict[int, int] = {}
    for r in rows:
        if r["merged_into"] is None:
            live[int(r["id"])] = int(r["id"])
            continue
        try:
            live[int(r["id"])] = await lock_live(tenant_id, int(r["merged_into"]), share)
        except NotFound:
            continue
    return live


async def erased(tenant_id: int, contact_id: int) -> bool:
    """Whether the person's data was erased (a data-subject request): what later reports say about them is
    not stored again."""
    row = await db.fetchrow("SELECT erased_at FROM contact WHERE tenant = $1 AND id = $2", tenant_id, contact_id)
    return row is not None and row["erased_at"] is not None
