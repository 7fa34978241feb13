"""Jinja2 set-up and the one helper views use to answer: the full page, or the block htmx asked for."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment
from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import Request
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from siyu.core import i18n
from siyu.core.errors import FieldError, InvalidInput
from siyu.core.settings import FRONTEND_DIR, get_settings
from siyu.tenants.services import Actor
from siyu.tenants.staff import CurrentUser
from siyu.web.auth import client_ip, require_tenant_id


def _configure(engine: JinjaTemplateEngine) -> None:
    env: Environment = engine.engine
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["locale_names"] = i18n.LOCALE_NAMES
    env.globals["get_locale"] = i18n.get_locale
    env.filters["dt"] = _format_datetime
    env.filters["tojson_attr"] = lambda v: json.dumps(v, ensure_ascii=True)
    env.policies["ext.i18n.trimmed"] = True
    # Form macros as globals: htmx block rendering does not run a template's top-level imports.
    forms = env.get_template("components/forms.html").module
    env.globals.update(field=forms.field, select=forms.select, copy=forms.copy)  # type: ignore[attr-defined]


def _format_datetime(value: Any, with_time: bool = True, seconds: bool = False) -> str:
    if value is None:
        return "—"
    from zoneinfo import ZoneInfo

    local = value.astimezone(ZoneInfo("Asia/Shanghai"))
    return local.strftime(("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") if with_time else "%Y-%m-%d")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=FRONTEND_DIR / "templates", engine=JinjaTemplateEngine, engine_callback=_configure)


def current_user(request: Request[Any, Any, Any]) -> CurrentUser | None:
    user = request.scope.get("user")
    return user if isinstance(user, CurrentUser) else None


def tenant_scope(request: Request[Any, Any, Any]) -> tuple[int, Actor]:
    """The signed-in person's tenant (from the session, never the URL) and them as the actor of what they
    do, for pages guarded by `tenant_staff` or `tenant_admin`."""
    user = current_user(request)
    assert user is not None
    return require_tenant_id(user), user.actor(client_ip(request))


def errors_for(exc: InvalidInput | None) -> dict[str, str]:
    """Field name → translated message, for forms."""
    if exc is None:
        return {}
    return {e.field: i18n.translate_error(e) for e in exc.errors}


def render(
    request: Request[Any, Any, Any],
    template: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Template:
    ctx = {
        "request": request,
        "user": current_user(request),
        "locale": i18n.get_locale(),
        "public_base_url": get_settings().public_base_url,
        "errors": {},
        "form": {},
        **(context or {}),
    }
    if block and getattr(request, "htmx", None) and not request.htmx.boosted:  # type: ignore[attr-defined]
        return HTMXBlockTemplate(template_name=template, block_name=block, context=ctx, status_code=status_code,
                                 headers=headers)
    return Template(template_name=template, context=ctx, status_code=status_code, headers=headers)


def toast_header(message: str, level: str = "success") -> dict[str, str]:
    """HX-Trigger carrying a toast. ASCII-escaped JSON, or Chinese text breaks the header."""
    return {"HX-Trigger": json.dumps({"siyu:toast": {"message": message, "level": level}}, ensure_ascii=True)}


def field_error(field_name: str, message: str, **params: object) -> InvalidInput:
    return InvalidInput([FieldError(field_name, message, params)])
