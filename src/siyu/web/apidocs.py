"""The API's interactive reference, served from Siyu's own files.

`/schema` shows Swagger UI over `/schema/openapi.json`. Swagger UI comes from npm (`swagger-ui-dist`, pinned in
the Makefile, fetched into frontend/static/vendor by `make install`, like htmx), so nothing loads from a CDN,
and it runs under the same Content-Security-Policy as every page: its script and style are files, the page
has no inline script (`/static/api-docs.js` starts it, reading the document's address from a data attribute)
and no inline style (Swagger UI styles its elements through the DOM's style properties, which the policy
allows; it injects no style element; a browser test watches for refusals). Where npm was not available, the
page says so in the reader's language and links the document.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

from siyu.core import i18n
from siyu.core.i18n import N_
from siyu.core.settings import FRONTEND_DIR

VENDOR = "/static/vendor/swagger-ui"
VENDOR_DIR = FRONTEND_DIR / "static" / "vendor" / "swagger-ui"

NOT_INSTALLED = N_("The interactive API reference is not installed on this server: `make install` fetches it "
                   "with npm. The OpenAPI document describes every operation:")


class SwaggerViewer(OpenAPIRenderPlugin):
    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon='<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">',
                         style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        document = escape(self.get_openapi_json_route(request), quote=True)
        title = escape(str(openapi_schema.get("info", {}).get("title", "API")))
        lang = "zh-CN" if i18n.get_locale() == "zh_CN" else "en"
        if (VENDOR_DIR / "swagger-ui-bundle.js").is_file():
            head = f'<link rel="stylesheet" href="{VENDOR}/swagger-ui.css">'
            body = (f'<div id="swagger-ui" data-openapi-url="{document}"></div>'
                    f'<script src="{VENDOR}/swagger-ui-bundle.js"></script>'
                    '<script src="/static/api-docs.js"></script>')
        else:
            head = '<link rel="stylesheet" href="/static/app.css">'
            body = (f'<main class="container"><h1>{title}</h1><p>{escape(i18n.gettext(NOT_INSTALLED))} '
                    f'<a href="{document}">{document}</a></p></main>')
        return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">{self.favicon}{head}</head>'
                f'<body>{body}</body></html>').encode()
