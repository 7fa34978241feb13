"""What the inbox pages read: the conversation list of a box (keyset pages, a fixed number of queries per
page: one for the rows, one for the counts), one row of it for live updates, and a thread's messages.

Boxes: `mine` (assigned to or snoozed by the viewer; with the status filter, also those they held last that
are resolved or back with the bot), `unassigned` (waiting in the queue of the viewer's
teams, or of every team for an admin), `all` (everything in the viewer's scope; managers and admins only).
Every query also carries the viewer's scope (`Viewer.where`), so a box can never show more than the scope.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.core import db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox.conversations import CONVERSATION_COLUMNS, CONVERSATION_FROM, STATUSES, Viewer

BOXES = ("mine", "unassigned", "all")
OPEN = ("queued", "assigned", "snoozed")
STATUS_FILTERS: dict[str, tuple[str, ...] | None] = {
    "open": OPEN, "queued": ("queued",), "assigned": ("assigned",), "snoozed": ("snoozed",),
    "resolved": ("resolved",), "bot": ("bot",), "any": None,
}
PAGE_SIZE = 30
THREAD_PAGE = 50
SEARCH_MAX = 100


@dataclass(frozen=True)
class ListFilter:
    box: str = "mine"
    status: str = "open"
    q: str = ""

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in (("box", self.box), ("status", self.status), ("q", self.q)) if v}


def parse_filter(viewer: Viewer, box: str | None, status: str | None, q: str | None) -> ListFilter:
    box = box or "mine"
    status = status or "open"
    if box not in BOXES or (box == "all" and not viewer.is_manager):
        choices = BOXES if viewer.is_manager else BOXES[:2]
        raise InvalidInput.one("box", N_("Choose one of: {choices}."), choices=", ".join(choices))
    if status not in STATUS_FILTERS:
        raise InvalidInput.one("status", N_("Choose one of: {choices}."), choices=", ".join(STATUS_FILTERS))
    clean = " ".join((q or "").split())
    if len(clean) > SEARCH_MAX:
        raise InvalidInput.one("q", N_("Use 1 to {max} characters."), max=SEARCH_MAX)
    return ListFilter(box, status, clean)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


class _Args:
    """Numbered parameters ($1, $2, …) for a query built from parts."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def scope(self, viewer: Viewer) -> str:
        clause, args = viewer.where("c", len(self.values) + 1)
        self.values += args
        return clause


def _waiting_for(viewer: Viewer, args: _Args) -> str:
    """Queued conversations the viewer may pick up: their teams' (and those of the teams they manage);
    a conversation no team claims waits for everyone."""
    if viewer.is_admin:
        return "c.status = 'queued'"
    teams = args.add(list(viewer.team_ids) + list(viewer.managed_team_ids))
    return f"(c.status = 'queued' AND (cardinality(c.teams) = 0 OR c.teams && {teams}::int[]))"


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _conditions(tenant_id: int, viewer: Viewer, f: ListFilter, status: bool = True) -> tuple[list[str], _Args]:
    args = _Args(tenant_id)
    where = ["c.tenant = $1", args.scope(viewer)]
    if f.box == "mine":
        me = args.add(viewer.staff_id)
        where.append(f"(c.assignee = {me} OR (c.status IN ('resolved', 'bot') AND c.last_assignee = {me}))")
    elif f.box == "unassigned":
        where.append(_waiting_for(viewer, args))
    statuses = STATUS_FILTERS[f.status]
    if status and statuses is not None:
        where.append(f"c.status = ANY({args.add(list(statuses))}::text[])")
    if f.q:
        p = args.add(_like(f.q))
        where.append(f"(ct.display_name ILIKE {p} OR ct.remark ILIKE {p} OR c.preview ILIKE {p})")
    return where, args


def encode_cursor(row: dict[str, Any]) -> str:
    at = row["last_message_at"]
    raw = f"{at.isoformat() if at else ''}|{row['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        return (datetime.fromisoformat(at) if at else None), int(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput.one("cursor", N_("This page link is broken; start from the first page.")) from exc


