"""Reading whole tables of one tenant, to compare the state before and after an operation."""

from __future__ import annotations

import json
from typing import Any

from siyu.core import db

SNAPSHOT_TABLES = ("contact", "identity", "contact_tag", "owner", "timeline_event")


async def table(name: str, tenant_id: int, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    assert name in (*SNAPSHOT_TABLES, "contact_merge", "tag", "audit_log")
    out = []
    for row in await db.fetch(f"SELECT * FROM {name} WHERE tenant = $1 ORDER BY id", tenant_id):
        item = {k: (json.loads(v) if k in ("payload", "profile", "snapshot", "changes") and isinstance(v, str) else v)
                for k, v in dict(row).items() if k not in exclude}
        out.append(item)
    return out


async def state(tenant_id: int, without_kinds: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    """Every row the identity graph holds for a tenant. `updated_at` is left out (a merge and its undo
    are two changes), and so are timeline events of `without_kinds` (the merge's own markers)."""
    snap = {name: await table(name, tenant_id, exclude=("updated_at",)) for name in SNAPSHOT_TABLES}
    snap["timeline_event"] = [e for e in snap["timeline_event"] if e["kind"] not in without_kinds]
    return snap


async def live_contacts(tenant_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(
        "SELECT * FROM contact WHERE tenant = $1 AND merged_into IS NULL ORDER BY id", tenant_id)]


async def owned_by(tenant_id: int, staff_id: int, *contact_ids: int, userid: str = "acmerep") -> None:
    """Give a rep these contacts as their WeCom customers (their WeCom UserID on their inbox profile, and
    an owner row on each contact's first identity): the contact pages show a rep only people in their scope."""
    from datetime import UTC, datetime

    from siyu.contacts import services as contacts
    from siyu.inbox import actions
    from siyu.tenants.services import Actor

    await actions.do_set_presence(tenant_id, staff_id, "offline", Actor.cli(), wecom_userid=userid)
    for contact_id in contact_ids:
        row = await db.fetchrow("SELECT min(id) AS id FROM identity WHERE tenant = $1 AND contact = $2",
                                tenant_id, contact_id)
        await contacts.record_owner_added(tenant_id, int(row["id"]), userid, datetime.now(UTC))
