"""The filters of the contact list, the bulk actions and the API, in the segments' language.

A contact list filtered by channel, tag, rep owner, last interaction or purchases asks the same questions as a
segment, so it uses the segments' definition and its compiler (`siyu.segments.definition`): one filter
language. Segments sit above contacts (they read the contacts' tables) and contacts never import them, so the
composition roots install the compiler here (`install`), as they register merge carriers: the pages, the API
and the bulk-tag job ask `compiler()` for an `Audience` (a parameterised condition on `contact c`).

The bulk-tag job runs in the worker, away from a request, and acts within the scope of the person who
started it as it is when it runs: the roots install the inbox's scope rule here too (`scope_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from siyu.contacts.scope import Scope


class Audience(Protocol):
    def where(self, args: list[Any], now: datetime) -> str | None:
        """The condition on `contact c` (of the tenant in `$1`, live: the caller keeps `merged_into IS NULL`)
        with its values appended to `args`, numbered after what is there; None when it adds nothing. `now`
        anchors day windows (one instant for a whole page or job)."""

    def as_json(self) -> dict[str, Any]:
        """The definition, canonical (what a bulk action stores to compile again in the worker)."""


class Compiler(Protocol):
    async def definition(self, tenant_id: int, raw: dict[str, Any]) -> Audience:
        """The audience a definition describes; InvalidInput naming its fields (`tags`, `owner.userid`, …),
        unknown tags (another tenant's) included."""

    async def segment(self, tenant_id: int, segment_id: int) -> Audience:
        """A saved segment's audience now; NotFound for another tenant's or a missing one."""


ScopeFor = Callable[[int, int, str], Awaitable[Scope]]  # (tenant, staff id, role) → what they may see

_installed: dict[str, Any] = {}


def install(compiler: Compiler, scope_for: ScopeFor) -> None:
    """Called by each composition root at start (again: replaced, so twice is harmless)."""
    _installed["compiler"] = compiler
    _installed["scope_for"] = scope_for


def compiler() -> Compiler:
    try:
        return _installed["compiler"]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError("no audience compiler installed: the composition root calls audience.install") from None


async def scope_for(tenant_id: int, staff_id: int, role: str) -> Scope:
    try:
        provider: ScopeFor = _installed["scope_for"]
    except KeyError:
        raise RuntimeError("no scope rule installed: the composition root calls audience.install") from None
    return await provider(tenant_id, staff_id, role)
