"""JSON API for a tenant's own systems (Authorization: Bearer <API key>): the brand and its linked accounts,
as typed models (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromPath
from msgspec import Meta, Struct

from siyu.tenants import services as svc
from siyu.web.api import BEARER, IsoTime, errors
from siyu.web.auth import api_key, api_tenant_id


class ChannelOut(Struct):
    """A linked WeChat account as the API shows it: secrets only masked."""

    id: int
    kind: Annotated[str, Meta(description="oa (Official Account), mp (Mini Program) or wecom (WeCom)")]
    app_id: Annotated[str, Meta(description="The AppID (oa, mp) or CorpID (wecom)")]
    oa_kind: str | None
    message_mode: str
    push_format: str
    original_id: str | None
    agent_id: str | None
    kf_enabled: bool
    token_set: Annotated[bool, Meta(description="Whether the callback Token is set (it is never sent: a tenant "
                                                "admin can reveal it on the channels page)")]
    secret_masked: str
    aes_key_masked: str
    last_check_at: IsoTime | None
    last_check_ok: bool | None
    last_check_code: int | None
    updated_at: IsoTime


class TenantOut(Struct):
    id: int
    slug: str
    name: str
    timezone: str
    locale: str
    status: str
    open_platform_bound: bool
    channels: Annotated[dict[str, ChannelOut], Meta(description="The linked accounts by kind (oa, mp, wecom)")]


class TenantApi(Controller):
    path = "/api/v1"
    guards = [api_key]
    tags = ["tenant"]
    security = BEARER

    @get("/tenant", responses=errors())
    async def tenant(self, request: Request[Any, Any, Any]) -> TenantOut:
        """The tenant this key belongs to and its linked WeChat accounts (secrets masked; of the callback Token
        only whether it is set)."""
        tid = api_tenant_id(request)
        t = await svc.get_tenant(tid)
        channels = await svc.list_channels(tid)
        return TenantOut(
            id=t.id, slug=t.slug, name=t.name, timezone=t.timezone, locale=t.locale, status=t.status,
            open_platform_bound=t.open_platform_bound,
            channels={k: msgspec.convert(c.as_json(), ChannelOut) for k, c in channels.items()})

    @get("/channels/{kind:str}", responses=errors(404, e404="This kind of account is not linked"))
    async def channel(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> ChannelOut:
        """One linked account (`oa`, `mp` or `wecom`); 404 when not linked."""
        return msgspec.convert((await svc.get_channel(api_tenant_id(request), kind)).as_json(), ChannelOut)
