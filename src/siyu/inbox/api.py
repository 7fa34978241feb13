"""JSON API of the inbox for a tenant's systems (Authorization: Bearer <API key>): conversations in pages,
one conversation with its newest messages, and the "API call" handoff trigger (a person to a human).

The key is the tenant's, so the API sees every conversation of the tenant (no rep scope). Malformed input
answers 400 naming the field; another tenant's conversation or contact answers exactly like a missing one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, Parameter
from msgspec import UNSET, Meta, Struct, UnsetType

from siyu.contacts.lookup import IDENTITY_RE
from siyu.core import db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox import listing, routing
from siyu.inbox.config import CHANNELS
from siyu.inbox.conversations import get_conversation
from siyu.inbox.handoff import do_handoff
from siyu.web.api import BEARER, IsoTime, api_actor, documents, errors, iso, json_object, whole_number
from siyu.web.auth import api_key, api_tenant_id

MESSAGES = 100  # the newest messages a conversation answers with
ID_MAX = 10**15 - 1  # 15 digits: far past any conversation id, well inside bigint


class Assignee(Struct):
    id: int
    name: str


class ConversationOut(Struct):
    id: int
    status: Annotated[str, Meta(description="bot, queued, assigned, snoozed or resolved")]
    channel: Annotated[str, Meta(description="oa, mp or wecom (微信客服)")]
    contact_id: int
    identity: Annotated[str, Meta(description="The person's openid or external_userid on this channel")]
    display_name: str
    assignee: Assignee | None
    teams: list[int]
    vip: bool
    handoff_reason: str | None
    unread: int
    preview: str
    last_message_at: IsoTime | None
    queued_at: IsoTime | None
    assigned_at: IsoTime | None
    first_response_at: IsoTime | None
    snoozed_until: IsoTime | None
    resolved_at: IsoTime | None
    created_at: IsoTime | None


class MessageOut(Struct):
    id: int
    direction: Annotated[str, Meta(description="in, out, note or system")]
    type: str
    body: str
    author: str | None
    status: str
    error: str | None
    created_at: IsoTime | None
    sent_at: IsoTime | None
    event: Annotated[dict[str, Any], Meta(
        description="A system line's event as data (`event`: assigned, transferred, resolved, …, with its "
                    "details such as `to`); present on system lines only, null when unreadable")] | None | UnsetType = UNSET


class ConversationPage(Struct):
    conversations: list[ConversationOut]
    next_cursor: str | None


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class HandoffOut(ConversationOut):
    queue_position: Annotated[int | None, Meta(description="Its place in the queue (1 = next) while queued")]


class HandoffIn(Struct):
    """A contact on a channel (`contact_id` and `channel`), or one of their ids (`identity`)."""

    contact_id: int | None = None
    channel: Annotated[str, Meta(description="oa, mp or wecom")] | None = None
    identity: Annotated[str, Meta(description="An openid or external_userid")] | None = None


def conversation_json(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"], "status": c["status"], "channel": c["channel"], "contact_id": c["contact"],
        "identity": c["external_id"], "display_name": c.get("display_name") or "",
        "assignee": ({"id": c["assignee"], "name": c.get("assignee_name") or c.get("assignee_email") or ""}
                     if c["assignee"] is not None else None),
        "teams": list(c["teams"] or ()), "vip": c["vip"], "handoff_reason": c["handoff_reason"] or None,
        "unread": c["unread"], "preview": c["preview"], "last_message_at": iso(c["last_message_at"]),
        "queued_at": iso(c["queued_at"]), "assigned_at": iso(c["assigned_at"]),
        "first_response_at": iso(c["first_response_at"]), "snoozed_until": iso(c["snoozed_until"]),
        "resolved_at": iso(c["resolved_at"]), "created_at": iso(c["created_at"]),
    }


def message_json(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m["id"], "direction": m["direction"], "type": m["msg_type"], "body": m["body"],
        "author": m["author_label"] or None, "status": m["status"], "error": m["error"] or None,
        "created_at": iso(m["created_at"]), "sent_at": iso(m["sent_at"])}
    if m["direction"] == "system":  # what happened, as data: {"event": "assigned", "to": …}
        try:
            out["event"] = json.loads(m["body"])
        except ValueError:
            out["event"] = None
    return out


async def _identity_for(tenant_id: int, body: dict[str, Any]) -> int:
    """The identity a handoff request names: a contact on a channel, or an openid / external_userid."""
    if body.get("identity") is not None:
        external_id = body["identity"].strip() if isinstance(body["identity"], str) else ""
        if not IDENTITY_RE.match(external_id):
            raise InvalidInput.one("identity", N_("An openid or external_userid: 6 to 64 letters, digits, - or _."))
        row = await db.fetchrow(
            "SELECT id FROM identity WHERE tenant = $1 AND external_id = $2 "
            "ORDER BY last_seen_at DESC NULLS LAST, id DESC LIMIT 1", tenant_id, external_id)
        if row is None:
            raise NotFound()
        return int(row["id"])
    raw = body.get("contact_id")
    if raw is None:
        raise InvalidInput.one("contact_id", N_("Send contact_id with channel, or identity."))
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit() or len(str(raw)) > 12:
        raise InvalidInput.one("contact_id", N_("Enter a whole number."))
    channel = body.get("channel")
    if channel not in CHANNELS:
        raise InvalidInput.one("channel", N_("Choose one of: {choices}."), choices=", ".join(CHANNELS))
    contact = await db.fetchrow("SELECT COALESCE(merged_into, id) AS id FROM contact WHERE tenant = $1 AND id = $2",
                                tenant_id, int(raw))
    if contact is None:
        raise NotFound()
    row = await db.fetchrow(
        "SELECT id FROM identity WHERE tenant = $1 AND contact = $2 AND channel = $3 "
        "ORDER BY last_seen_at DESC NULLS LAST, id DESC LIMIT 1", tenant_id, int(contact["id"]), channel)
    if row is None:
        raise InvalidInput.one("channel", N_("This contact has no identity on this channel."))
    return int(row["id"])


def _q(description: str) -> Any:
    return Parameter(description=description, required=False)


class InboxApi(Controller):
    path = "/api/v1/conversations"
    guards = [api_key]
    tags = ["inbox"]
    security = BEARER

    @get("/", responses=errors())
    async def conversations(
        self, request: Request[Any, Any, Any],
        status: Annotated[str | None, _q("bot, queued, assigned, snoozed or resolved")] = None,
        cursor: Annotated[str | None, _q("`next_cursor` of the previous page")] = None,
        limit: Annotated[str | None, _q("1 to 100 (default 25)")] = None,
    ) -> ConversationPage:
        """Newest message first (`last_message_at`, then id); `?status=` one of bot, queued, assigned,
        snoozed, resolved; pass `next_cursor` back as `?cursor=`; `?limit=` 1 to 100 (25)."""
        tid = api_tenant_id(request)
        size = whole_number(limit or str(listing.PAGE_SIZE), "limit")
        page = await listing.list_by_status(tid, status or None, cursor or None, size)
        return msgspec.convert({"conversations": [conversation_json(c) for c in page.conversations],
                                "next_cursor": page.next_cursor}, ConversationPage)

    @get("/{conversation_id:str}", responses=errors(404))
    async def conversation(self, request: Request[Any, Any, Any], conversation_id: FromPath[str]) -> ConversationDetail:
        """One conversation, its contact id, and its newest 100 messages (newest first)."""
        tid = api_tenant_id(request)
        conv = await get_conversation(tid, None, whole_number(conversation_id, "id", ID_MAX))
        rows = await db.fetch(
            "SELECT id, direction, msg_type, body, author_label, status, error, created_at, sent_at FROM inbox_message "
            "WHERE tenant = $1 AND conversation = $2 ORDER BY id DESC LIMIT $3", tid, conv["id"], MESSAGES)
        return msgspec.convert({**conversation_json(conv), "messages": [message_json(dict(m)) for m in rows]},
                               ConversationDetail)

    @post("/handoff", status_code=200, dependencies={"_body": documents(HandoffIn)}, responses=errors(404))
    async def handoff(self, request: Request[Any, Any, Any]) -> HandoffOut:
        """Hand a person to a human now: `{"contact_id": …, "channel": "oa|mp|wecom"}` or
        `{"identity": "<openid or external_userid>"}`. Answers the conversation (queued with its place in
        line, or assigned to a rep); a conversation a human already has stays as it is."""
        tid = api_tenant_id(request)
        identity_id = await _identity_for(tid, await json_object(request))
        actor = api_actor(request)
        row = await do_handoff(tid, identity_id, "api", actor_label=actor.label, actor=actor)
        conv = await get_conversation(tid, None, int(row["id"]))
        out = conversation_json(conv)
        out["queue_position"] = (await routing.queue_position(tid, conv) + 1) if conv["status"] == "queued" else None
        return msgspec.convert(out, HandoffOut)
