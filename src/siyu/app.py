"""The web app's composition root: `create_app()` wires every domain's controllers, auth, CSRF,
templates, error mapping and the lifespan (database pool, Redis)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import siyu
from siyu.commerce import merchants as pay_merchants
from siyu.commerce import notify as pay_notify
from siyu.commerce import purchases as commerce_purchases
from siyu.commerce.api import PurchasesApi
from siyu.commerce.views import (
    PaySettingsController,
    ProductsController,
    PurchaseImportController,
    PurchasesController,
)
from siyu.contacts import audience as contact_audience
from siyu.contacts.api import ContactsApi
from siyu.contacts.scope import Scope as ContactScope
from siyu.contacts.views import ContactsController
from siyu.core import db, effects, i18n
from siyu.core import redis as redis_mod
from siyu.core.crypto import derive_key
from siyu.core.errors import Conflict, InvalidInput, SiyuError, TooManyRequests
from siyu.core.i18n import N_
from siyu.core.logs import configure_logging
from siyu.core.settings import FRONTEND_DIR, get_settings
from siyu.engagement.api import BroadcastsApi, JourneysApi
from siyu.engagement.views import EngagementController
from siyu.inbox.api import InboxApi
from siyu.inbox.live import Relay as InboxRelay
from siyu.inbox.manager_views import InboxManagerController
from siyu.inbox.scope import contact_scope
from siyu.inbox.settings_views import InboxSettingsController
from siyu.inbox.views import InboxController
from siyu.segments import audience as segment_audience
from siyu.segments.api import SegmentsApi
from siyu.segments.views import SegmentsController
from siyu.tenants.api import TenantApi
from siyu.tenants.views import (
    ChannelsController,
    InvitationController,
    PlatformController,
    SettingsController,
)
from siyu.web.apidocs import SwaggerViewer
from siyu.web.auth import LOCALE_COOKIE, AccessWatch, AuthMiddleware, NotAuthenticated, require_tenant_id
from siyu.web.headers import SECURITY_HEADERS, add_security_headers
from siyu.web.inputs import InputGuard
from siyu.web.render import current_user, render, template_config
from siyu.web.views import AuthController, HealthController
from siyu.wechat import services as wechat_services
from siyu.wechat.gateway import WeChatCallbacks, bare_endpoint, enqueue_batch
from siyu.wechat.ingest import Ingestor
from siyu.wechat.outbound import WeChatRuntime
from siyu.wechat.views import AutoRepliesController

log = logging.getLogger("siyu")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    await db.start_pool()
    app.state.redis = redis_mod.connect()
    app.state.arq = await redis_mod.arq_pool()
    effects.install(app.state.arq)
    app.state.wechat = WeChatRuntime(app.state.redis)
    app.state.inbox_relay = InboxRelay(app.state.redis)  # live inbox: Redis pub/sub → this process's SSE clients
    await app.state.inbox_relay.start()
    app.state.access_watch = AccessWatch(app.state.redis)  # ends live streams whose session ended
    await app.state.access_watch.start()
    app.state.ingestor = Ingestor(lambda ids: enqueue_batch(app.state.arq, ids))
    def on_change(channel: str, payload: str) -> None:
        wechat_services.on_change(channel, payload)
        pay_merchants.on_change(channel, payload)

    listener = db.Listener([db.ACCOUNTS_CHANGED, db.AUTO_REPLIES_CHANGED], on_change)
    await listener.start()
    try:
        yield
    finally:
        await listener.stop()
        await app.state.access_watch.stop()
        await app.state.inbox_relay.stop()
        await app.state.ingestor.stop()
        await pay_notify.stop()
        await effects.flush()
        effects.uninstall(app.state.arq)
        await app.state.arq.aclose()
        await app.state.wechat.close()
        await app.state.redis.aclose()
        await db.close_pool()


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "") and \
        "text/html" not in request.headers.get("accept", "")


def _error_response(request: Request[Any, Any, Any], status: int, message: str,
                    fields: dict[str, str] | None = None) -> Response[Any]:
    if _wants_json(request):
        body: dict[str, Any] = {"error": message, "status": status}
        if fields:
            body["fields"] = fields
        return Response(body, status_code=status)
    ctx = {"status": status, "message": message, "fields": fields or {}}
    if getattr(request, "htmx", None):
        # Fragments land in the page's error area, wherever the request meant to swap.
        return render(request, "errors/error.html", ctx, block="alert", status_code=status,
                      headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return render(request, "errors/error.html", ctx, status_code=status)


def _siyu_error(request: Request[Any, Any, Any], exc: SiyuError) -> Response[Any]:
    if isinstance(exc, InvalidInput):
        fields = {e.field: i18n.translate_error(e) for e in exc.errors}
        return _error_response(request, 400, i18n.gettext("Some fields need attention."), fields)
    if isinstance(exc, TooManyRequests):
        resp = _error_response(request, 429, i18n.gettext(exc.message))
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if exc.status_code >= 500:
        log.error("unhandled %s: %s", type(exc).__name__, exc.message)
    message = exc.message or {404: N_("Not found"), 403: N_("Forbidden"), 409: N_("Conflict")}.get(exc.status_code, "Error")
    if isinstance(exc, Conflict) and exc.field:  # a 409 that names the field in conflict
        return _error_response(request, 409, i18n.gettext(message), {exc.field: i18n.gettext(message)})
    return _error_response(request, exc.status_code, i18n.gettext(message))


def _not_authenticated(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if request.url.path.startswith("/api/"):
        return Response({"error": "missing or invalid API key (Authorization: Bearer <key>)", "status": 401},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
    target = "/login?next=" + quote(request.url.path)
    if getattr(request, "htmx", None):
        return Response("", status_code=200, headers={"HX-Redirect": target})
    return Redirect(target)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status == 403 and "CSRF" in str(exc.detail):
        message = i18n.gettext("Your form expired or came from another site (CSRF check failed). Reload the page and try again.")
    elif status == 404:
        message = i18n.gettext("Not found")
    else:
        message = str(exc.detail)
    return _error_response(request, status, message)


def _redis_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Redis is down or hangs (its client gives up within SIYU_REDIS_TIMEOUT): a clear 503, not a 500, and
    nothing else is held. WeChat's callbacks do not need Redis and keep being stored."""
    log.warning("Redis did not answer on %s %s: %r", request.method, request.url.path, exc)
    resp = _error_response(request, 503, i18n.gettext(REDIS_UNAVAILABLE))
    resp.headers["Retry-After"] = "30"
    return resp


