"""Contacts built as rows, straight into the tables, so a test states exactly what each person has:
identities per channel (erased or not), rep owners (removed or not), tags, interaction and purchase times,
merged or erased."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from siyu.core import clock, db


def days_ago(days: float) -> datetime:
    return clock.now() - timedelta(days=days)


async def tag(tenant_id: int, name: str) -> int:
    row = await db.fetchrow("INSERT INTO tag (tenant, name, created_at) VALUES ($1, $2, now()) RETURNING id",
                            tenant_id, name)
    return int(row["id"])


@dataclass
class Person:
    channels: dict[str, bool] = field(default_factory=dict)  # channel → erased
    owners: dict[str, bool] = field(default_factory=dict)  # WeCom UserID → removed
    tags: list[int] = field(default_factory=list)
    interacted: float | None = None  # days ago
    purchased: float | None = None  # days ago
    erased: bool = False
    merged_into: int | None = None
    name: str = ""


async def person(tenant_id: int, p: Person, key: str) -> int:
    """Insert one contact as `p` describes; `key` makes its external ids unique."""
    row = await db.fetchrow(
        "INSERT INTO contact (tenant, display_name, avatar_url, phone, remark, language, first_seen_at, "
        "last_interaction_at, last_purchase_at, merged_into, erased_at, created_at, updated_at) "
        "VALUES ($1, $2, '', '', '', '', $3, $4, $5, $6, $7, now(), now()) RETURNING id",
        tenant_id, p.name or key, days_ago(400),
        days_ago(p.interacted) if p.interacted is not None else None,
        days_ago(p.purchased) if p.purchased is not None else None,
        p.merged_into, days_ago(1) if p.erased else None)
    contact_id = int(row["id"])
    identities: dict[str, int] = {}
    for channel, erased in p.channels.items():
        ident = await db.fetchrow(
            "INSERT INTO identity (tenant, contact, channel, external_id, unionid, first_seen_at, last_seen_at, "
            "profile, erased_at) VALUES ($1, $2, $3, $4, NULL, now(), now(), '{}'::jsonb, $5) RETURNING id",
            tenant_id, contact_id, channel, f"{channel}-{key}", days_ago(1) if erased else None)
        identities[channel] = int(ident["id"])
    for userid, removed in p.owners.items():
        if "wecom" not in identities:
            raise ValueError("a rep owns a customer through their WeCom identity: give the person one")
        identity_id = identities["wecom"]
        await db.execute(
            "INSERT INTO owner (tenant, contact, identity, staff_userid, state, remark, description, tags, added_at, "
            "removed_at) VALUES ($1, $2, $3, $4, '', '', '', '[]'::jsonb, $5, $6)",
            tenant_id, contact_id, identity_id, userid, days_ago(30), days_ago(2) if removed else None)
    for tag_id in p.tags:
        await db.execute("INSERT INTO contact_tag (tenant, contact, tag, created_at) VALUES ($1, $2, $3, now())",
                         tenant_id, contact_id, tag_id)
    return contact_id


async def crowd(tenant_id: int, n: int, prefix: str = "crowd", **fields: object) -> list[int]:
    """`n` alike contacts, in id order."""
    return [await person(tenant_id, Person(**fields), f"{prefix}{i:05d}") for i in range(n)]  # type: ignore[arg-type]
