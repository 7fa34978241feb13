"""Headers every answer carries: no framing (clickjacking), no content sniffing, no full URLs leaked to
other sites, and a Content-Security-Policy under which only Siyu's own files run as scripts or styles.

Siyu's pages need nothing else: scripts are files under /static (no inline scripts or handlers; htmx is told
not to inject its indicator styles and not to evaluate attribute code, see layouts/base.html), styles are
/static/app.css, charts are inline SVG with presentation attributes, and every request goes to this origin.
Added on every response of the app (pages, fragments, errors, static files, the API, WeChat's callbacks),
through `before_send`, so an answer made by an exception handler or for an unknown path has them too.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from siyu.web.media import MEDIA_CSP

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def add_security_headers(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            # A served picture or file sets a stricter policy of its own (web/media.py): it stays.
            if name == "Content-Security-Policy" and headers.get(name) == MEDIA_CSP:
                continue
            headers[name] = value
