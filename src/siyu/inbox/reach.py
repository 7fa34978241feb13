"""What the re-engagement engine may know of the inbox, for many people at once: who is in a conversation
with a person right now (waiting for one or being served: an automated message must not cut in), and the
微信客服 account each WeCom customer last wrote to (a 微信客服 reply needs it)."""

from __future__ import annotations

from collections.abc import Sequence

from siyu.core import db

WITH_A_PERSON = ("queued", "assigned")


async def with_a_person(tenant_id: int, contact_ids: Sequence[int]) -> set[int]:
    rows = await db.fetch(
        "SELECT DISTINCT i.contact FROM inbox_conversation c JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE c.tenant = $1 AND i.contact = ANY($2::int[]) AND c.status = ANY($3::text[])",
        tenant_id, list(contact_ids), list(WITH_A_PERSON))
    return {int(r["contact"]) for r in rows}


async def kf_accounts(tenant_id: int, identity_ids: Sequence[int]) -> dict[int, str]:
    """identity id → the open_kfid of its 微信客服 conversation (only identities that have one)."""
    rows = await db.fetch(
        "SELECT identity, open_kfid FROM inbox_conversation WHERE tenant = $1 AND identity = ANY($2::int[]) "
        "AND open_kfid <> ''", tenant_id, list(identity_ids))
    return {int(r["identity"]): r["open_kfid"] for r in rows}