REDIS_UNAVAILABLE = N_("Siyu cannot reach Redis (sign-in, queues, live updates) right now. Try again in a minute.")


def _server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(request, HTTP_500_INTERNAL_SERVER_ERROR, i18n.gettext("Something went wrong on our side."))


async def _contact_scope(request: Request[Any, Any, Any]) -> ContactScope:
    """Who the signed-in person may see on the pages that show people (contacts, segment members): the
    inbox's rule, injected here so that the contacts and segments never name the inbox's tables."""
    user = current_user(request)
    assert user is not None  # the pages that ask for it are guarded by tenant_staff
    return await contact_scope(require_tenant_id(user), user.id, user.role)


def _choose_locale(request: Request[Any, Any, Any]) -> None:
    path = request.scope["path"]
    if path.startswith(("/api/", "/wechat")):
        i18n.set_locale("en")  # machines read these answers: their messages stay in one language
        return
    user = current_user(request)
    s = get_settings()
    locale = (user.locale if user else None) or request.cookies.get(LOCALE_COOKIE)
    if locale not in i18n.LOCALES:
        locale = i18n.negotiate(request.headers.get("accept-language"), s.default_locale)
    i18n.set_locale(locale)


async def _set_locale(request: Request[Any, Any, Any]) -> None:
    _choose_locale(request)


