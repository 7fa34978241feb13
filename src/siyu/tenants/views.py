"""Pages: the platform admin's tenant list, and a tenant admin's onboarding and settings.

Views validate and render; the `do_*` services act. Tenant pages take the tenant from the session,
never from the URL, and every object id in a URL is looked up within that tenant (404 otherwise).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template

from siyu.commerce.merchants import panel as pay_panel
from siyu.core import i18n
from siyu.core.clock import now as clock_now
from siyu.core.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from siyu.core.settings import get_settings
from siyu.tenants import audit, linking
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from siyu.tenants import validation as v
from siyu.tenants.validation import N_
from siyu.web.auth import (
    DEVICE_COOKIE,
    LoginThrottle,
    client_ip,
    platform_admin,
    require_tenant_id,
    tenant_admin,
)
from siyu.web.render import current_user, errors_for, render, toast_header
from siyu.wechat.connection import check_credentials

STEPS = ("oa", "mp", "wecom")


def _form_dict(form: Any) -> dict[str, Any]:
    data: dict[str, Any] = {k: form.get(k) for k in form}
    data["team_ids"] = form.getall("team_ids", [])
    return data


def _actor(request: Request[Any, Any, Any]) -> svc.Actor:
    user = current_user(request)
    assert user is not None
    return user.actor(client_ip(request))


def _tid(request: Request[Any, Any, Any]) -> int:
    user = current_user(request)
    assert user is not None
    return require_tenant_id(user)


def invite_link(token: str) -> str:
    return f"{get_settings().public_base_url}/invite/{token}"


# --- platform admin ----------------------------------------------------------------------------

class PlatformController(Controller):
    include_in_schema = False
    path = "/platform"
    guards = [platform_admin]

    async def _list_page(self, request: Request[Any, Any, Any], block: str | None = None, status_code: int = 200,
                         **ctx: Any) -> Template:
        tenants = await svc.list_tenants()
        with_admin = await staff_svc.tenant_ids_with_admins()
        for t in tenants:
            t["has_admin"] = t["id"] in with_admin
        return render(request, "platform/tenants.html", {"tenants": tenants, **ctx}, block=block,
                      status_code=status_code)

    @get("/tenants")
    async def tenants(self, request: Request[Any, Any, Any]) -> Template:
        return await self._list_page(request)

    @post("/tenants")
    async def create_tenant(self, request: Request[Any, Any, Any]) -> Template:
        data = _form_dict(await request.form())
        form = {k: (data.get(k) or "") for k in ("slug", "name", "timezone", "locale", "admin_email")}
        try:
            tenant, token = await staff_svc.do_onboard_tenant(_actor(request), data)
        except InvalidInput as exc:
            return await self._list_page(request, form=form, errors=errors_for(exc), block="create",
                                         status_code=400)
        created = {"slug": tenant.slug, "name": tenant.name, "admin_email": str(data["admin_email"]).strip(),
                   "invite_link": invite_link(token)}
        return await self._list_page(request, created=created, block="create")

    @get("/tenants/{tenant_id:int}")
    async def tenant_detail(self, request: Request[Any, Any, Any], tenant_id: FromPath[int]) -> Template:
        tenant = await svc.get_tenant(tenant_id)
        return render(request, "platform/tenant.html", {
            "tenant": tenant,
            "channels": await svc.list_channels(tenant_id),
            "staff": await staff_svc.list_staff(tenant_id),
            "invitations": await staff_svc.list_invitations(tenant_id),
        })

    @get("/tenants/{tenant_id:int}/suspend")
    async def confirm_suspend(self, request: Request[Any, Any, Any], tenant_id: FromPath[int]) -> Template:
        """What a suspension does, and the brand's slug to type before it happens."""
        return render(request, "platform/suspend.html", {"tenant": await svc.get_tenant(tenant_id)})

    @post("/tenants/{tenant_id:int}/status")
    async def set_status(self, request: Request[Any, Any, Any], tenant_id: FromPath[int]) -> Template | Redirect:
        form = await request.form()
        tenant = await svc.get_tenant(tenant_id)
        status = str(form.get("status", ""))
        typed = str(form.get("confirm", "")).strip()
        # Suspending signs out a whole brand: it happens only once its slug has been typed on the confirmation page.
        if status == "suspended" and tenant.status != "suspended" and typed != tenant.slug:
            error = InvalidInput.one("confirm", N_("Type the slug {slug} to confirm."), slug=tenant.slug)
            return render(request, "platform/suspend.html", {"tenant": tenant, "form": {"confirm": typed},
                                                             "errors": errors_for(error)}, status_code=400)
        await svc.do_set_tenant_status(_actor(request), tenant_id, status)
        return Redirect(f"/platform/tenants/{tenant_id}")

    @post("/tenants/{tenant_id:int}/invite-admin")
    async def invite_admin(self, request: Request[Any, Any, Any], tenant_id: FromPath[int]) -> Template:
        form = await request.form()
        tenant = await svc.get_tenant(tenant_id)
        ctx: dict[str, Any] = {"tenant": tenant, "channels": await svc.list_channels(tenant_id)}
        try:
            _, token = await staff_svc.do_invite(_actor(request), tenant_id, {
                "email": str(form.get("email", "")), "role": "tenant_admin"})
            ctx["invite_link"] = invite_link(token)
            status = 200
        except InvalidInput as exc:
            ctx["errors"] = errors_for(exc)
            ctx["form"] = {"email": form.get("email", "")}
            status = 400
        ctx["staff"] = await staff_svc.list_staff(tenant_id)
        ctx["invitations"] = await staff_svc.list_invitations(tenant_id)
        return render(request, "platform/tenant.html", ctx, block="people", status_code=status)


