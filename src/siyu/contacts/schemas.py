"""Typed JSON edges of the contacts API (msgspec Structs, documented in the OpenAPI schema).

Bodies are decoded strictly by `siyu.web.api.read` (400 naming the field); answers are built from these
models, so the schema says exactly what an integrator gets. Times are ISO 8601 strings with their offset.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from siyu.web.api import IsoTime

Channel = Annotated[str, Meta(description="oa (Official Account), mp (Mini Program) or wecom (WeCom)")]
# Data whose keys others decide (WeChat's profiles, the details of a timeline event): documented in words,
# an object all the same.
Details = Annotated[dict[str, Any], Meta(
    description="The event's details; their keys depend on `kind`: message_in / message_out carry `text` "
                "(and `msg_type`), menu_click its `key`, scan its `scene`, wecom_added / wecom_removed the rep's "
                "`user_id` and `state`, purchase and refund the order (`order_id`, `amount_fen`, …), note its "
                "`text` and `by`, assignment and resolution the conversation and the rep; an erased person's "
                "events keep only the keys that say nothing about them")]
Profile = Annotated[dict[str, Any], Meta(
    description="What the channel said about the person (the Official Account's user/info, the Mini "
                "Program login, WeCom's externalcontact/get), as WeChat sent it; {} once erased")]


class TagRef(Struct):
    id: int
    name: str


class IdentityOut(Struct):
    channel: Channel
    external_id: Annotated[str, Meta(description="The openid (oa, mp) or external_userid (wecom)")]
    unionid: str | None
    first_seen_at: IsoTime | None
    last_seen_at: IsoTime | None
    erased: bool


class ContactOut(Struct):
    """One person across the brand's channels. A merged-away contact (`merged_into` set) has moved to its
    survivor with its identities and history."""

    id: int
    display_name: str
    unionid: str | None
    phone: str
    remark: str
    first_seen_at: IsoTime | None
    last_interaction_at: IsoTime | None
    merged_into: int | None
    identities: list[IdentityOut]
    tags: list[TagRef]
    erased: bool
    updated_at: IsoTime | None


class ContactPage(Struct):
    contacts: list[ContactOut]
    next_cursor: Annotated[str | None, Meta(
        description="Pass back as `cursor` for the next page; null on the last page")]


class EventOut(Struct):
    id: int
    contact_id: int
    occurred_at: IsoTime
    kind: str
    channel: Annotated[str, Meta(description="oa, mp, wecom, or siyu (made inside Siyu: notes, merges, assignments)")]
    payload: Details


class EventPage(Struct):
    events: list[EventOut]
    next_cursor: str | None


class EraseIn(Struct):
    reason: Annotated[str, Meta(description="Why (the data-subject request's reference, for example): 1 to 500 "
                                            "characters")]


class Erased(Struct):
    """How much was erased (0 everywhere when it had been erased already)."""

    contacts: int
    identities: int
    events: int
    tags: int
    callbacks: int


class EraseOut(Struct):
    contact_id: int
    erased: Erased


class MpLoginIn(Struct):
    """A Mini Program login as the brand's backend saw it: the `code` from wx.login (Siyu asks WeChat's
    jscode2session), or the `openid` (and `unionid`) the backend already has."""

    code: Annotated[str, Meta(max_length=128)] | None = None
    openid: Annotated[str, Meta(max_length=64)] | None = None
    unionid: Annotated[str, Meta(max_length=64)] | None = None


class MpLoginOut(Struct):
    contact_id: int
    openid: str
    unionid: str | None
    created: Annotated[bool, Meta(description="True when this login made a new contact")]


# --- the data-subject export -------------------------------------------------------------------------

class ExportContact(Struct):
    id: int
    display_name: str
    avatar_url: str
    phone: str
    remark: str
    language: str
    unionid: str | None
    first_seen_at: IsoTime | None
    last_interaction_at: IsoTime | None
    last_purchase_at: IsoTime | None
    erased_at: IsoTime | None
    created_at: IsoTime | None
    updated_at: IsoTime | None


class ExportIdentity(Struct):
    id: int
    channel: Channel
    external_id: str
    unionid: str | None
    first_seen_at: IsoTime | None
    last_seen_at: IsoTime | None
    enriched_at: IsoTime | None
    erased_at: IsoTime | None
    profile: Profile


class OwnerTag(Struct, omit_defaults=True):
    """A tag the rep gave the customer in WeCom (its group, name, type and id, as WeCom gave them)."""

    group: str | None = None
    name: str | None = None
    type: int | str | None = None
    id: str | None = None


class ExportOwner(Struct):
    staff_userid: Annotated[str, Meta(description="The rep's WeCom UserID")]
    state: str
    remark: str
    description: str
    tags: list[OwnerTag]
    added_at: IsoTime | None
    removed_at: IsoTime | None


class ExportEvent(Struct):
    id: int
    occurred_at: IsoTime
    kind: str
    channel: str
    payload: Details


class ExportMerge(Struct):
    id: int
    survivor: int
    merged: int
    reason: str
    created_at: IsoTime | None
    undone_at: IsoTime | None


class ContactExport(Struct):
    """Everything Siyu holds about the person (format `siyu.contact-export/1`)."""

    format: str
    contact: ExportContact
    identities: list[ExportIdentity]
    owners: list[ExportOwner]
    tags: list[str]
    timeline: list[ExportEvent]
    merges: list[ExportMerge]


class TagOut(Struct):
    id: int
    name: str
    contacts: Annotated[int, Meta(description="How many contacts carry it")]


class TagList(Struct):
    tags: list[TagOut]
