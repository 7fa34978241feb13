"""JSON API of re-engagement (Authorization: Bearer <API key>), typed in the OpenAPI schema:

- `GET|POST /api/v1/journeys`, `GET|PATCH /api/v1/journeys/{id}` (a status change, or a new definition),
  `GET /api/v1/journeys/{id}/deliveries?cursor=&limit=` (the ledger, newest first);
- `POST /api/v1/broadcasts`, `GET /api/v1/broadcasts/{id}` (status and counts by state and reason).

The journey JSON is the same as export / import. Bad input is a 400 naming the field; another tenant's journey
or broadcast answers exactly like a missing one (404).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.engagement import attribution, broadcasts, journeys, ledger
from siyu.engagement.schemas import (
    MAX_BODY,
    BroadcastIn,
    BroadcastOut,
    ConditionsDoc,
    Counts,
    DeliveryOut,
    DeliveryPage,
    FieldErrors,
    JourneyIn,
    JourneyList,
    JourneyOut,
    JourneyPatch,
    MessageDoc,
    StepDoc,
    TriggerDoc,
    convert,
    object_body,
)
from siyu.web.api import BEARER, api_actor, whole_number
from siyu.web.auth import api_key, api_tenant_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
ERRORS = {400: ResponseSpec(FieldErrors, description="A field is missing or wrong: `fields` names it"),
          404: ResponseSpec(FieldErrors, description="No such journey or broadcast for this key's brand")}


# Never called: they tell the OpenAPI schema what the bodies are (the handlers parse them strictly themselves).
async def _journey_body(data: JourneyIn) -> None:
    """Documents the body of POST /api/v1/journeys."""


async def _patch_body(data: JourneyPatch) -> None:
    """Documents the body of PATCH /api/v1/journeys/{id}."""


async def _broadcast_body(data: BroadcastIn) -> None:
    """Documents the body of POST /api/v1/broadcasts."""


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        return object_body(await request.body())
    except HTTPException as exc:
        if exc.status_code == 413:
            raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=MAX_BODY) from None
        raise


def _counts(s: attribution.Summary) -> Counts:
    return Counts(s.targeted, dict(s.states), dict(s.reasons), dict(s.sent_by_channel), s.conversions, s.revenue_fen)


async def _journeys_out(tenant_id: int, rows: list[journeys.JourneyRow]) -> list[JourneyOut]:
    ids = [j.id for j in rows]
    summaries = await attribution.summaries(tenant_id, "journey", ids)
    entered = await attribution.entered(tenant_id, ids)
    out = []
    for j in rows:
        d = j.definition.as_json()
        out.append(JourneyOut(
            id=j.id, name=j.name, trigger=convert(d["trigger"], TriggerDoc), steps=convert(d["steps"], list[StepDoc]),
            exit=convert(d["exit"], ConditionsDoc),
            reentry_days=d["reentry_days"], holdout_percent=d["holdout_percent"], status=j.status, version=j.version,
            entered=entered.get(j.id, 0), counts=_counts(summaries[j.id]), created_at=j.created_at,
            updated_at=j.updated_at))
    return out


async def _broadcast_out(tenant_id: int, b: broadcasts.BroadcastRow) -> BroadcastOut:
    summary = (await attribution.summaries(tenant_id, "broadcast", [b.id]))[b.id]
    return BroadcastOut(id=b.id, name=b.name, segment_id=b.segment_id, message=convert(b.message.as_json(), MessageDoc),
                        send_at=b.send_at, rate_per_minute=b.rate_per_minute, holdout_percent=b.holdout_percent,
                        status=b.status, counts=_counts(summary), created_at=b.created_at, started_at=b.started_at,
                        finished_at=b.finished_at)


def _send_at(raw: Any) -> datetime | None:
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw) if isinstance(raw, str) and len(raw) <= 40 else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidInput.one("send_at", N_("Give a date and time with its offset, like 2026-12-24T20:00:00+08:00."))
    try:  # an offset can carry a date past what PostgreSQL and Python hold (year 1 or 9999)
        at = at.astimezone(UTC)
    except OverflowError:
        at = None
    if at is None or not 2000 <= at.year <= 9000:
        raise InvalidInput.one("send_at", N_("Give a date and time with its offset, like 2026-12-24T20:00:00+08:00."))
    return at


class JourneysApi(Controller):
    path = "/api/v1/journeys"
    guards = [api_key]
    security = BEARER  # the OpenAPI schema says which key these take
    tags = ["journeys"]

    @get("/")
    async def list_journeys(self, request: Request[Any, Any, Any]) -> JourneyList:
        """The brand's journeys with their figures (every step together)."""
        tid = api_tenant_id(request)
        return JourneyList(await _journeys_out(tid, await journeys.list_journeys(tid)))

    @post("/", dependencies={"_body": Provide(_journey_body)}, status_code=201, request_max_body_size=MAX_BODY,
          responses=ERRORS)
    async def create(self, request: Request[Any, Any, Any]) -> JourneyOut:
        """Create a journey from its JSON (the same as export / import); `status` active starts it at once."""
        tid = api_tenant_id(request)
        created = await journeys.do_create_journey(tid, await _body(request), api_actor(request))
        return (await _journeys_out(tid, [created]))[0]

    @get("/{journey_id:str}", responses=ERRORS)
    async def journey(self, request: Request[Any, Any, Any], journey_id: FromPath[str]) -> JourneyOut:
        tid = api_tenant_id(request)
        return (await _journeys_out(tid, [await journeys.get_journey(tid, whole_number(journey_id, "id"))]))[0]

    @patch("/{journey_id:str}", dependencies={"_body": Provide(_patch_body)}, request_max_body_size=MAX_BODY,
           responses={409: ResponseSpec(FieldErrors, description="The journey cannot take this status now"),
                      **ERRORS})
    async def change(self, request: Request[Any, Any, Any], journey_id: FromPath[str]) -> JourneyOut:
        """`{"status": "paused"}` changes the status only; a whole definition replaces it (a new version: steps
        keep their ids, so nobody gets a step twice; removed steps are skipped for the people waiting for them)."""
        tid = api_tenant_id(request)
        jid = whole_number(journey_id, "id")
        current = await journeys.get_journey(tid, jid)
        body = await _body(request)
        actor = api_actor(request)
        if set(body) == {"status"}:
            if not isinstance(body["status"], str):
                raise InvalidInput.one("status", N_("Choose one of: {choices}."), choices=", ".join(journeys.MOVES))
            changed = await journeys.do_set_status(tid, jid, body["status"], actor)
        else:
            changed = await journeys.do_update_journey(tid, current.id, {"status": current.status, **body}, actor)
        return (await _journeys_out(tid, [changed]))[0]

    @get("/{journey_id:str}/deliveries", responses=ERRORS)
    async def deliveries(self, request: Request[Any, Any, Any], journey_id: FromPath[str]) -> DeliveryPage:
        """The journey's ledger rows, newest first; pass `next_cursor` back as `?cursor=` (`limit` 1 to 500)."""
        tid = api_tenant_id(request)
        j = await journeys.get_journey(tid, whole_number(journey_id, "id"))
        q = request.query_params
        limit = whole_number(q.get("limit") or str(DEFAULT_LIMIT), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_LIMIT)
        before = whole_number(q["cursor"], "cursor", 2**63 - 1) if q.get("cursor") else None
        rows = await ledger.page(tid, "journey", j.id, before, limit + 1)
        out = [DeliveryOut(r.id, r.contact, r.step, r.trigger_key, r.state, r.channel, r.reason, r.skips, r.held_out,
                           r.due_at, r.sent_at, r.settled_at) for r in rows[:limit]]
        return DeliveryPage(out, str(out[-1].id) if len(rows) > limit else None)


class BroadcastsApi(Controller):
    path = "/api/v1/broadcasts"
    guards = [api_key]
    security = BEARER  # the OpenAPI schema says which key these take
    tags = ["broadcasts"]

    @post("/", dependencies={"_body": Provide(_broadcast_body)}, status_code=201, request_max_body_size=MAX_BODY,
          responses=ERRORS)
    async def create(self, request: Request[Any, Any, Any]) -> Response[BroadcastOut]:
        """Send a message to a segment now (or at `send_at`), paced at `rate_per_minute`, with a holdout."""
        tid = api_tenant_id(request)
        body = await _body(request)
        if "send_at" in body:
            body["send_at"] = _send_at(body["send_at"])
        created = await broadcasts.do_create_broadcast(tid, body, api_actor(request))
        return Response(await _broadcast_out(tid, created), status_code=201)

    @get("/{broadcast_id:str}", responses=ERRORS)
    async def broadcast(self, request: Request[Any, Any, Any], broadcast_id: FromPath[str]) -> BroadcastOut:
        """Status and counts by state, reason and channel."""
        tid = api_tenant_id(request)
        return await _broadcast_out(tid, await broadcasts.get_broadcast(tid, whole_number(broadcast_id, "id")))
