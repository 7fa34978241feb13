"""Text PostgreSQL cannot store never reaches a view: one check at the edge for every route.

PostgreSQL's `text` holds no NUL character, and `jsonb` refuses `\\u0000`; a lone UTF-16 surrogate
(`"\\ud800"` in JSON) cannot even be encoded to send. Any of them in a search, a note, a tag, a segment
name or an API field used to surface as a database error (a 500). This middleware reads what Litestar
decodes for the route (path parameters, the query, an urlencoded or multipart form, a JSON body) before
the CSRF check, the guards or the view see it, and answers 400 naming the first field that holds such a
character. Litestar caches what it decoded on the connection, so the view reads the same data again
without re-parsing.

WeChat's callbacks are left alone: their gateway verifies the signature before it parses anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType, ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MESSAGE = N_("This field contains a character that cannot be stored (a NUL byte or an unpaired surrogate). "
             "Remove it and try again.")
NOT_UTF8 = N_("Send the form as UTF-8 text.")


def _shown(name: str) -> str:
    """A field's name as the answer can carry it (the name itself may hold the bad character)."""
    return UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)[:200] or "?"


def _bad_names(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    return [_shown(name) for name, value in pairs
            if UNSTORABLE.search(name) or (isinstance(value, str) and UNSTORABLE.search(value))]


def _json_strings(value: Any) -> Iterator[tuple[str, Any]]:
    """(path, key or string) for every string in a decoded JSON document, depth-first without recursion
    (a deeply nested body must not exhaust the stack), in document order."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            children = []
            for key, child in node.items():
                key = str(key)
                child_path = f"{path}.{key}" if path else key
                yield child_path, key
                children.append((child_path, child))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(node)]))
        elif isinstance(node, str):
            yield path or "body", node


def _bad_paths_in_json(document: Any) -> list[str]:
    return [_shown(path) for path, text in _json_strings(document) if UNSTORABLE.search(text)]


async def _json_document(request: Request[Any, Any, Any]) -> Any:
    """The JSON body as the view will read it; where Litestar's strict decoder refuses it (a lone surrogate
    is one reason), the standard library's reading, so the field can still be named. None when it is no
    JSON at all: the view answers that itself."""
    try:
        return await request.json()
    except Exception:  # not JSON for Litestar: the view's own 400 ("body") applies
        pass
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        return None


def _wants_json_body(request: Request[Any, Any, Any]) -> bool:
    content_type = request.content_type[0]
    return content_type == "application/json" or content_type.endswith("+json") or \
        request.scope["path"].startswith("/api/")


async def unstorable_fields(request: Request[Any, Any, Any]) -> list[str]:
    """The names of this request's inputs that hold a character that cannot be stored (none: [])."""
    bad = _bad_names((str(k), str(v)) for k, v in request.scope.get("path_params", {}).items())
    if not bad and UNSTORABLE.search(request.scope["path"]):
        bad.append("path")
    bad += _bad_names(request.query_params.multi_items())
    if request.method in BODY_METHODS:
        content_type = request.content_type[0]
        if content_type in (RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART):
            try:
                form = await request.form()
            except (UnicodeDecodeError, LookupError):  # a multipart part in another (or an unknown) charset
                raise InvalidInput.one("body", NOT_UTF8) from None
            bad += _bad_names((k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile))
        elif _wants_json_body(request) and await request.body():
            bad += _bad_paths_in_json(await _json_document(request))
    return sorted(set(bad))


class InputGuard(ASGIMiddleware):
    """Answers 400 naming the fields before anything else reads a request with unstorable text."""

    scopes = (ScopeType.HTTP,)
    # Signed callbacks (and the benchmark's bare endpoint), by the request's path: a handler path pattern
    # would also match a controller's relative path such as "/wechat-events".
    should_bypass_for_scope = staticmethod(lambda scope: scope["path"].startswith("/wechat"))

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope, receive)
        if fields := await unstorable_fields(request):
            raise InvalidInput([FieldError(name, MESSAGE) for name in fields])
        await next_app(scope, receive, send)
