"""Typed JSON edges of the journeys and broadcasts API (msgspec Structs, in the OpenAPI schema).

The bodies are checked by the engagement's own strict parsers (`definition.parse`, `broadcasts.check`), which
name the field of every mistake the way the client wrote it (`steps[2].send.channels`); these Structs document
them and type the answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_

MAX_BODY = 64 * 1024


class TriggerDoc(Struct, omit_defaults=True):
    """`kind` with its filters: purchase (skus, min_fen, max_fen, order first|repeat|any, sources), refund and
    replenishment (skus), inactivity (days, since purchase|interaction), segment_entry (segment_id), follow
    (channels oa|wecom)."""

    kind: str
    skus: list[str] | None = None
    min_fen: int | None = None
    max_fen: int | None = None
    order: str | None = None
    sources: list[str] | None = None
    days: int | None = None
    since: str | None = None
    segment_id: int | None = None
    channels: list[str] | None = None


class TemplateDoc(Struct, omit_defaults=True):
    template_id: str
    data: dict[str, str] = {}
    page: str | None = None  # Mini Program subscription messages: the page the card opens


class TemplatesDoc(Struct, omit_defaults=True):
    oa: TemplateDoc | None = None  # the Official Account's template message
    mp: TemplateDoc | None = None  # the Mini Program's subscription message (needs a counted consent)


class MessageDoc(Struct, omit_defaults=True):
    """`purpose` service | marketing; `channels` in order from window, wecom_task, subscribe, template, mass
    (subscribe and template carry service messages only)."""

    purpose: str
    text: str
    template: TemplatesDoc | None = None
    channels: list[str] | None = None


class ConditionsDoc(Struct, omit_defaults=True):
    purchased: bool | None = None
    refunded: bool | None = None
    unfollowed: bool | None = None
    in_conversation: bool | None = None
    tags_any: list[int] | None = None
    segment_id: int | None = None


class StepDoc(Struct, omit_defaults=True):
    """Exactly one of `wait` (ISO 8601: P3D, PT30M; or "replenishment"), `send`, `stop_if`; `id` is the step's
    stable id (given one when absent)."""

    id: str | None = None
    wait: str | None = None
    send: MessageDoc | None = None
    stop_if: ConditionsDoc | None = None


class JourneyIn(Struct):
    name: str
    trigger: TriggerDoc
    steps: list[StepDoc]
    exit: ConditionsDoc | None = None
    reentry_days: int | None = None
    holdout_percent: int = 0
    status: str = "draft"  # draft | active | paused | archived


class JourneyPatch(Struct, omit_defaults=True):
    """Either `status` alone (draft → active ⇄ paused → archived), or a whole new definition (a new version)."""

    status: str | None = None
    name: str | None = None
    trigger: TriggerDoc | None = None
    steps: list[StepDoc] | None = None
    exit: ConditionsDoc | None = None
    reentry_days: int | None = None
    holdout_percent: int | None = None


class Counts(Struct):
    targeted: int
    states: dict[str, int]  # scheduled, due, sending, waiting_for_rep, sent, skipped, failed, unknown, held_out, …
    reasons: dict[str, int]  # "skipped:frequency_cap", "failed:config_problem", …
    sent_by_channel: dict[str, int]
    conversions: int
    revenue_fen: int


class JourneyOut(Struct):
    id: int
    name: str
    trigger: TriggerDoc
    steps: list[StepDoc]
    exit: ConditionsDoc
    reentry_days: int | None
    holdout_percent: int
    status: str
    version: int
    entered: int
    counts: Counts
    created_at: datetime
    updated_at: datetime


class JourneyList(Struct):
    journeys: list[JourneyOut]


class DeliveryOut(Struct):
    id: int
    contact_id: int
    step: str
    trigger_key: str
    state: str
    channel: str
    reason: str
    skips: list[dict[str, str]]
    held_out: bool
    due_at: datetime
    sent_at: datetime | None
    settled_at: datetime | None


class DeliveryPage(Struct):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


class BroadcastIn(Struct):
    name: str
    segment_id: int
    message: MessageDoc
    send_at: datetime | None = None  # RFC 3339 with an offset; now when absent
    rate_per_minute: int | None = None  # as fast as the sending budget allows when absent
    holdout_percent: int = 0


class BroadcastOut(Struct):
    id: int
    name: str
    segment_id: int
    message: MessageDoc
    send_at: datetime | None
    rate_per_minute: int | None
    holdout_percent: int
    status: str  # draft | scheduled | sending | paused | cancelled | done
    counts: Counts
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class FieldErrors(Struct):
    """What every 4xx of the API looks like."""

    error: str
    status: int
    fields: dict[str, str] | None = None


def convert(value: Any, model: type[Any]) -> Any:
    return msgspec.convert(value, model, strict=False)


def object_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, bounded."""
    if len(body) > MAX_BODY:
        raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=MAX_BODY)
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidInput.one("body", N_("Send a JSON object.")) from None
    if not isinstance(value, dict):
        raise InvalidInput.one("body", N_("Send a JSON object."))
    return value
