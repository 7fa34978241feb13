"""Data-subject requests on one contact: a JSON export of everything Siyu holds about the person, and an
erasure of their personal information. Both are audited.

The erasure keeps the person's WeChat identifiers (pseudonymous per-app ids and the unionid) and the shape
of their history (event kinds, channels, times: the counts), so that a returning person is recognised and
suppression keeps holding; it removes what they said, what channels told us about them, and what reps
wrote about them: contact fields, identity profiles, timeline payloads (notes included), rep remarks and
tags, contact tags, the profile values kept in merge snapshots, and the stored WeChat callbacks and sent
messages. Merged-away contacts whose rows still hold personal fields for an undo are erased with it.

Domains above contacts that keep rows about a person (commerce's purchases and refunds) register a `Holder`
by name; the export adds what each holds under its name and the erasure asks each to erase its part, in the
same transaction, without this module naming their tables.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.contacts.live import lock_live
from siyu.contacts.merge import PROFILE_FIELDS
from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import Actor, record_audit
from siyu.timeline import services as timeline
from siyu.wechat.events import erase_personal_payloads

FORMAT = "siyu.contact-export/1"
REASON_MAX = 500


@dataclass(frozen=True)
class Holder:
    """What a domain above contacts keeps about a person, for data-subject requests. `export(tenant,
    contact)` returns its rows of the live contact as plain JSON-able dicts (the export's `name` key);
    `erase(tenant, contacts)` erases the personal part of the rows of these contacts (the live one and
    those merged into it) and returns how many rows it changed. Both run inside the request's transaction,
    with the live contact locked."""

    name: str
    export: Callable[[int, int], Awaitable[list[dict[str, Any]]]]
    erase: Callable[[int, Sequence[int]], Awaitable[int]]


_holders: dict[str, Holder] = {}


def hold(holder: Holder) -> None:
    """Register a holder (again under the same name: replaced, so registering twice is harmless)."""
    _holders[holder.name] = holder


def holders() -> list[Holder]:
    return list(_holders.values())


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _merged_into(tenant_id: int, contact_id: int) -> list[int]:
    """Every contact merged (directly or through a chain) into this one."""
    rows = await db.fetch(
        "WITH RECURSIVE chain AS (SELECT id FROM contact WHERE tenant = $1 AND merged_into = $2 "
        "UNION SELECT c.id FROM contact c JOIN chain ON c.merged_into = chain.id WHERE c.tenant = $1) "
        "SELECT id FROM chain ORDER BY id", tenant_id, contact_id)
    return [int(r["id"]) for r in rows]


async def export_contact(tenant_id: int, contact_id: int, actor: Actor) -> dict[str, Any]:
    """Everything about this person, as one JSON document. A merged-away contact exports its survivor
    (where its identities and history live now)."""
    async with db.transaction():
        live = await lock_live(tenant_id, contact_id, share=True)
        contact = dict(await db.fetchrow(
            "SELECT id, display_name, avatar_url, phone, remark, language, unionid, first_seen_at, "
            "last_interaction_at, last_purchase_at, erased_at, created_at, updated_at "
            "FROM contact WHERE tenant = $1 AND id = $2", tenant_id, live))
        identities = [
            {**dict(r), "profile": json.loads(r["profile"])} for r in await db.fetch(
                "SELECT id, channel, external_id, unionid, first_seen_at, last_seen_at, enriched_at, erased_at, "
                "profile::text AS profile FROM identity WHERE tenant = $1 AND contact = $2 ORDER BY channel, id",
                tenant_id, live)]
        owners = [{**dict(r), "tags": json.loads(r["tags"])} for r in await db.fetch(
            "SELECT staff_userid, state, remark, description, tags::text AS tags, added_at, removed_at "
            "FROM owner WHERE tenant = $1 AND contact = $2 ORDER BY added_at, id", tenant_id, live)]
        tags = [r["name"] for r in await db.fetch(
            "SELECT t.name FROM contact_tag ct JOIN tag t ON t.tenant = ct.tenant AND t.id = ct.tag "
            "WHERE ct.tenant = $1 AND ct.contact = $2 ORDER BY lower(t.name)", tenant_id, live)]
        events = [{**dict(r), "payload": json.loads(r["payload"])} for r in await db.fetch(
            "SELECT id, occurred_at, kind, channel, payload::text AS payload FROM timeline_event "
            "WHERE tenant = $1 AND contact = $2 ORDER BY occurred_at, id", tenant_id, live)]
        merges = [dict(r) for r in await db.fetch(
            "SELECT id, survivor, merged, reason, created_at, undone_at FROM contact_merge "
            "WHERE tenant = $1 AND (survivor = $2 OR merged = $2) ORDER BY created_at, id", tenant_id, live)]
        held = {h.name: await h.export(tenant_id, live) for h in holders()}
        await record_audit(actor, tenant_id, "contact.exported", "contact", live,
                           {"identities": len(identities), "events": len(events)})
    return _plain({"format": FORMAT, "contact": contact, "identities": identities, "owners": owners,
                   "tags": tags, "timeline": events, "merges": merges, **held})


async def do_erase_contact(tenant_id: int, contact_id: int, reason: str, actor: Actor) -> dict[str, int]:
    """Erase the person's personal information (see the module's docstring) in one transaction; returns
    what was erased. Running it again erases nothing more."""
    clean = " ".join((reason or "").split())
    if not clean or len(clean) > REASON_MAX:
        raise InvalidInput.one("reason", N_("Say why (the request's reference, for example): 1 to {max} characters."),
                               max=REASON_MAX)
    async with db.transaction():
        live = await lock_live(tenant_id, contact_id)
        contacts = [live, *await _merged_into(tenant_id, live)]
        blank = ", ".join(f"{f} = ''" for f in PROFILE_FIELDS)
        personal = " OR ".join(f"{f} <> ''" for f in PROFILE_FIELDS)
        await db.execute(f"UPDATE contact SET {blank}, erased_at = COALESCE(erased_at, now()), updated_at = now() "
                         f"WHERE tenant = $1 AND id = ANY($2::int[]) AND (erased_at IS NULL OR {personal})",
                         tenant_id, contacts)
        await db.execute("UPDATE identity SET profile = '{}'::jsonb, erased_at = COALESCE(erased_at, now()) "
                         "WHERE tenant = $1 AND contact = $2 AND (erased_at IS NULL OR profile <> '{}'::jsonb)",
                         tenant_id, live)
        identities = await db.fetch("SELECT id, channel, external_id FROM identity WHERE tenant = $1 AND contact = $2",
                                    tenant_id, live)
        events = await timeline.erase_contact_personal(tenant_id, live)
        await db.execute("UPDATE owner SET remark = '', description = '', tags = '[]'::jsonb "
                         "WHERE tenant = $1 AND contact = $2", tenant_id, live)
        untagged = await db.execute("DELETE FROM contact_tag WHERE tenant = $1 AND contact = $2", tenant_id, live)
        # Merge snapshots keep (before, after) profile values for the undo: blank them, keep the rest.
        for merge in await db.fetch(
                "SELECT id, snapshot::text AS snapshot FROM contact_merge WHERE tenant = $1 "
                "AND (survivor = ANY($2::int[]) OR merged = ANY($2::int[])) FOR UPDATE", tenant_id, contacts):
            snap = json.loads(merge["snapshot"])
            survivor = snap.get("survivor", {})
            if any(field in survivor for field in PROFILE_FIELDS):
                snap["survivor"] = {k: (["", ""] if k in PROFILE_FIELDS else v) for k, v in survivor.items()}
                await db.execute("UPDATE contact_merge SET snapshot = $3::jsonb WHERE tenant = $1 AND id = $2",
                                 tenant_id, merge["id"], json.dumps(snap))
        callbacks = 0
        for identity in identities:
            callbacks += await erase_personal_payloads(tenant_id, identity["channel"], identity["external_id"])
        summary = {"contacts": len(contacts), "identities": len(identities), "events": events,
                   "tags": int(untagged.split()[-1]), "callbacks": callbacks}
        for h in holders():
            summary[h.name] = await h.erase(tenant_id, contacts)
        await record_audit(actor, tenant_id, "contact.erased", "contact", live, {"reason": clean, **summary})
    return summary
