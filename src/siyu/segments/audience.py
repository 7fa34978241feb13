"""The segments' definitions as the contacts' `Audience` (see `siyu.contacts.audience`): the contact list's
filters, the bulk-tag job and the API's `segment=` compile through here, so the list and the segments speak
one filter language. The composition roots install `COMPILER`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from siyu.segments import services
from siyu.segments.definition import Definition, Params, filters


@dataclass(frozen=True)
class DefinitionAudience:
    definition: Definition

    def where(self, args: list[Any], now: datetime) -> str | None:
        params = Params(*args)
        clauses = filters(self.definition, params, now)
        args[:] = params.values
        return " AND ".join(clauses) if clauses else None

    def as_json(self) -> dict[str, Any]:
        return self.definition.as_json()


class Compiler:
    async def definition(self, tenant_id: int, raw: dict[str, Any]) -> DefinitionAudience:
        return DefinitionAudience(await services.validate_definition(tenant_id, raw))

    async def segment(self, tenant_id: int, segment_id: int) -> DefinitionAudience:
        return DefinitionAudience((await services.get_segment(tenant_id, segment_id)).definition)


COMPILER = Compiler()
