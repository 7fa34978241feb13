"""JSON API for a tenant's own systems (Authorization: Bearer <API key>)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath

from siyu.tenants import services as svc
from siyu.web.auth import api_key, api_tenant_id


class TenantApi(Controller):
    path = "/api/v1"
    guards = [api_key]
    tags = ["tenant"]

    @get("/tenant")
    async def tenant(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The tenant this key belongs to and its linked WeChat accounts (secrets masked; of the callback Token
        only whether it is set)."""
        tid = api_tenant_id(request)
        t = await svc.get_tenant(tid)
        channels = await svc.list_channels(tid)
        return {
            "id": t.id, "slug": t.slug, "name": t.name, "timezone": t.timezone, "locale": t.locale,
            "status": t.status, "open_platform_bound": t.open_platform_bound,
            "channels": {k: c.as_json() for k, c in channels.items()},
        }

    @get("/channels/{kind:str}")
    async def channel(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> dict[str, Any]:
        """One linked account (`oa`, `mp` or `wecom`); 404 when not linked."""
        return (await svc.get_channel(api_tenant_id(request), kind)).as_json()
