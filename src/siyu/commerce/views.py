"""Commerce pages for the brand's admins: the WeChat Pay merchant (also a section of the channels page), the
purchases list with its filters and CSV export, and the products with their replenishment intervals; and the
purchase summary the contact page includes.

Views validate and render; the `do_*` services act. Every form keeps `action` and `method`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Template

from siyu.commerce import merchants
from siyu.core import i18n
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.web.auth import tenant_admin
from siyu.web.render import current_user, errors_for, render, tenant_scope, toast_header

PAY_FIELDS = ("mch_id", "app_id", "api_v3_key", "public_key", "public_key_id", "platform_cert")


def _slug(request: Request[Any, Any, Any]) -> str:
    user = current_user(request)
    assert user is not None and user.tenant_slug is not None
    return user.tenant_slug


class PaySettingsController(Controller):
    """The tenant's WeChat Pay merchant: `/settings/pay` (the same section as on the channels page)."""

    path = "/settings/pay"
    guards = [tenant_admin]
    include_in_schema = False

    async def _section(self, request: Request[Any, Any, Any], status_code: int = 200,
                       headers: dict[str, str] | None = None, **form: Any) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "commerce/pay.html", {"pay": await merchants.panel(tid, _slug(request), **form)},
                      block="pay", status_code=status_code, headers=headers)

    @get("/")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._section(request)

    @post("/")
    async def save(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        data = {k: str(form.get(k) or "") for k in PAY_FIELDS}
        try:
            await merchants.do_link_pay(actor, tid, data)
        except InvalidInput as exc:
            return await self._section(request, status_code=400, values=data, errors=errors_for(exc))
        return await self._section(request, headers=toast_header(i18n.gettext(N_(
            "Saved. Set the notify_url shown here on your orders; Siyu checks each notification with these keys."))))

    @post("/keys/remove")
    async def remove_key(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        try:
            await merchants.do_remove_key(actor, tid, str(form.get("key_id") or "")[:80])
        except InvalidInput as exc:
            return await self._section(request, status_code=400, errors=errors_for(exc))
        return await self._section(request, headers=toast_header(i18n.gettext(N_("Key removed."))))

    @post("/unlink")
    async def unlink(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        await merchants.do_unlink_pay(actor, tid)
        return await self._section(request, headers=toast_header(i18n.gettext(N_("WeChat Pay merchant unlinked."))))
