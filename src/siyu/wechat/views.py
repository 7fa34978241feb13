"""Pages of the WeChat domain for tenant admins: the Official Account's auto-replies, and the recent
callbacks (so an admin onboarding an account sees WeChat's traffic arrive)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Template

from siyu.core import i18n
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import list_channels
from siyu.web.auth import tenant_admin
from siyu.web.render import errors_for, render, tenant_scope, toast_header
from siyu.wechat import services as svc


class AutoRepliesController(Controller):
    path = "/settings"
    guards = [tenant_admin]
    include_in_schema = False

    async def _page(self, request: Request[Any, Any, Any], block: str | None = None, status_code: int = 200,
                    headers: dict[str, str] | None = None, **extra: Any) -> Template:
        tid, _ = tenant_scope(request)
        rules = await svc.list_rules(tid)
        grouped = {t: [r for r in rules if r["trigger"] == t] for t in svc.RULE_TRIGGERS}
        return render(request, "wechat/auto_replies.html", {
            "rules": grouped, "has_channel": bool(await list_channels(tid)), **extra,
        }, block=block, status_code=status_code, headers=headers)

    @get("/auto-replies")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._page(request)

    @post("/auto-replies")
    async def create(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        data = {k: form.get(k) for k in form}
        try:
            await svc.do_create_rule(actor, tid, data)
        except InvalidInput as exc:
            return await self._page(request, block="rules", status_code=400, form=data, errors=errors_for(exc))
        return await self._page(request, block="rules", headers=toast_header(i18n.gettext(N_("Saved."))))

    @get("/auto-replies/{rule_id:int}")
    async def edit(self, request: Request[Any, Any, Any], rule_id: FromPath[int]) -> Template:
        """The page with this rule in the form, to change it (htmx: the rules and the form only)."""
        tid, _ = tenant_scope(request)
        rule = await svc.get_rule(tid, rule_id)
        return await self._page(request, block="rules", editing=rule, form=rule)

    @post("/auto-replies/{rule_id:int}")
    async def update(self, request: Request[Any, Any, Any], rule_id: FromPath[int]) -> Template:
        tid, actor = tenant_scope(request)
        rule = await svc.get_rule(tid, rule_id)  # another tenant's rule: 404 before the input is judged
        form = await request.form()
        data = {k: form.get(k) for k in form}
        try:
            await svc.do_update_rule(actor, tid, rule_id, data)
        except InvalidInput as exc:
            return await self._page(request, block="rules", status_code=400, editing=rule, form=data,
                                    errors=errors_for(exc))
        return await self._page(request, block="rules", headers={
            **toast_header(i18n.gettext(N_("Saved."))), "HX-Push-Url": "/settings/auto-replies"})

    @post("/auto-replies/{rule_id:int}/toggle")
    async def toggle(self, request: Request[Any, Any, Any], rule_id: FromPath[int]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        await svc.do_set_rule_enabled(actor, tid, rule_id, form.get("enabled") == "1")
        return await self._page(request, block="rules")

    @post("/auto-replies/{rule_id:int}/delete")
    async def delete(self, request: Request[Any, Any, Any], rule_id: FromPath[int]) -> Template:
        tid, actor = tenant_scope(request)
        await svc.do_delete_rule(actor, tid, rule_id)
        return await self._page(request, block="rules")

    @post("/auto-replies/try")
    async def try_text(self, request: Request[Any, Any, Any]) -> Template:
        """What would the Official Account answer to this message?"""
        tid, _ = tenant_scope(request)
        form = await request.form()
        text = str(form.get("text", ""))
        matches = await svc.match_keyword(tid, text)
        return render(request, "wechat/_try_result.html", {"text": text, "match": matches[0] if matches else None})

    @get("/wechat-events")
    async def events(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "wechat/events.html", {"events": await svc.list_recent_events(tid)}, block="rows")