def _in_locale(handler: Callable[[Request[Any, Any, Any], Any], Response[Any]]) -> Callable[..., Response[Any]]:
    """An error handler that answers in the asker's language also when a middleware refused the request
    (the input check, CSRF) before `before_request` chose it."""
    def answer(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        _choose_locale(request)
        return handler(request, exc)
    return answer


class Siyu(Litestar):
    """The app, with WeChat Pay's notifications answered before Litestar's router and middlewares: the answer
    WeChat Pay waits for is on the path of every payment (siyu.commerce.notify.PayEndpoint)."""

    _pay = pay_notify.PayEndpoint(SECURITY_HEADERS)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (match := pay_notify.PATH.fullmatch(scope["path"])) is not None:
            await self._pay(scope, receive, send, match.group(1))
            return
        await super().__call__(scope, receive, send)


def create_app() -> Litestar:
    s = get_settings()
    configure_logging(s.log_level)
    commerce_purchases.install()  # merges carry purchases in this process
    contact_audience.install(segment_audience.COMPILER, contact_scope)  # the contact list filters like segments
    csrf = CSRFConfig(
        secret=derive_key(s.secret_key, "csrf").hex(),
        cookie_name="siyu_csrf",
        cookie_secure=s.cookie_secure,
        cookie_samesite="lax",
        # Callbacks are signed by WeChat; the JSON API authenticates with a Bearer key, not a cookie.
        exclude=["^/api/", "^/wechat", "^/healthz$", "^/readyz$"],
    )
    return Siyu(
        route_handlers=[
            AuthController, HealthController, PlatformController, ChannelsController, SettingsController,
            InvitationController, TenantApi, ContactsApi, PurchasesApi, PaySettingsController,
            PurchasesController, PurchaseImportController, ProductsController, WeChatCallbacks, AutoRepliesController, ContactsController,
            SegmentsController, SegmentsApi, EngagementController, JourneysApi, BroadcastsApi,
            InboxManagerController, InboxApi, InboxController, InboxSettingsController,
            *([bare_endpoint] if s.bench_bare_endpoint else []),
            create_static_files_router(path="/static", directories=[FRONTEND_DIR / "static"], include_in_schema=False),
        ],
        lifespan=[lifespan],
        dependencies={"contact_scope": Provide(_contact_scope)},
        # The session first (errors answer in the person's language), then the input check, which runs before
        # the CSRF check reads the form.
        middleware=[DefineMiddleware(AuthMiddleware, exclude=["^/static/", "^/healthz$", "^/readyz$", "^/wechat"]),
                    InputGuard()],
        csrf_config=csrf,
        plugins=[HTMXPlugin()],
        template_config=template_config(),
        before_request=_set_locale,
        before_send=[add_security_headers],
        exception_handlers={
            NotAuthenticated: _not_authenticated,
            NotAuthorizedException: _not_authenticated,
            PermissionDeniedException: _in_locale(_http_error),
            SiyuError: _in_locale(_siyu_error),
            HTTPException: _in_locale(_http_error),
            RedisConnectionError: _in_locale(_redis_unavailable),
            RedisTimeoutError: _in_locale(_redis_unavailable),
            Exception: _in_locale(_server_error),
        },
        # The document, and at /schema Swagger UI from Siyu's own static files (see siyu.web.apidocs): Litestar's
        # own viewers load from CDNs with inline scripts, which the Content-Security-Policy refuses.
        openapi_config=OpenAPIConfig(
            title="Siyu API", version=siyu.__version__, path="/schema",
            description="The JSON API for a brand's own systems. Every route takes `Authorization: Bearer <API key>` "
                        "(Settings → API keys); a key acts for its whole brand. Mistakes answer 400 with `fields` "
                        "naming each wrong parameter or field; another brand's object answers 404, like a missing one.",
            render_plugins=[SwaggerViewer(path="/"), JsonRenderPlugin(path="/openapi.json")],
            components=Components(security_schemes={"apiKey": SecurityScheme(
                type="http", scheme="bearer", bearer_format="siyu_<prefix>_<secret>",
                description="An API key from Settings → API keys")})),
        debug=False,
    )
