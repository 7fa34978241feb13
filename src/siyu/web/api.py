"""What every JSON API route needs: the request's JSON object, numbers from the path or query checked
so a malformed one is a 400 naming it (not a 404 or a database error), ISO times, and the acting key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request

from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.tenants.services import Actor
from siyu.web.auth import ApiPrincipal, client_ip

INT4_MAX = 2**31 - 1  # serial ids


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


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def api_actor(request: Request[Any, Any, Any]) -> Actor:
    """The API key that made this request, for the audit log (routes guarded by `api_key`)."""
    principal = request.scope["user"]
    assert isinstance(principal, ApiPrincipal)
    return principal.actor(client_ip(request))
