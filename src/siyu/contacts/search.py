"""Finding contacts: the list page's search, filters and cursor pages, and the lookup behind a manual merge.

A page costs three queries whatever its size: the contacts, then the identities and the tags of all of
them at once. Merged-away contacts are never listed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.timeline.services import decode_cursor, encode_cursor

CHANNELS = ("oa", "mp", "wecom")
PAGE_SIZE = 25
MAX_PAGE = 100
QUERY_MAX = 100
# Newest interaction first; a contact that never interacted sorts by when it was first seen.
_SORT = "COALESCE(c.last_interaction_at, c.first_seen_at)"


@dataclass(frozen=True)
class ContactPage:
    contacts: list[dict[str, Any]]  # each with its "identities" and "tags"
    next_cursor: str | None  # None: this is the last page


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(tenant_id: int, q: str = "", channel: str | None = None, tag_id: int | None = None,
                 cursor: str | None = None, limit: int = PAGE_SIZE) -> ContactPage:
    """Live contacts matching `q` (name, remark or phone containing it; an openid, unionid or
    external_userid starting with it), linked on `channel`, carrying `tag_id`; newest interaction first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_PAGE)
    if channel is not None and channel not in CHANNELS:
        raise InvalidInput.one("channel", N_("Choose one of: {choices}."), choices=", ".join(CHANNELS))
    q = " ".join((q or "").split())
    if len(q) > QUERY_MAX:
        raise InvalidInput.one("q", N_("Use 1 to {max} characters."), max=QUERY_MAX)
    before = decode_cursor(cursor) if cursor else None

    sql = [f"SELECT c.id, c.display_name, c.avatar_url, c.phone, c.remark, c.unionid, c.first_seen_at, "
           f"c.last_interaction_at, c.erased_at, {_SORT} AS sort_at FROM contact c "
           "WHERE c.tenant = $1 AND c.merged_into IS NULL"]
    args: list[Any] = [tenant_id]
    if q:
        args += [f"%{_like(q)}%", f"{_like(q)}%"]
        contains, prefix = f"${len(args) - 1}", f"${len(args)}"
        sql.append(
            f"AND (c.display_name ILIKE {contains} OR c.remark ILIKE {contains} OR c.phone LIKE {contains} "
            f"OR c.unionid LIKE {prefix} OR EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant "
            f"AND i.contact = c.id AND (i.external_id LIKE {prefix} OR i.unionid LIKE {prefix})))")
    if channel is not None:
        args.append(channel)
        sql.append(f"AND EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id "
                   f"AND i.channel = ${len(args)})")
    if tag_id is not None:
        args.append(tag_id)
        sql.append(f"AND EXISTS (SELECT 1 FROM contact_tag ct WHERE ct.tenant = c.tenant AND ct.contact = c.id "
                   f"AND ct.tag = ${len(args)})")
    if before is not None:
        args += list(before)
        sql.append(f"AND ({_SORT}, c.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql.append(f"ORDER BY {_SORT} DESC, c.id DESC LIMIT ${len(args)}")
    rows = await db.fetch(" ".join(sql), *args)
    contacts = [dict(r) for r in rows[:limit]]
    if not contacts:
        return ContactPage([], None)

    ids = [int(c["id"]) for c in contacts]
    identities: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in await db.fetch(
            "SELECT contact, channel, external_id, unionid, erased_at FROM identity "
            "WHERE tenant = $1 AND contact = ANY($2::int[]) ORDER BY channel, id", tenant_id, ids):
        identities[int(r["contact"])].append(dict(r))
    tags: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in await db.fetch(
            "SELECT ct.contact, t.id, t.name FROM contact_tag ct JOIN tag t ON t.tenant = ct.tenant AND t.id = ct.tag "
            "WHERE ct.tenant = $1 AND ct.contact = ANY($2::int[]) ORDER BY lower(t.name)", tenant_id, ids):
        tags[int(r["contact"])].append({"id": int(r["id"]), "name": r["name"]})
    for c in contacts:
        c["identities"] = identities[int(c["id"])]
        c["tags"] = tags[int(c["id"])]
    more = len(rows) > limit
    last = contacts[-1]
    return ContactPage(contacts, encode_cursor(last["sort_at"], int(last["id"])) if more else None)


async def find_live(tenant_id: int, key: str) -> int:
    """The live contact an agent named for a merge: its id, or an exact openid, external_userid or unionid."""
    key = (key or "").strip()
    row = None
    if key.isdigit() and len(key) < 10:
        row = await db.fetchrow("SELECT id FROM contact WHERE tenant = $1 AND id = $2 AND merged_into IS NULL",
                                tenant_id, int(key))
    elif key:
        row = await db.fetchrow(
            "SELECT c.id FROM contact c WHERE c.tenant = $1 AND c.merged_into IS NULL AND (c.unionid = $2 "
            "OR EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id "
            "AND (i.external_id = $2 OR i.unionid = $2))) ORDER BY c.id LIMIT 1", tenant_id, key)
    if row is None:
        raise InvalidInput.one("other", N_("No contact matches this id, openid, unionid or external_userid."))
    return int(row["id"])
