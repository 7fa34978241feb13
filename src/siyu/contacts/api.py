"""JSON API for a tenant's systems (Authorization: Bearer <API key>): the contacts in keyset pages (or found by
any WeChat id), a contact with its identities and tags, its timeline, the data-subject export and erasure, the
tags, and the Mini Program login that links an MP user to their contact.

Every route takes and answers the typed models of `siyu.contacts.schemas` (documented in the OpenAPI schema);
bodies are decoded strictly (400 naming the field). The key acts for the whole tenant; another tenant's contact
answers exactly like a missing one (404).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, Parameter

from siyu.contacts import audience as audiences
from siyu.contacts import privacy
from siyu.contacts import services as contacts
from siyu.contacts.lookup import check_identity, find_by_identity
from siyu.contacts.schemas import (
    ContactExport,
    ContactOut,
    ContactPage,
    Erased,
    EraseIn,
    EraseOut,
    EventOut,
    EventPage,
    IdentityOut,
    MpLoginIn,
    MpLoginOut,
    TagList,
    TagOut,
    TagRef,
)
from siyu.core import db
from siyu.core.errors import Conflict, InvalidInput, NotFound, WeChatError
from siyu.core.i18n import N_
from siyu.timeline import services as timeline
from siyu.web.api import BEARER, api_actor, documents, errors, iso, limit_of, read, whole_number
from siyu.web.auth import api_key, api_tenant_id

OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT4_MAX = 2**31 - 1

def _contact_id(raw: str) -> int:
    return whole_number(raw, "id")


def _q(description: str, **schema: Any) -> Any:
    """A query parameter. The handlers take its text and check it themselves (a 400 naming it), so the schema
    is given here: what an integrator should send (`type`, bounds, `format`)."""
    return Parameter(description=description, required=False,
                     schema_extra={"one_of": None, "type": OpenAPIType.STRING, **schema})


def _id_q(description: str) -> Any:
    return _q(description, type=OpenAPIType.INTEGER, minimum=1, maximum=2**31 - 1)


def _choices_q(description: str, choices: tuple[str, ...]) -> Any:
    return _q(description, type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING, enum=list(choices)))


def _limit_q(default: int, maximum: int) -> Any:
    return _q(f"1 to {maximum} (default {default})", type=OpenAPIType.INTEGER, minimum=1, maximum=maximum,
              default=default)


# --- the list's cursor and filters -------------------------------------------------------------------------

def _cursor(updated_at: datetime, contact_id: int) -> str:
    micros = (updated_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{contact_id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, int]:
    try:
        if len(cursor) > 64:
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = raw.split(".")
        # Only what `_cursor` writes: two runs of digits, the id within PostgreSQL's integer (else a 500).
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
            raise ValueError(raw)
        micros, contact_id = int(parts[0]), int(parts[1])
        if not 0 < contact_id <= _INT4_MAX:
            raise ValueError(raw)
        return _EPOCH + timedelta(microseconds=micros), contact_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidInput.one("cursor", N_("This cursor is not one Siyu gave out.")) from None


def _since(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw) if len(raw) <= 40 else None
        # In UTC, as the database compares it: an offset can carry a date past year 9999 or before year 1.
        at = at.astimezone(UTC) if at is not None and at.tzinfo is not None else None
    except (ValueError, OverflowError):
        at = None
    if at is None:
        raise InvalidInput.one("updated_since", N_("Give a date and time with its offset, like "
                                                   "2026-12-24T20:00:00+08:00."))
    return at


async def _out(tenant_id: int, rows: list[dict[str, Any]]) -> list[ContactOut]:
    """Contacts as the API answers them, with their identities and tags (two queries for all of them)."""
    ids = [int(r["id"]) for r in rows]
    identities: dict[int, list[IdentityOut]] = defaultdict(list)
    tags: dict[int, list[TagRef]] = defaultdict(list)
    if ids:
        for i in await db.fetch(
                "SELECT contact, channel, external_id, unionid, first_seen_at, last_seen_at, erased_at FROM identity "
                "WHERE tenant = $1 AND contact = ANY($2::int[]) ORDER BY channel, id", tenant_id, ids):
            identities[int(i["contact"])].append(IdentityOut(
                i["channel"], i["external_id"], i["unionid"], iso(i["first_seen_at"]), iso(i["last_seen_at"]),
                i["erased_at"] is not None))
        for t in await db.fetch(
                "SELECT ct.contact, t.id, t.name FROM contact_tag ct JOIN tag t ON t.tenant = ct.tenant "
                "AND t.id = ct.tag WHERE ct.tenant = $1 AND ct.contact = ANY($2::int[]) ORDER BY lower(t.name)",
                tenant_id, ids):
            tags[int(t["contact"])].append(TagRef(int(t["id"]), t["name"]))
    return [ContactOut(
        id=int(c["id"]), display_name=c.get("display_name") or "", unionid=c.get("unionid"),
        phone=c.get("phone") or "", remark=c.get("remark") or "", first_seen_at=iso(c.get("first_seen_at")),
        last_interaction_at=iso(c.get("last_interaction_at")), merged_into=c.get("merged_into"),
        identities=identities[int(c["id"])], tags=tags[int(c["id"])], erased=c.get("erased_at") is not None,
        updated_at=iso(c.get("updated_at"))) for c in rows]


_LIST_COLUMNS = ("c.id, c.display_name, c.unionid, c.phone, c.remark, c.first_seen_at, c.last_interaction_at, "
                 "c.merged_into, c.erased_at, c.updated_at")


class ContactsApi(Controller):
    path = "/api/v1"
    guards = [api_key]
    tags = ["contacts"]
    security = BEARER

    @get("/contacts", responses=errors(404, e404="No such segment (with `segment`)"))
    async def list_contacts(
        self, request: Request[Any, Any, Any],
        identity: Annotated[str | None, _q("An openid, unionid or WeCom external_userid: the contacts holding it "
                                           "(one page; the other parameters do not apply)")] = None,
        cursor: Annotated[str | None, _q("`next_cursor` of the previous page")] = None,
        limit: Annotated[str | None, _limit_q(DEFAULT_LIMIT, MAX_LIMIT)] = None,
        updated_since: Annotated[str | None, _q(
            "Only contacts changed (profile, unionid, a merge into them or its undo, erasure; not their tags) at "
            "or after this time, RFC 3339 with an offset. A change is stamped when its transaction began: ask "
            "again from a minute before the newest `updated_at` you saw", format="date-time")] = None,
        tag: Annotated[str | None, _id_q("Only contacts carrying this tag (its id, see /api/v1/tags)")] = None,
        segment: Annotated[str | None, _id_q("Only the contacts this saved segment selects now (its id)")] = None,
    ) -> ContactPage:
        """The brand's live contacts, oldest change first (`updated_at`, then id), in keyset pages: pass
        `next_cursor` back as `cursor` until it is null. To keep a copy in sync, remember the last page's
        newest `updated_at` and ask again with `updated_since`. A contact merged into another leaves the
        list (`GET /api/v1/contacts/{id}` answers its `merged_into`) and the one it went into is listed again.
        With `identity`: the contacts holding that WeChat id instead."""
        tid = api_tenant_id(request)
        if identity is not None:
            ids = await find_by_identity(tid, identity)
            rows = [await contacts.get_contact(tid, i) for i in ids]
            return ContactPage(await _out(tid, rows), None)
        size = limit_of(limit, DEFAULT_LIMIT, MAX_LIMIT)
        args: list[Any] = [tid]
        clauses = ["c.tenant = $1", "c.merged_into IS NULL"]
        if updated_since:
            args.append(_since(updated_since))
            clauses.append(f"c.updated_at >= ${len(args)}")
        if cursor:
            args += list(_after(cursor))
            clauses.append(f"(c.updated_at, c.id) > (${len(args) - 1}, ${len(args)})")
        if tag:
            args.append(whole_number(tag, "tag"))
            clauses.append(f"EXISTS (SELECT 1 FROM contact_tag ct WHERE ct.tenant = c.tenant AND ct.contact = c.id "
                           f"AND ct.tag = ${len(args)})")
        if segment:
            chosen = await audiences.compiler().segment(tid, whole_number(segment, "segment"))
            if (condition := chosen.where(args, datetime.now(UTC))) is not None:
                clauses.append(condition)
        args.append(size + 1)
        rows = [dict(r) for r in await db.fetch(
            f"SELECT {_LIST_COLUMNS} FROM contact c WHERE {' AND '.join(clauses)} "
            f"ORDER BY c.updated_at, c.id LIMIT ${len(args)}", *args)]
        page = rows[:size]
        more = len(rows) > size
        return ContactPage(await _out(tid, page), _cursor(page[-1]["updated_at"], page[-1]["id"]) if more else None)

    @get("/contacts/{contact_id:str}", responses=errors(404))
    async def contact(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> ContactOut:
        """One contact with its identities per channel and its tags. A merged-away contact answers with
        `merged_into`."""
        tid = api_tenant_id(request)
        [out] = await _out(tid, [await contacts.get_contact(tid, _contact_id(contact_id))])
        return out

    @get("/contacts/{contact_id:str}/timeline", responses=errors(404))
    async def contact_timeline(
        self, request: Request[Any, Any, Any], contact_id: FromPath[str],
        cursor: Annotated[str | None, _q("`next_cursor` of the previous page")] = None,
        limit: Annotated[str | None, _limit_q(50, 200)] = None,
        channel: Annotated[list[str] | None, _choices_q("Only these channels (siyu: made inside Siyu); repeat to "
                                                        "give several", timeline.CHANNELS)] = None,
        kind: Annotated[list[str] | None, _choices_q("Only these kinds of event; repeat to give several",
                                                     timeline.KINDS)] = None,
    ) -> EventPage:
        """Newest first; pass `next_cursor` back as `?cursor=` for the next page. Filters: `channel`, `kind`."""
        tid = api_tenant_id(request)
        cid = _contact_id(contact_id)
        size = whole_number(limit or "50", "limit")
        page = await timeline.page(tid, cid, cursor=cursor or None, limit=size, channels=channel or None,
                                   kinds=kind or None)
        return EventPage([EventOut(e.id, e.contact_id, e.occurred_at.isoformat(), e.kind, e.channel, e.payload)
                          for e in page.events], page.next_cursor)

    @get("/contacts/{contact_id:str}/export", responses=errors(404))
    async def export(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> ContactExport:
        """Everything Siyu holds about this person (a data-subject access request), audited."""
        tid = api_tenant_id(request)
        doc = await privacy.export_contact(tid, _contact_id(contact_id), api_actor(request))
        return msgspec.convert(doc, ContactExport)

    @post("/contacts/{contact_id:str}/erase", status_code=200, dependencies={"_body": documents(EraseIn)},
          responses=errors(404))
    async def erase(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> EraseOut:
        """Erase this person's personal information (a data-subject erasure request), audited. Identifiers and
        the shape of the history stay; see the erased counts."""
        tid = api_tenant_id(request)
        cid = _contact_id(contact_id)
        body = await read(request, EraseIn)
        erased = await privacy.do_erase_contact(tid, cid, body.reason, api_actor(request))
        return EraseOut(cid, msgspec.convert(erased, Erased))

    @get("/tags")
    async def list_tags(self, request: Request[Any, Any, Any]) -> TagList:
        """The brand's tags (their ids filter `GET /api/v1/contacts?tag=`), with how many contacts carry each."""
        return TagList([TagOut(int(t["id"]), t["name"], int(t["contacts"]))
                        for t in await contacts.list_tags(api_tenant_id(request))])

    @post("/mp/login", status_code=200, dependencies={"_body": documents(MpLoginIn)},
          responses=errors(409, e409="This brand has no Mini Program linked in Siyu"))
    async def mp_login(self, request: Request[Any, Any, Any]) -> Response[MpLoginOut]:
        """The brand's Mini Program backend reports a login: `{"code": …}` (Siyu calls jscode2session) or
        `{"openid": …, "unionid": …}` when it already has them. Answers the contact id."""
        tid = api_tenant_id(request)
        body = await read(request, MpLoginIn)
        code = (body.code or "").strip()
        openid = (body.openid or "").strip()
        unionid = (body.unionid or "").strip() or None
        if code:
            if not CODE_RE.match(code):
                raise InvalidInput.one("code", N_("The login code from wx.login: 8 to 128 letters, digits, - or _."))
            openid, unionid = await _code_to_session(request, tid, code)
            source = f"mp_login:code:{code}"
        else:
            if not openid:
                raise InvalidInput.one("code", N_("Send either code, or openid (with unionid when you have it)."))
            if not OPENID_RE.match(openid):
                raise InvalidInput.one("openid", N_("An openid is 6 to 64 letters, digits, - or _."))
            if unionid is not None:
                check_identity(unionid)
            now = datetime.now(UTC)
            source = f"mp_login:{openid}:{now:%Y%m%d%H%M}"  # one login event per person per minute
        at = datetime.now(UTC)
        resolved = await contacts.resolve(tid, "mp", openid, unionid=unionid, at=at)
        await timeline.append(tid, resolved.contact_id, "mp_login", "mp", at, {}, source,
                              identity_id=resolved.identity_id)
        return Response(MpLoginOut(resolved.contact_id, openid, unionid, resolved.created))


async def _code_to_session(request: Request[Any, Any, Any], tenant_id: int, code: str) -> tuple[str, str | None]:
    runtime = request.app.state.wechat  # the process's WeChat runtime (composition root)
    try:
        client = await runtime.client(tenant_id, "mp")
    except NotFound:
        raise Conflict(N_("This brand has no Mini Program linked in Siyu.")) from None
    try:
        session = await client.code_to_session(code)
    except WeChatError as exc:
        if exc.errcode in (40029, 40163):
            raise InvalidInput.one("code", N_("WeChat did not accept this login code (invalid, expired or used).")) from None
        raise
    openid = str(session.get("openid") or "")
    if not openid:
        raise InvalidInput.one("code", N_("WeChat did not accept this login code (invalid, expired or used)."))
    return openid, (str(session["unionid"]) if session.get("unionid") else None)