async def conversations(tenant_id: int, viewer: Viewer, f: ListFilter, cursor: str | None = None,
                        limit: int = PAGE_SIZE) -> Page:
    """One page of a box, newest activity first (one query). The order is the index's
    (tenant, status, last_message_at DESC, id DESC), so conversations without a message yet come first. One
    UNION ALL branch per status, each with only the part of the viewer's scope that can hold in that status,
    walks that index and stops after a page; the branches pick ids only, and the contact and rep are joined
    for the page's rows alone."""
    args = _Args(tenant_id)
    common: list[str] = []
    if f.box == "unassigned":
        common.append(_waiting_for(viewer, args))
    if cursor:
        at, ident = decode_cursor(cursor)
        if at is None:
            common.append(f"((c.last_message_at IS NULL AND c.id < {args.add(ident)}) OR c.last_message_at IS NOT NULL)")
        else:
            common.append(f"(c.last_message_at, c.id) < ({args.add(at)}, {args.add(ident)})")
    search = ""
    if f.q:
        p = args.add(_like(f.q))
        search = f" AND (ct.display_name ILIKE {p} OR ct.remark ILIKE {p} OR c.preview ILIKE {p})"
    inner_from = CONVERSATION_FROM if f.q else "inbox_conversation c"
    n = args.add(limit + 1)
    me = args.add(viewer.staff_id) if f.box == "mine" else ""
    statuses = STATUS_FILTERS[f.status] or STATUSES
    branches = []
    for status in statuses:
        if status not in STATUSES:  # literals from the fixed list only
            continue
        if f.box == "mine" and status not in ("assigned", "snoozed", "resolved", "bot"):
            continue
        if f.box == "unassigned" and status != "queued":
            continue
        where = ["c.tenant = $1", f"c.status = '{status}'", *common]
        if f.box == "mine":
            where.append(f"c.{'last_assignee' if status in ('resolved', 'bot') else 'assignee'} = {me}")
        else:
            clause, extra = viewer.where_in_status("c", status, len(args.values) + 1)
            args.values += extra
            where.append(clause)
        branches.append(f"(SELECT c.id, c.last_message_at FROM {inner_from} WHERE {' AND '.join(where)}{search} "
                        f"ORDER BY c.last_message_at DESC, c.id DESC LIMIT {n})")
    if not branches:
        return Page([], None)
    rows = await db.fetch(
        f"SELECT {CONVERSATION_COLUMNS} FROM (SELECT id, last_message_at FROM ({' UNION ALL '.join(branches)}) ids "
        f"ORDER BY last_message_at DESC, id DESC LIMIT {n}) page JOIN {CONVERSATION_FROM} "
        "ON c.tenant = $1 AND c.id = page.id ORDER BY c.last_message_at DESC, c.id DESC", *args.values)
    found = [dict(r) for r in rows]
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1]) if more and found else None)


async def conversation_in(tenant_id: int, viewer: Viewer, f: ListFilter, conversation_id: int) -> dict[str, Any] | None:
    """One conversation as a row of the box `f` shows (live updates): NotFound when it is out of the viewer's
    scope (or another tenant's), None when it is in scope but not in this box or filter."""
    where, args = _conditions(tenant_id, viewer, f)
    cid = args.add(conversation_id)
    row = await db.fetchrow(
        f"SELECT {CONVERSATION_COLUMNS}, ({' AND '.join(where[2:]) or 'TRUE'}) AS in_box FROM {CONVERSATION_FROM} "
        f"WHERE {where[0]} AND {where[1]} AND c.id = {cid}", *args.values)
    if row is None:
        raise NotFound()
    return dict(row) if row["in_box"] else None


COUNT_CAP = 100  # a box shows "99+" beyond this: counting 100,000 open conversations per page is waste


def _shown(n: int) -> int | str:
    return f"{COUNT_CAP - 1}+" if n >= COUNT_CAP else n