# --- tenant settings: linked accounts (the onboarding page) -----------------------------------

def _channel_context(kind: str, tenant_slug: str) -> dict[str, Any]:
    return {"callback_url": svc.callback_url(get_settings().public_base_url, tenant_slug, kind)}


def _reach_problems() -> list[dict[str, Any]]:
    """Why WeChat could not call the public base URL, as translated sentences."""
    return [{"text": i18n.gettext(p.message).format(**p.params)}
            for p in linking.reach_problems(get_settings().public_base_url)]


class ChannelsController(Controller):
    """Linking an account takes, in this order: saving its credentials, Token and EncodingAESKey here,
    pasting the same into the WeChat console and submitting, and WeChat's URL check, which the page shows
    as it arrives. Saved Tokens and keys are shown again only after the admin re-enters their password."""

    include_in_schema = False
    path = "/settings/channels"
    guards = [tenant_admin]

    async def _page(self, request: Request[Any, Any, Any], step: str | None = None, block: str | None = None,
                    status_code: int = 200, headers: dict[str, str] | None = None, **extra: Any) -> Template:
        user = current_user(request)
        assert user is not None and user.tenant_slug is not None
        tid = _tid(request)
        tenant = await svc.get_tenant(tid)
        channels = await svc.list_channels(tid)
        if step not in STEPS:
            step = next((k for k in STEPS if k not in channels), "oa")
        forms = extra.pop("forms", {})
        # Until the account is saved, the same suggestions on every visit (what the admin may already have
        # pasted somewhere stays right).
        suggested = None if step in channels else await linking.draft(request.app.state.redis, tid, step)
        ctx = {
            "tenant": tenant, "channels": channels, "step": step, "steps": STEPS,
            "callback_urls": {k: _channel_context(k, user.tenant_slug)["callback_url"] for k in STEPS},
            "suggested": suggested, "url_check": await linking.url_check(tid, step),
            "reach_problems": _reach_problems(), "revealed": extra.pop("revealed", None),
            "max_skew_minutes": max(1, get_settings().callback_max_skew // 60),
            "forms": forms, "pay": await pay_panel(tid, user.tenant_slug), **extra,
        }
        return render(request, "settings/channels.html", ctx, block=block, status_code=status_code, headers=headers)

    @get("/")
    async def page(self, request: Request[Any, Any, Any]) -> Template:
        return await self._page(request, request.query_params.get("step"), block="steps")

    @post("/{kind:str}/validate")
    async def validate_field(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        """As-you-type check of one field; answers the field's message fragment."""
        if kind not in STEPS:
            raise NotFound()
        field_name = request.query_params.get("field", "")
        rules = v.CHANNEL_FIELDS[kind]
        if field_name not in rules:
            raise InvalidInput.one("field", N_("Unknown field."))
        form = await request.form()
        value = str(form.get(field_name, "")).strip()
        channels = await svc.list_channels(_tid(request))
        kept_when_empty = ("app_secret", "secret", "aes_key", "token")
        err = None
        if not (value == "" and kind in channels and field_name in kept_when_empty):
            err = v.check_field(rules, field_name, value)
        return render(request, "settings/_field_message.html", {
            "field": field_name, "kind": kind, "message": i18n.translate_error(err) if err else "",
            "ok": err is None and value != "",
        })

    @post("/{kind:str}")
    async def save(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        if kind not in STEPS:
            raise NotFound()
        data = _form_dict(await request.form())
        tid = _tid(request)
        try:
            await svc.do_link_channel(_actor(request), tid, kind, data)
        except InvalidInput as exc:
            safe = {k: val for k, val in data.items() if k not in ("app_secret", "secret", "aes_key")}
            return await self._page(request, kind, block="steps", status_code=400,
                                    forms={kind: {"values": safe, "errors": errors_for(exc)}})
        await linking.forget_draft(request.app.state.redis, tid, kind)
        # What the admin just typed is shown back to paste into the console; what they left empty (kept) is not.
        revealed = {"token": str(data.get("token") or "").strip(), "aes_key": str(data.get("aes_key") or "").strip()}
        message = i18n.gettext(N_("Saved. Now paste the URL, Token and EncodingAESKey into the WeChat console and "
                                  "submit there: WeChat checks the URL at once."))
        return await self._page(request, kind, block="steps", headers=toast_header(message), saved=kind,
                                revealed=revealed)

    @get("/{kind:str}/url-check")
    async def url_check(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        """WeChat's last URL check of the account: the fragment the page polls while it is open."""
        if kind not in STEPS:
            raise NotFound()
        return render(request, "settings/_url_check.html", {
            "kind": kind, "url_check": await linking.url_check(_tid(request), kind),
            "max_skew_minutes": max(1, get_settings().callback_max_skew // 60),
        }, headers={"Cache-Control": "no-store"})

    @post("/{kind:str}/reveal")
    async def reveal(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        """The saved Token and EncodingAESKey, once the admin has entered their password again. A wrong
        password counts as a failed sign-in (the same limits), so this is no way around them."""
        user = current_user(request)
        assert user is not None
        tid = _tid(request)
        await svc.get_channel(tid, kind)  # NotFound when not linked
        password = str((await request.form()).get("password", ""))
        throttle = LoginThrottle(request.app.state.redis)
        ip, device = client_ip(request), request.cookies.get(DEVICE_COOKIE)
        no_store = {"Cache-Control": "no-store"}
        try:
            await throttle.admit(user.email, ip, device)
        except TooManyRequests as exc:
            minutes = max(1, exc.retry_after // 60)
            error = i18n.gettext(N_("Too many wrong passwords. Try again in {minutes} minutes.")).format(minutes=minutes)
            return await self._page(request, kind, block="console", status_code=429,
                                    headers={**no_store, "Retry-After": str(exc.retry_after)},
                                    reveal_errors={"password": error})
        try:
            matches = await staff_svc.password_matches(user.id, password)
        except Exception:
            await throttle.give_back(user.email, ip, device, succeeded=False)  # a fault, not a wrong password
            raise
        if not matches:
            return await self._page(request, kind, block="console", status_code=400, headers=no_store,
                                    reveal_errors={"password": i18n.gettext(N_("This is not your password."))})
        await throttle.give_back(user.email, ip, device, succeeded=True)
        token, aes_key = await svc.do_reveal_secrets(_actor(request), tid, kind)
        return await self._page(request, kind, block="console", headers=no_store,
                                revealed={"token": token, "aes_key": aes_key})

    @post("/{kind:str}/check")
    async def check(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        tid = _tid(request)
        creds = await svc.channel_credentials(tid, kind)  # NotFound when not linked
        outcome = await check_credentials(kind, creds.app_id, creds.secret)
        await svc.do_record_check(_actor(request), tid, kind, outcome.ok, outcome.errcode)
        # The step label at the top is refreshed out of band with the result.
        return render(request, "settings/_check_result.html", {
            "outcome": outcome, "kind": kind, "channel": await svc.get_channel(tid, kind)})

    @post("/{kind:str}/unlink")
    async def unlink(self, request: Request[Any, Any, Any], kind: FromPath[str]) -> Template:
        await svc.do_unlink_channel(_actor(request), _tid(request), kind)
        return await self._page(request, kind, block="steps",
                                headers=toast_header(i18n.gettext(N_("Account unlinked."))))


# --- tenant settings: general, staff, teams, API keys, audit -----------------------------------

class SettingsController(Controller):
    include_in_schema = False
    path = "/settings"
    guards = [tenant_admin]

    @get("/general")
    async def general(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "settings/general.html", {"tenant": await svc.get_tenant(_tid(request))})

    @post("/general")
    async def save_general(self, request: Request[Any, Any, Any]) -> Template:
        data = _form_dict(await request.form())
        tid = _tid(request)
        try:
            tenant = await svc.do_update_tenant(_actor(request), tid, data)
        except InvalidInput as exc:
            tenant = await svc.get_tenant(tid)
            return render(request, "settings/general.html", {"tenant": tenant, "form": data,
                                                             "errors": errors_for(exc)}, block="form", status_code=400)
        return render(request, "settings/general.html", {"tenant": tenant}, block="form",
                      headers=toast_header(i18n.gettext(N_("Saved."))))

    async def _staff_page(self, request: Request[Any, Any, Any], block: str | None = None, status_code: int = 200,
                          headers: dict[str, str] | None = None, **extra: Any) -> Template:
        tid = _tid(request)
        return render(request, "settings/staff.html", {
            "staff": await staff_svc.list_staff(tid),
            "teams": await staff_svc.list_teams(tid),
            "invitations": await staff_svc.list_invitations(tid),
            **extra,
        }, block=block, status_code=status_code, headers=headers)

    @get("/staff")
    async def staff(self, request: Request[Any, Any, Any]) -> Template:
        return await self._staff_page(request)

    @post("/staff/invite")
    async def invite(self, request: Request[Any, Any, Any]) -> Template:
        data = _form_dict(await request.form())
        try:
            _, token = await staff_svc.do_invite(_actor(request), _tid(request), data)
        except InvalidInput as exc:
            return await self._staff_page(request, block="people", status_code=400, form=data,
                                          errors=errors_for(exc))
        return await self._staff_page(request, block="people", invite_link=invite_link(token),
                                      invited_email=str(data.get("email", "")).strip().lower())

    @post("/invitations/{invitation_id:int}/revoke")
    async def revoke_invitation(self, request: Request[Any, Any, Any], invitation_id: FromPath[int]) -> Template:
        await staff_svc.do_revoke_invitation(_actor(request), _tid(request), invitation_id)
        return await self._staff_page(request, block="people",
                                      headers=toast_header(i18n.gettext(N_("Invitation revoked."))))

    @get("/staff/{staff_id:int}")
    async def staff_member(self, request: Request[Any, Any, Any], staff_id: FromPath[int]) -> Template:
        tid = _tid(request)
        member = await staff_svc.get_staff(tid, staff_id)
        return render(request, "settings/staff_member.html", {"member": member, "form": member,
                                                              "teams": await staff_svc.list_teams(tid)})

    @post("/staff/{staff_id:int}")
    async def update_staff_member(self, request: Request[Any, Any, Any], staff_id: FromPath[int]) -> Template:
        tid = _tid(request)
        data = _form_dict(await request.form())
        member = await staff_svc.get_staff(tid, staff_id)
        try:
            await staff_svc.do_update_staff(_actor(request), tid, staff_id, data)
        except InvalidInput as exc:
            form = {**data, "team_ids": [int(t) for t in data["team_ids"] if str(t).isdigit()]}
            return render(request, "settings/staff_member.html", {
                "member": member, "form": form, "errors": errors_for(exc), "teams": await staff_svc.list_teams(tid),
            }, block="form", status_code=400)
        member = await staff_svc.get_staff(tid, staff_id)
        return render(request, "settings/staff_member.html", {
            "member": member, "form": member, "teams": await staff_svc.list_teams(tid),
        }, block="form", headers=toast_header(i18n.gettext(N_("Saved."))))

    @post("/teams")
    async def create_team(self, request: Request[Any, Any, Any]) -> Template:
        form = await request.form()
        try:
            await staff_svc.do_create_team(_actor(request), _tid(request), str(form.get("name", "")))
        except InvalidInput as exc:
            return await self._staff_page(request, block="teams", status_code=400,
                                          team_form={"name": form.get("name", "")}, team_errors=errors_for(exc))
        return await self._staff_page(request, block="teams")

    @post("/teams/{team_id:int}/delete")
    async def delete_team(self, request: Request[Any, Any, Any], team_id: FromPath[int]) -> Template:
        await staff_svc.do_delete_team(_actor(request), _tid(request), team_id)
        return await self._staff_page(request, block="teams")

    async def _keys_page(self, request: Request[Any, Any, Any], block: str | None = None, status_code: int = 200,
                         **extra: Any) -> Template:
        return render(request, "settings/api_keys.html", {"keys": await svc.list_api_keys(_tid(request)), **extra},
                      block=block, status_code=status_code)

    @get("/api-keys")
    async def api_keys(self, request: Request[Any, Any, Any]) -> Template:
        return await self._keys_page(request)

    @post("/api-keys")
    async def create_api_key(self, request: Request[Any, Any, Any]) -> Template:
        form = await request.form()
        try:
            _, key = await svc.do_create_api_key(_actor(request), _tid(request), str(form.get("name", "")))
        except InvalidInput as exc:
            return await self._keys_page(request, block="keys", status_code=400, errors=errors_for(exc))
        return await self._keys_page(request, block="keys", new_key=key)

    @post("/api-keys/{key_id:int}/revoke")
    async def revoke_api_key(self, request: Request[Any, Any, Any], key_id: FromPath[int]) -> Template:
        # Revoking twice changes nothing; show the list as it is.
        with contextlib.suppress(Conflict):
            await svc.do_revoke_api_key(_actor(request), _tid(request), key_id)
        return await self._keys_page(request, block="keys")

    @get("/audit")
    async def audit(self, request: Request[Any, Any, Any]) -> Template:
        tid = _tid(request)
        filters = audit.parse_filters(request.query_params)
        before = audit.parse_cursor(request.query_params.get("before"))
        tenant = await svc.get_tenant(tid)
        # One more than a page tells whether anything older is left to load.
        rows = await audit.list_entries(tid, tenant.timezone, filters, before, limit=audit.PAGE + 1)
        page = rows[:audit.PAGE]
        names = await audit.names_for(tid, page)
        query = filters.query()
        more = None
        if len(rows) > audit.PAGE:
            more = "/settings/audit?" + urlencode({**query, "before": audit.cursor_of(page[-1])})
        entries = [{"id": e["id"], "when": audit.local_time(e["created_at"], tenant.timezone), "ip": e["ip"],
                    "code": e["action"], "said": audit.describe(e, names)} for e in page]
        # A "load more" asks for rows only; a change of filters (htmx) for the table; a visit for the page.
        block = "rows" if before else ("results" if request.headers.get("hx-request") else None)
        headers = {"Vary": "HX-Request"}
        if block == "results":  # the address bar shows the filters, without the empty ones
            headers["HX-Push-Url"] = "/settings/audit" + ("?" + urlencode(query) if query else "")
        return render(request, "settings/audit.html", {
            "entries": entries, "more": more, "filters": filters, "timezone": tenant.timezone,
            "people": await audit.people(tid), "groups": audit.action_groups(),
            "export": "/settings/audit/export.csv" + ("?" + urlencode(query) if query else ""),
        }, block=block, headers=headers)

    @get("/audit/export.csv")
    async def audit_csv(self, request: Request[Any, Any, Any]) -> Stream:
        """The whole log under the same filters, as CSV in the reader's language, read page by page as it
        is sent, so a long log never sits in memory."""
        tid = _tid(request)
        filters = audit.parse_filters(request.query_params)
        tenant = await svc.get_tenant(tid)
        stamp = clock_now().astimezone(ZoneInfo(tenant.timezone)).strftime("%Y%m%d-%H%M")
        return Stream(audit.csv_lines(tid, tenant.timezone, filters, i18n.get_locale()),
                      media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="audit-log-{tenant.slug}-{stamp}.csv"',
                               "Cache-Control": "no-store"})


# --- accepting an invitation (public, the token is the credential) ------------------------------

class InvitationController(Controller):
    include_in_schema = False
    path = "/invite"

    @get("/{token:str}")
    async def page(self, request: Request[Any, Any, Any], token: FromPath[str]) -> Template:
        inv = await staff_svc.get_open_invitation(token)
        return render(request, "auth/invite.html", {"invitation": inv, "token": token})

    @post("/{token:str}")
    async def accept(self, request: Request[Any, Any, Any], token: FromPath[str]) -> Template | Redirect:
        inv = await staff_svc.get_open_invitation(token)
        form = await request.form()
        try:
            await staff_svc.do_accept_invitation(token, str(form.get("name", "")), str(form.get("password", "")),
                                                 str(form.get("confirm_password", "")))
        except InvalidInput as exc:
            return render(request, "auth/invite.html", {"invitation": inv, "token": token,
                                                        "form": {"name": form.get("name", "")},
                                                        "errors": errors_for(exc)}, status_code=400)
        return Redirect("/login?joined=1")
