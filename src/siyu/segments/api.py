"""JSON API for a tenant's systems (Authorization: Bearer <API key>): the saved segments, one with its live
count, and its members in pages keyed by contact id."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath

from siyu.segments import services as svc
from siyu.segments.definition import CHANNELS
from siyu.web.api import iso, whole_number
from siyu.web.auth import api_key, api_tenant_id

DEFAULT_LIMIT = 100


def _member_json(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "display_name": c["display_name"], "unionid": c["unionid"], "channels": c["channels"],
            "erased": c["erased_at"] is not None, "first_seen_at": iso(c["first_seen_at"]),
            "last_interaction_at": iso(c["last_interaction_at"]), "last_purchase_at": iso(c["last_purchase_at"])}


class SegmentsApi(Controller):
    path = "/api/v1/segments"
    guards = [api_key]
    tags = ["segments"]

    @get("/")
    async def list_segments(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The tenant's saved segments with their definitions (no counts: ask one segment for its count)."""
        tid = api_tenant_id(request)
        return {"segments": [s.as_json() for s in await svc.list_segments(tid)]}

    @get("/{segment_id:str}")
    async def segment(self, request: Request[Any, Any, Any], segment_id: FromPath[str]) -> dict[str, Any]:
        """One segment, with how many live contacts it selects now and how many of those are linked on each
        channel (`channels`)."""
        tid = api_tenant_id(request)
        segment = await svc.get_segment(tid, whole_number(segment_id, "id"))
        counts = await svc.breakdown(tid, segment.definition)
        return {**segment.as_json(), "count": counts.total, "channels": {ch: getattr(counts, ch) for ch in CHANNELS}}

    @get("/{segment_id:str}/contacts")
    async def contacts(self, request: Request[Any, Any, Any], segment_id: FromPath[str]) -> dict[str, Any]:
        """The segment's contacts now, lowest id first; pass `next_cursor` back as `?cursor=` for the next page
        (`limit`: 1 to 500, default 100). A full pass lists each contact once."""
        tid = api_tenant_id(request)
        sid = whole_number(segment_id, "id")
        q = request.query_params
        limit = whole_number(q.get("limit") or str(DEFAULT_LIMIT), "limit")
        cursor = q.get("cursor") or ""
        after = whole_number(cursor, "cursor") if cursor else None
        page = await svc.members(tid, sid, after, limit)
        return {"contacts": [_member_json(c) for c in page.contacts],
                "next_cursor": str(page.next_after) if page.next_after is not None else None}
