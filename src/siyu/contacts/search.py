"""Finding contacts: the list page's search, filters and cursor pages, and the lookup behind a manual merge.

A page costs three queries whatever its size: the contacts, then the identities and the tags of all of
them at once. Merged-away contacts are never listed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.contacts.audience import Audience
from siyu.contacts.scope import EVERYONE, Scope, condition
from siyu.contacts.scope import ids as scope_ids
from siyu.core import clock, db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.timeline.services import decode_cursor, encode_cursor

CHANNELS = ("oa", "mp", "wecom")
PAGE_SIZE = 25
MAX_PAGE = 100
QUERY_MAX = 100
# Newest interaction first; a contact that never interacted sorts by when it was first seen.
_SORT = "COALESCE(c.last_interaction_at, c.first_seen_at)"  # the expression of the index contact_list_order
_COLUMNS = ("c.id, c.display_name, c.avatar_url, c.phone, c.remark, c.unionid, c.first_seen_at, "
            f"c.last_interaction_at, c.erased_at, {_SORT} AS sort_at")


@dataclass(frozen=True)
class ContactPage:
    contacts: list[dict[str, Any]]  # each with its "identities" and "tags"
    next_cursor: str | None  # None: this is the last page


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_query(tenant_id: int, q: str, channel: str | None, tag_id: int | None,
               before: tuple[datetime, int] | None, limit: int, scope: Scope = EVERYONE,
               audience: Audience | None = None, now: datetime | None = None) -> tuple[str, list[Any]]:
    """The SQL of one list page (`limit` + 1 rows, to know whether there is more) and its arguments.

    Each way a contact can match is a branch its own index answers (migrations/contacts, "search grams"):
    name, remark or phone by their one- and two-character grams, then ILIKE / LIKE on what they found;
    the contact's unionid by prefix; an identity's openid, external_userid or unionid by prefix. Each
    branch takes its own first rows in list order and the page is the first rows of all three, so the
    planner can walk the list-order index and stop for a frequent term, and read only the matches of a
    rare one (an OR across the two tables would leave it nothing but a scan of every contact).

    `scope` (who is looking) keeps the rows to the contacts it selects, in every branch; a search reads its
    ids once (a CTE the branches share). For everyone it adds nothing. `audience` (the list's filters, in the
    segments' language) adds its condition to every branch likewise; without filters it adds nothing, so the
    unfiltered list and search are the statements they always were."""
    args: list[Any] = [tenant_id]
    common = ["c.tenant = $1 AND c.merged_into IS NULL"]
    seen = scope_ids(scope, args) if q else condition(scope, "c", args)
    if seen is not None:
        common.append(seen if not q else "c.id IN (SELECT id FROM seen)")
    if channel is not None:
        args.append(channel)
        common.append(f"EXISTS (SELECT 1 FROM identity i WHERE i.tenant = c.tenant AND i.contact = c.id "
                      f"AND i.channel = ${len(args)})")
    if tag_id is not None:
        args.append(tag_id)
        common.append(f"EXISTS (SELECT 1 FROM contact_tag ct WHERE ct.tenant = c.tenant AND ct.contact = c.id "
                      f"AND ct.tag = ${len(args)})")
    if audience is not None and (filtered := audience.where(args, now or clock.now())) is not None:
        common.append(filtered)
    if before is not None:
        args += list(before)
        common.append(f"({_SORT}, c.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    order = f"ORDER BY {_SORT} DESC, c.id DESC LIMIT ${len(args)}"
    where = " AND ".join(common)
    if not q:
        return f"SELECT {_COLUMNS} FROM contact c WHERE {where} {order}", args
    args += [q, f"%{_like(q)}%", f"{_like(q)}%"]
    text, contains, prefix = f"${len(args) - 2}", f"${len(args) - 1}", f"${len(args)}"
    branches = [
        # The grams find the candidates (the index holds the rows' grams, the function runs on the query
        # only), the ILIKE decides. The ILIKE sits in a CASE so that the planner does not multiply its
        # selectivity with the grams': the two are one fact (a row holds the grams because it contains
        # the text), and the product made it expect ~25x fewer matches of a frequent term than there are,
        # and pick a parallel scan for them. As a cheap filter it also runs before the grams function
        # when the list-order index is walked.
        f"contact_search_grams(c.display_name, c.remark, c.phone) @> contact_search_query_grams({text}) "
        f"AND CASE WHEN c.display_name ILIKE {contains} OR c.remark ILIKE {contains} OR c.phone LIKE {contains} "
        "THEN true ELSE false END",
        f"c.unionid LIKE {prefix}",
        f"c.id IN (SELECT i.contact FROM identity i WHERE i.tenant = $1 "
        f"AND (i.external_id LIKE {prefix} OR i.unionid LIKE {prefix}))",
    ]
    # MATERIALIZED: the branches run once, whatever the planner expects of the join that follows.
    union = " UNION ".join(f"(SELECT c.id FROM contact c WHERE {where} AND {b} {order})" for b in branches)
    shared = f"seen (id) AS MATERIALIZED ({seen}), " if seen is not None else ""
    return (f"WITH {shared}hits AS MATERIALIZED ({union}) SELECT {_COLUMNS} FROM hits h "
            f"JOIN contact c ON c.tenant = $1 AND c.id = h.id {order}", args)


def clean_query(q: str | None) -> str:
    q = " ".join((q or "").split())
    if len(q) > QUERY_MAX:
        raise InvalidInput.one("q", N_("Use 1 to {max} characters."), max=QUERY_MAX)
    return q


async def search(tenant_id: int, q: str = "", channel: str | None = None, tag_id: int | None = None,
                 cursor: str | None = None, limit: int = PAGE_SIZE, scope: Scope = EVERYONE,
                 audience: Audience | None = None, max_page: int = MAX_PAGE) -> ContactPage:
    """Live contacts matching `q` (name, remark or phone containing it; an openid, unionid or
    external_userid starting with it), linked on `channel`, carrying `tag_id`, selected by `audience`, that
    `scope` may see; newest interaction first. (`max_page`: the CSV export reads larger pages.)"""
    if not 1 <= limit <= max_page:
        raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=max_page)
    if channel is not None and channel not in CHANNELS:
        raise InvalidInput.one("channel", N_("Choose one of: {choices}."), choices=", ".join(CHANNELS))
    q = clean_query(q)
    before = decode_cursor(cursor) if cursor else None
    sql, args = list_query(tenant_id, q, channel, tag_id, before, limit, scope, audience)
    if q:
        # The best plan depends on the text: a frequent one walks the list order, a rare one reads its
        # candidates from the grams index, a prefix becomes a range only once its value is known. So the
        # statement is planned for its values every time; PostgreSQL's plan cache would otherwise settle
        # on one generic plan after five runs, and that plan scans every identity for a prefix (~1 s).
        async with db.transaction():
            await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            rows = await db.fetch(sql, *args)
    else:
        rows = await db.fetch(sql, *args)
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


def text_condition(q: str, args: list[Any]) -> str:
    """What `q` matches as one condition on `contact c` (of the tenant in `$1`), its values appended to
    `args`: the three branches of the list's search joined by OR. For walks in id order (the bulk actions),
    where the list's per-branch plans do not apply."""
    args += [q, f"%{_like(q)}%", f"{_like(q)}%"]
    text, contains, prefix = f"${len(args) - 2}", f"${len(args) - 1}", f"${len(args)}"
    return (f"((contact_search_grams(c.display_name, c.remark, c.phone) @> contact_search_query_grams({text}) "
            f"AND (c.display_name ILIKE {contains} OR c.remark ILIKE {contains} OR c.phone LIKE {contains})) "
            f"OR c.unionid LIKE {prefix} OR c.id IN (SELECT i.contact FROM identity i WHERE i.tenant = $1 "
            f"AND (i.external_id LIKE {prefix} OR i.unionid LIKE {prefix})))")


async def find_live(tenant_id: int, key: str, scope: Scope = EVERYONE) -> int:
    """The live contact an agent named for a merge: its id, or an exact openid, external_userid or unionid.
    One outside `scope` is not found, like one that does not exist."""
    key = (key or "").strip()
    row = None
    if key.isdigit() and len(key) < 10:
        args: list[Any] = [tenant_id, int(key)]
        seen = condition(scope, "c", args)
        row = await db.fetchrow("SELECT c.id FROM contact c WHERE c.tenant = $1 AND c.id = $2 "
                                f"AND c.merged_into IS NULL{f' AND {seen}' if seen else ''}", *args)
    elif key:
        args = [tenant_id, key]
        seen = condition(scope, "c", args)
        # One indexed lookup per kind of id (an OR across the two tables would read every contact).
        row = await db.fetchrow(
            "SELECT c.id FROM contact c WHERE c.tenant = $1 AND c.merged_into IS NULL AND c.id IN ("
            "SELECT id FROM contact WHERE tenant = $1 AND unionid = $2 UNION ALL "
            "SELECT contact FROM identity WHERE tenant = $1 AND external_id = $2 UNION ALL "
            f"SELECT contact FROM identity WHERE tenant = $1 AND unionid = $2){f' AND {seen}' if seen else ''} "
            "ORDER BY c.id LIMIT 1", *args)
    if row is None:
        raise InvalidInput.one("other", N_("No contact matches this id, openid, unionid or external_userid."))
    return int(row["id"])
