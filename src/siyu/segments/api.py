"""JSON API for a tenant's systems (Authorization: Bearer <API key>): the saved segments, one with its live
count, and its members in pages keyed by contact id; typed models, documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromPath, Parameter
from msgspec import Meta, Struct

from siyu.segments import services as svc
from siyu.segments.definition import CHANNELS
from siyu.web.api import BEARER, IsoTime, errors, iso, whole_number
from siyu.web.auth import api_key, api_tenant_id

DEFAULT_LIMIT = 100


# --- the definition, as `Definition.as_json` writes it ---------------------------------------------------

class TagRule(Struct):
    ids: list[int]
    match: Annotated[str, Meta(description="any or all")]


class OwnerRule(Struct, omit_defaults=True):
    op: Annotated[str, Meta(description="any (some rep added them on WeCom), none, or is (the rep `userid`)")]
    userid: str | None = None


class Recency(Struct, omit_defaults=True):
    op: Annotated[str, Meta(description="within, more_than, not_within (the last `days`) or never")]
    days: int | None = None


class Bounds(Struct):
    at_least: int | None
    at_most: int | None


class SkuRule(Struct):
    skus: list[str]
    match: Annotated[str, Meta(description="any or all")]


class DefinitionOut(Struct):
    """What a segment selects (the same JSON the segment editor saves)."""

    tags: TagRule | None
    exclude_tags: list[int]
    channels: Annotated[list[str], Meta(description="Linked (and not erased) on every one of these")]
    owner: OwnerRule | None
    last_interaction: Recency | None
    last_purchase: Recency | None
    include_erased: bool
    spent: Annotated[Bounds | None, Meta(description="Net spend in fen (CNY)")]
    orders: Annotated[Bounds | None, Meta(description="Purchases not wholly refunded")]
    bought: SkuRule | None
    not_bought: list[str]
    first_purchase: Recency | None


class SegmentOut(Struct):
    id: int
    name: str
    description: str
    definition: DefinitionOut
    created_by: str
    created_at: IsoTime
    updated_at: IsoTime


class SegmentList(Struct):
    segments: list[SegmentOut]


class ChannelCounts(Struct):
    oa: int
    mp: int
    wecom: int


class SegmentDetail(SegmentOut):
    count: Annotated[int, Meta(description="How many live contacts it selects now")]
    channels: Annotated[ChannelCounts, Meta(description="How many of those are linked on each channel")]


class MemberOut(Struct):
    id: int
    display_name: str
    unionid: str | None
    channels: list[str]
    erased: bool
    first_seen_at: IsoTime | None
    last_interaction_at: IsoTime | None
    last_purchase_at: IsoTime | None


class MemberPage(Struct):
    contacts: list[MemberOut]
    next_cursor: Annotated[str | None, Meta(description="Pass back as `cursor`; null on the last page")]


def _member_json(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "display_name": c["display_name"], "unionid": c["unionid"], "channels": c["channels"],
            "erased": c["erased_at"] is not None, "first_seen_at": iso(c["first_seen_at"]),
            "last_interaction_at": iso(c["last_interaction_at"]), "last_purchase_at": iso(c["last_purchase_at"])}


class SegmentsApi(Controller):
    path = "/api/v1/segments"
    guards = [api_key]
    tags = ["segments"]
    security = BEARER

    @get("/", responses=errors())
    async def list_segments(self, request: Request[Any, Any, Any]) -> SegmentList:
        """The tenant's saved segments with their definitions (no counts: ask one segment for its count)."""
        tid = api_tenant_id(request)
        return msgspec.convert({"segments": [s.as_json() for s in await svc.list_segments(tid)]}, SegmentList)

    @get("/{segment_id:str}", responses=errors(404))
    async def segment(self, request: Request[Any, Any, Any], segment_id: FromPath[str]) -> SegmentDetail:
        """One segment, with how many live contacts it selects now and how many of those are linked on each
        channel (`channels`)."""
        tid = api_tenant_id(request)
        segment = await svc.get_segment(tid, whole_number(segment_id, "id"))
        counts = await svc.breakdown(tid, segment.definition)
        return msgspec.convert({**segment.as_json(), "count": counts.total,
                                "channels": {ch: getattr(counts, ch) for ch in CHANNELS}}, SegmentDetail)

    @get("/{segment_id:str}/contacts", responses=errors(404))
    async def contacts(
        self, request: Request[Any, Any, Any], segment_id: FromPath[str],
        cursor: Annotated[str | None, Parameter(description="`next_cursor` of the previous page", required=False)] = None,
        limit: Annotated[str | None, Parameter(description="1 to 500 (default 100)", required=False)] = None,
    ) -> MemberPage:
        """The segment's contacts now, lowest id first; pass `next_cursor` back as `?cursor=` for the next page
        (`limit`: 1 to 500, default 100). A full pass lists each contact once."""
        tid = api_tenant_id(request)
        sid = whole_number(segment_id, "id")
        size = whole_number(limit or str(DEFAULT_LIMIT), "limit")
        after = whole_number(cursor, "cursor") if cursor else None
        page = await svc.members(tid, sid, after, size)
        return msgspec.convert({"contacts": [_member_json(c) for c in page.contacts],
                                "next_cursor": str(page.next_after) if page.next_after is not None else None},
                               MemberPage)
