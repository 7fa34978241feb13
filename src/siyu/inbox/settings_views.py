"""The tenant admin's inbox settings: handoff triggers, the SLA and routing preferences, what each team
serves and who manages it, and each rep's WeCom UserID (which makes them the owner of the customers they
added)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Template

from siyu.contacts.services import list_tags
from siyu.core import db, i18n
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox import actions, boxes, config
from siyu.web.auth import tenant_admin
from siyu.web.render import errors_for, render, tenant_scope, toast_header


class InboxSettingsController(Controller):
    path = "/settings/inbox"
    guards = [tenant_admin]
    include_in_schema = False

    async def _page(self, request: Request[Any, Any, Any], block: str | None = None, status_code: int = 200,
                    headers: dict[str, str] | None = None, **extra: Any) -> Template:
        tid, _ = tenant_scope(request)
        teams = [dict(r) for r in await db.fetch("SELECT id, name FROM team WHERE tenant = $1 ORDER BY lower(name)",
                                                 tid)]
        routes = {r.team_id: r for r in await config.team_routes(tid)}
        return render(request, "inbox/settings.html", {
            "settings": (await config.get_settings(tid)).as_form(), "teams": teams, "routes": routes,
            "tags": await list_tags(tid), "people": await boxes.reps(tid, any_role=True), "channels": config.CHANNELS,
            "languages": config.LANGUAGES, **extra,
        }, block=block, status_code=status_code, headers=headers)

    @get("/")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._page(request)

    @post("/")
    async def save(self, request: Request[Any, Any, Any]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        data = {k: form.get(k) for k in form}
        data["vip_tag_ids"] = form.getall("vip_tag_ids") if "vip_tag_ids" in form else []
        try:
            await config.do_update_settings(tid, data, actor)
        except InvalidInput as exc:
            return await self._page(request, block="handoff", status_code=400, form=data, errors=errors_for(exc))
        return await self._page(request, block="handoff", headers=toast_header(i18n.gettext(N_("Saved."))))

    @post("/teams/{team_id:int}")
    async def save_team(self, request: Request[Any, Any, Any], team_id: FromPath[int]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()

        def ints(name: str) -> list[int]:
            return [int(v) for v in form.getall(name) if str(v).isdigit()] if name in form else []

        try:
            await config.do_set_team_route(tid, team_id, form.getall("channels") if "channels" in form else [],
                                           form.getall("languages") if "languages" in form else [],
                                           ints("tag_ids"), ints("managers"), actor)
        except InvalidInput as exc:
            return await self._page(request, block="teams", status_code=400, team_errors={team_id: errors_for(exc)})
        return await self._page(request, block="teams", headers=toast_header(i18n.gettext(N_("Saved."))))

    @post("/people/{staff_id:int}")
    async def save_person(self, request: Request[Any, Any, Any], staff_id: FromPath[int]) -> Template:
        tid, actor = tenant_scope(request)
        form = await request.form()
        if not any(p["id"] == staff_id for p in await boxes.reps(tid, any_role=True)):
            raise NotFound()
        userid = str(form.get("wecom_userid") or "").strip()
        try:
            await actions.do_set_presence(tid, staff_id, await actions.presence_of(tid, staff_id), actor,
                                          wecom_userid=userid)
        except InvalidInput as exc:
            return await self._page(request, block="people", status_code=400, person_errors={staff_id: errors_for(exc)})
        return await self._page(request, block="people", headers=toast_header(i18n.gettext(N_("Saved."))))