async def counts(tenant_id: int, viewer: Viewer) -> dict[str, dict[str, int | str]]:
    """Open conversations per box, and how many need reading (one query, each count capped): in `mine` and
    `all` those with unread customer messages, in `unassigned` every waiting one (nobody has read it)."""
    args = _Args(tenant_id, list(OPEN))
    scope = args.scope(viewer)
    me = args.add(viewer.staff_id)
    waiting = _waiting_for(viewer, args)
    cap = args.add(COUNT_CAP)

    def capped(condition: str) -> str:
        return (f"(SELECT count(*) FROM (SELECT 1 FROM inbox_conversation c WHERE c.tenant = $1 "
                f"AND c.status = ANY($2::text[]) AND {scope} AND {condition} LIMIT {cap}) x)")

    columns = [f"{capped(f'c.assignee = {me}')} AS mine",
               f"{capped(f'c.assignee = {me} AND c.unread > 0')} AS mine_unread",
               f"{capped(waiting)} AS unassigned"]
    if viewer.is_manager:
        needs_reading = "(c.unread > 0 OR c.status = 'queued')"
        columns += [f"{capped('TRUE')} AS all_open", f"{capped(needs_reading)} AS all_unread"]
    row = await db.fetchrow(f"SELECT {', '.join(columns)}", *args.values)
    out: dict[str, dict[str, int | str]] = {
        "mine": {"total": _shown(row["mine"]), "unread": _shown(row["mine_unread"])},
        "unassigned": {"total": _shown(row["unassigned"]), "unread": _shown(row["unassigned"])}}
    if viewer.is_manager:
        out["all"] = {"total": _shown(row["all_open"]), "unread": _shown(row["all_unread"])}
    return out


async def messages(tenant_id: int, conversation_id: int, before: int | None = None,
                   limit: int = THREAD_PAGE) -> tuple[list[dict[str, Any]], int | None]:
    """The newest `limit` messages of a thread (before message id `before`), oldest first, and the id to
    continue from when there are earlier ones. The caller has checked the conversation is in scope.

    In the order things happened (`created_at`: a customer's message at WeChat's time for it, then id),
    not the order they were written down: callbacks that arrive together are processed by jobs that may
    finish in any order."""
    rows = await db.fetch(
        "SELECT id, direction, author, author_label, msg_type, body, status, error, resent_as, created_at, sent_at, "
        "media_ref, delivery, source_key "
        "FROM inbox_message WHERE tenant = $1 AND conversation = $2 AND ($3::bigint IS NULL OR (created_at, id) < "
        "  (SELECT b.created_at, b.id FROM inbox_message b WHERE b.tenant = $1 AND b.conversation = $2 AND b.id = $3)) "
        "ORDER BY created_at DESC, id DESC LIMIT $4", tenant_id, conversation_id, before, limit + 1)
    found = [dict(r) for r in rows]
    earlier = found[limit - 1]["id"] if len(found) > limit else None
    return list(reversed(found[:limit])), earlier


async def message_in(tenant_id: int, conversation_id: int, message_id: int) -> dict[str, Any] | None:
    """One message of a thread (the caller has checked the conversation is in scope)."""
    row = await db.fetchrow(
        "SELECT id, direction, msg_type, media_ref, source_key FROM inbox_message WHERE tenant = $1 "
        "AND conversation = $2 AND id = $3", tenant_id, conversation_id, message_id)
    return dict(row) if row else None


async def reps(tenant_id: int, any_role: bool = False) -> list[dict[str, Any]]:
    """Who a conversation can be given to (agents and tenant admins; `any_role`: every active person), with
    their presence, capacity and WeCom UserID."""
    rows = await db.fetch(
        "SELECT s.id, s.name, s.email, s.role, s.max_concurrent, COALESCE(a.presence, 'offline') AS presence, "
        "COALESCE(a.wecom_userid, '') AS wecom_userid FROM staff s "
        "LEFT JOIN inbox_agent a ON a.tenant = s.tenant AND a.staff = s.id WHERE s.tenant = $1 AND s.is_active "
        "AND ($2 OR s.role IN ('agent', 'tenant_admin')) ORDER BY lower(COALESCE(NULLIF(s.name, ''), s.email)), s.id",
        tenant_id, any_role)
    return [dict(r) for r in rows]
