"""JSON API for a tenant's systems (Authorization: Bearer <API key>): contacts by identity, a contact with
its identities, its timeline, and the Mini Program login that links an MP user to their contact."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath

from siyu.contacts import privacy
from siyu.contacts import services as contacts
from siyu.contacts.lookup import check_identity, contact_json, find_by_identity
from siyu.core.errors import Conflict, InvalidInput, NotFound, WeChatError
from siyu.core.i18n import N_
from siyu.timeline import services as timeline
from siyu.web.api import api_actor, json_object, whole_number
from siyu.web.auth import api_key, api_tenant_id

OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def _contact_id(raw: str) -> int:
    return whole_number(raw, "id")


class ContactsApi(Controller):
    path = "/api/v1"
    guards = [api_key]
    tags = ["contacts"]

    @get("/contacts")
    async def by_identity(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Contacts holding an openid, unionid or WeCom external_userid (`?identity=`)."""
        tid = api_tenant_id(request)
        ids = await find_by_identity(tid, request.query_params.get("identity", ""))
        found = [contact_json(await contacts.get_contact(tid, i), await contacts.identities_of(tid, i)) for i in ids]
        return {"contacts": found}

    @get("/contacts/{contact_id:str}")
    async def contact(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> dict[str, Any]:
        """One contact with its identities per channel. A merged-away contact answers with `merged_into`."""
        tid = api_tenant_id(request)
        cid = _contact_id(contact_id)
        return contact_json(await contacts.get_contact(tid, cid), await contacts.identities_of(tid, cid))

    @get("/contacts/{contact_id:str}/timeline")
    async def contact_timeline(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> dict[str, Any]:
        """Newest first; pass `next_cursor` back as `?cursor=` for the next page. Filters: `channel`, `kind`."""
        tid = api_tenant_id(request)
        cid = _contact_id(contact_id)
        q = request.query_params
        limit = whole_number(q.get("limit", "50"), "limit")
        page = await timeline.page(tid, cid, cursor=q.get("cursor") or None, limit=limit,
                                   channels=q.getall("channel", []) or None, kinds=q.getall("kind", []) or None)
        return {"events": [e.as_json() for e in page.events], "next_cursor": page.next_cursor}

    @get("/contacts/{contact_id:str}/export")
    async def export(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> dict[str, Any]:
        """Everything Siyu holds about this person (a data-subject access request), audited."""
        tid = api_tenant_id(request)
        return await privacy.export_contact(tid, _contact_id(contact_id), api_actor(request))

    @post("/contacts/{contact_id:str}/erase", status_code=200)
    async def erase(self, request: Request[Any, Any, Any], contact_id: FromPath[str]) -> dict[str, Any]:
        """Erase this person's personal information (a data-subject erasure request): `{"reason": …}`,
        audited. Identifiers and the shape of the history stay; see the erased counts."""
        tid = api_tenant_id(request)
        cid = _contact_id(contact_id)
        body = await json_object(request)
        erased = await privacy.do_erase_contact(tid, cid, str(body.get("reason") or ""), api_actor(request))
        return {"contact_id": cid, "erased": erased}

    @post("/mp/login", status_code=200)
    async def mp_login(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The brand's Mini Program backend reports a login: `{"code": …}` (Siyu calls jscode2session) or
        `{"openid": …, "unionid": …}` when it already has them. Answers the contact id."""
        tid = api_tenant_id(request)
        body = await json_object(request)
        code = str(body.get("code") or "").strip()
        openid = str(body.get("openid") or "").strip()
        unionid = str(body.get("unionid") or "").strip() or None
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
        return Response({"contact_id": resolved.contact_id, "openid": openid, "unionid": unionid,
                         "created": resolved.created})


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
