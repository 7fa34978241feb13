"""What every JSON API route needs: the request's JSON object (or a typed body decoded strictly), numbers from
the path or query checked so a malformed one is a 400 naming it (not a 404 or a database error), ISO times,
the acting key, and the pieces that make the OpenAPI schema say what each route takes and answers: the error
body every 4xx has, and a way to document a body that the handler decodes itself."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from msgspec import Meta, Struct

from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import Actor
from siyu.web.auth import ApiPrincipal, client_ip

INT4_MAX = 2**31 - 1  # serial ids
MAX_BODY = 64 * 1024  # the JSON bodies of these routes are small: a reason, a login, a handoff

# A time as the API writes it: ISO 8601 with its offset (what `iso` makes). Litestar reads `extra` into the
# OpenAPI schema of the field.
IsoTime = Annotated[str, Meta(extra_json_schema={"format": "date-time", "extra": {"format": "date-time"}})]


class ErrorBody(Struct):
    """What every 4xx of the API looks like: the message, the status, and for a 400 (or a 409 about a field)
    one message per field, named the way the request wrote it (`reason`, `limit`, `tags.ids`)."""

    error: str
    status: int
    fields: dict[str, str] | None = None


def errors(*statuses: int, **described: str) -> dict[int, ResponseSpec]:
    """The error answers of a route for the OpenAPI schema, each an ErrorBody (`e404="…"` says when a 404
    happens, and so on)."""
    said = {400: "A parameter or a field of the body is wrong: `fields` names it",
            401: "No API key, or one that is revoked or unknown (Authorization: Bearer <key>)",
            404: "No such object for this key's brand",
            409: "The request conflicts with the object's state"}
    chosen = sorted({400, 401, *statuses, *(int(k[1:]) for k in described)})
    return {s: ResponseSpec(ErrorBody, description=described.get(f"e{s}", said.get(s, "Refused")))
            for s in chosen}


S = TypeVar("S")


def documents(model: type[Any]) -> Provide:
    """A dependency that only tells the OpenAPI schema which model a route's body is. Litestar documents a
    body from a `data` parameter of the handler or of one of its dependencies; the handlers decode their
    bodies strictly themselves (`read`), so this one is never resolved (no handler asks for it by name)."""
    async def body(data: Any) -> None:
        """Documents a request body."""
    body.__annotations__ = {"data": model, "return": None}
    return Provide(body)


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")


def _field_of(message: str) -> str:
    path = ""
    at = _AT.search(message)
    if at:
        path = at.group("path").lstrip(".")
    named = _NAMED.match(message)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or "body"


def _explain(message: str) -> str:
    # Messages are formatted with str.format later: the braces of a pattern must survive it.
    return _AT.sub("", message).replace("`", "").replace("{", "{{").replace("}", "}}")


def decode(body: bytes, model: type[S], max_body: int = MAX_BODY) -> S:
    """`body` as `model`, strictly (no "1" for 1, no 1.0 for 1); InvalidInput naming the first wrong field
    (`body` when it is not a JSON object or too large). msgspec's decoding is linear and refuses deep nesting."""
    if len(body) > max_body:
        raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=max_body)
    try:
        return msgspec.json.decode(body, type=model, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidInput([FieldError(_field_of(message), _explain(message))]) from None
    except msgspec.DecodeError:
        raise InvalidInput.one("body", N_("Send a JSON object.")) from None


async def read(request: Request[Any, Any, Any], model: type[S], max_body: int = MAX_BODY) -> S:
    """The request's body decoded strictly as `model` (see `decode`)."""
    try:
        raw = await request.body()
    except HTTPException as exc:
        if exc.status_code == 413:
            raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=max_body) from None
        raise
    return decode(raw, model, max_body)


async def json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = await request.json()
    except Exception:
        raise InvalidInput.one("body", N_("Send a JSON object.")) from None
    if not isinstance(body, dict):
        raise InvalidInput.one("body", N_("Send a JSON object."))
    return body


def whole_number(raw: str, field: str, maximum: int = INT4_MAX) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(maximum)) or int(raw) > maximum:
        raise InvalidInput.one(field, N_("Enter a whole number."))
    return int(raw)


def limit_of(raw: str | None, default: int, maximum: int, field: str = "limit") -> int:
    """A page size from the query: 1 to `maximum`, `default` when absent."""
    value = whole_number(raw or str(default), field)
    if not 1 <= value <= maximum:
        raise InvalidInput.one(field, N_("Use a number from 1 to {max}."), max=maximum)
    return value


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def api_actor(request: Request[Any, Any, Any]) -> Actor:
    """The API key that made this request, for the audit log (routes guarded by `api_key`)."""
    principal = request.scope["user"]
    assert isinstance(principal, ApiPrincipal)
    return principal.actor(client_ip(request))


# The security requirement every API controller declares (the scheme is in the app's OpenAPI config).
BEARER = [{"apiKey": []}]

