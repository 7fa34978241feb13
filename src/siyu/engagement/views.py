"""Re-engagement pages for the tenant's admins: journeys (list with live figures, the editor with "who would
enter" and the audience's reachability per channel, results with charts, import / export), broadcasts (the
composer with a preview and a test send, live progress, results) and the shared rules (cap, quiet hours,
conversion window).

Every form works without JavaScript; htmx swaps the named blocks (figures, preview, progress)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from siyu.contacts import services as contacts
from siyu.core import clock, i18n
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.engagement import attribution, broadcasts, charts, forms, journeys, ledger, rules, sender
from siyu.engagement.definition import CHANNELS, TRIGGERS, parse_broadcast_message
from siyu.segments import services as segments
from siyu.segments.definition import Definition
from siyu.web.auth import tenant_admin
from siyu.web.render import errors_for, render, tenant_scope, toast_header

SAMPLE = 500  # people whose reachability a preview works out exactly
RECENT = 50


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return bool(getattr(request, "htmx", None))


def _go(request: Request[Any, Any, Any], url: str, message: str) -> Response[Any]:
    if _is_htmx(request):
        return Response("", status_code=200, headers={"HX-Redirect": url, **toast_header(message)})
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


async def _choices(tid: int) -> dict[str, Any]:
    return {"tags": await contacts.list_tags(tid), "segments": await segments.list_segments(tid),
            "triggers": TRIGGERS, "channels": CHANNELS, "carriers": charts.CARRIERS}


async def _audience(tid: int, raw: dict[str, Any]) -> tuple[Definition | None, str]:
    """The people a journey's trigger is about now: its segment, or the inactive ones; None for event triggers
    (they enter one by one as things happen)."""
    trigger = raw.get("trigger") or {}
    if trigger.get("kind") == "segment_entry" and isinstance(trigger.get("segment_id"), int):
        return (await segments.get_segment(tid, trigger["segment_id"])).definition, "segment"
    if trigger.get("kind") == "inactivity" and isinstance(trigger.get("days"), int):
        from siyu.segments.definition import Recency

        recency = Recency("more_than", trigger["days"])
        since = trigger.get("since", "purchase")
        return (Definition(last_purchase=recency) if since == "purchase" else Definition(last_interaction=recency)), \
            "inactive"
    return None, "events"


async def _reach(tid: int, definition: Definition, message: Any) -> sender.Reachability:
    page = await segments.members_of(tid, definition, None, SAMPLE)
    return await sender.reachability(tid, [int(c["id"]) for c in page.contacts], message)


class EngagementController(Controller):
    path = "/engagement"
    guards = [tenant_admin]
    include_in_schema = False

    # --- journeys: the list --------------------------------------------------------------------------------

    @get("/")
    async def home(self) -> Redirect:
        return Redirect("/engagement/journeys")

    @get("/journeys")
    async def journeys_list(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        rows = await journeys.list_journeys(tid)
        ids = [j.id for j in rows]
        return render(request, "engagement/journeys.html", {
            "journeys": rows, "summaries": await attribution.summaries(tid, "journey", ids),
            "entered": await attribution.entered(tid, ids), "as_of": clock.now()},
            block="figures" if _is_htmx(request) else None)

    # --- the editor -----------------------------------------------------------------------------------------

    async def _editor(self, request: Request[Any, Any, Any], tid: int, raw: dict[str, Any],
                      journey: journeys.JourneyRow | None = None, errors: dict[str, str] | None = None,
                      rows: list[int] | None = None, block: str | None = None, status_code: int = 200,
                      extra_rows: int = 0) -> Template:
        if not _is_htmx(request):
            block = None
        fields = forms.journey_fields(raw)
        for _ in range(extra_rows):
            fields["steps"].append({**fields["steps"][-1]})
        row_errors: dict[int, list[str]] = {}
        for name, message in (errors or {}).items():
            n = forms.row_of(name)
            if n is not None:
                at = rows[n] if rows and n < len(rows) else n
                row_errors.setdefault(at, []).append(f"{name}: {message}")
        preview = await self._preview(tid, raw) if block in (None, "preview") else None
        return render(request, "engagement/journey_edit.html", {
            "journey": journey, "form": fields, "errors": errors or {}, "row_errors": row_errors,
            "preview": preview, "carriers": charts.CARRIERS, **(await _choices(tid) if block is None else {})},
            block=block, status_code=status_code)

    async def _preview(self, tid: int, raw: dict[str, Any]) -> dict[str, Any]:
        """Who would enter now and how reachable they are; for event triggers, the whole base's reachability
        (a sample) and how many entered in the last day."""
        out: dict[str, Any] = {"errors": {}}
        try:
            journey = await journeys.validate(tid, {**raw, "name": raw.get("name") or "preview"})
        except InvalidInput as exc:
            out["errors"] = errors_for(exc)
            return out
        definition, kind = await _audience(tid, journey.as_json())
        out["kind"] = kind
        sends = journey.sends()
        if definition is not None:
            out["count"] = await segments.count(tid, definition)
        else:
            definition = Definition()
            out["count"] = None
        if sends and sends[0].send is not None:
            out["reach"] = await _reach(tid, definition, sends[0].send)
            out["reach_step"] = sends[0].id
        return out

    @get("/journeys/new")
    async def new_journey(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        raw = {"name": "", "trigger": {"kind": "purchase"}, "holdout_percent": 10,
               "steps": [{"send": {"purpose": "service", "text": ""}}],
               "exit": {"purchased": True, "refunded": True, "unfollowed": True, "in_conversation": True}}
        return await self._editor(request, tid, raw)

    @post("/journeys/preview")
    async def journey_preview(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        raw, rows = forms.journey_from_form(await request.form())
        return await self._editor(request, tid, raw, block="preview", rows=rows)

    @post("/journeys")
    async def create_journey(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        raw, rows = forms.journey_from_form(form)
        if form.get("add_step"):
            return await self._editor(request, tid, raw, rows=rows, extra_rows=1)
        try:
            created = await journeys.do_create_journey(tid, raw, actor)
        except InvalidInput as exc:
            return await self._editor(request, tid, raw, errors=errors_for(exc), rows=rows, status_code=400)
        return _go(request, f"/engagement/journeys/{created.id}", i18n.gettext(N_("Journey saved.")))

    @post("/journeys/import")
    async def import_journey(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        """A journey from its exported JSON (the API's shape)."""
        tid, actor = tenant_scope(request)
        text = str((await request.form()).get("json") or "")
        try:
            raw = json.loads(text) if len(text) <= 64 * 1024 else None
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            raise InvalidInput.one("json", N_("Paste a journey's JSON, as exported."))
        raw.pop("id", None)
        for key in ("version", "created_by", "created_at", "updated_at", "entered", "counts"):
            raw.pop(key, None)
        try:
            created = await journeys.do_create_journey(tid, {**raw, "status": "draft"}, actor)
        except InvalidInput as exc:
            return await self._editor(request, tid, raw, errors=errors_for(exc), status_code=400)
        return _go(request, f"/engagement/journeys/{created.id}", i18n.gettext(N_("Journey imported as a draft.")))

    @get("/journeys/{journey_id:int}/edit")
    async def edit_journey(self, request: Request[Any, Any, Any], journey_id: FromPath[int]) -> Template:
        tid, _ = tenant_scope(request)
        j = await journeys.get_journey(tid, journey_id)
        return await self._editor(request, tid, j.definition.as_json(), j)

    @post("/journeys/{journey_id:int}")
    async def update_journey(self, request: Request[Any, Any, Any], journey_id: FromPath[int]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        j = await journeys.get_journey(tid, journey_id)
        form = await request.form()
        raw, rows = forms.journey_from_form(form)
        raw["status"] = j.status
        if form.get("add_step"):
            return await self._editor(request, tid, raw, j, rows=rows, extra_rows=1)
        try:
            await journeys.do_update_journey(tid, j.id, raw, actor)
        except InvalidInput as exc:
            return await self._editor(request, tid, raw, j, errors=errors_for(exc), rows=rows, status_code=400)
        return _go(request, f"/engagement/journeys/{j.id}", i18n.gettext(N_("Journey saved.")))

    @post("/journeys/{journey_id:int}/status")
    async def journey_status(self, request: Request[Any, Any, Any], journey_id: FromPath[int]) -> Response[Any]:
        tid, actor = tenant_scope(request)
        await journeys.get_journey(tid, journey_id)
        status = str((await request.form()).get("status") or "")
        await journeys.do_set_status(tid, journey_id, status, actor)
        return _go(request, f"/engagement/journeys/{journey_id}", i18n.gettext(N_("Journey updated.")))

    @get("/journeys/{journey_id:int}/export")
    async def export_journey(self, request: Request[Any, Any, Any], journey_id: FromPath[int]) -> Response[Any]:
        tid, _ = tenant_scope(request)
        j = await journeys.get_journey(tid, journey_id)
        return Response(json.dumps(j.definition.as_json(), ensure_ascii=False, indent=2), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="journey-{j.id}.json"'})

    # --- results ----------------------------------------------------------------------------------------------

    @get("/journeys/{journey_id:int}")
    async def journey_detail(self, request: Request[Any, Any, Any], journey_id: FromPath[int]) -> Template:
        tid, _ = tenant_scope(request)
        j = await journeys.get_journey(tid, journey_id)
        figures = await attribution.figures(tid, "journey", j.id)
        steps = [(s, figures.get(s.id) or attribution.Figures(s.id)) for s in j.definition.sends()]
        recent = await ledger.page(tid, "journey", j.id, None, RECENT)
        return render(request, "engagement/journey.html", {
            "journey": j, "steps": steps, "charts": charts, "entered": (await attribution.entered(tid, [j.id])).get(j.id, 0),
            "recent": recent, "names": await contacts.display_names(tid, [r.contact for r in recent]),
            "moves": journeys.MOVES[j.status],
            "settings": await rules.get_settings(tid), "as_of": clock.now()},
            block="results" if _is_htmx(request) else None)

    # --- broadcasts ---------------------------------------------------------------------------------------------

    @get("/broadcasts")
    async def broadcasts_list(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        rows = await broadcasts.list_broadcasts(tid)
        return render(request, "engagement/broadcasts.html", {
            "broadcasts": rows, "summaries": await attribution.summaries(tid, "broadcast", [b.id for b in rows]),
            "segment_names": {s.id: s.name for s in await segments.list_segments(tid)}},
            block="rows" if _is_htmx(request) else None)

    async def _composer(self, request: Request[Any, Any, Any], tid: int, raw: dict[str, Any],
                        errors: dict[str, str] | None = None, block: str | None = None, status_code: int = 200,
                        test: dict[str, Any] | None = None) -> Template:
        if not _is_htmx(request):
            block = None
        preview = None
        if block in (None, "preview") and isinstance(raw.get("segment_id"), int):
            try:
                message = parse_broadcast_message(raw.get("message"))
                segment = await segments.get_segment(tid, raw["segment_id"])
                preview = {"count": await segments.count(tid, segment.definition),
                           "reach": await _reach(tid, segment.definition, message)}
            except (InvalidInput, NotFound) as exc:
                preview = {"errors": errors_for(exc) if isinstance(exc, InvalidInput) else {}}
        return render(request, "engagement/broadcast_new.html", {
            "form": {**raw, "message": forms.message_fields(raw.get("message")), "send_at": raw.get("send_at_text", "")},
            "errors": errors or {}, "preview": preview, "test": test, **(await _choices(tid))},
            block=block, status_code=status_code)

    @get("/broadcasts/new")
    async def new_broadcast(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return await self._composer(request, tid, {"name": "", "message": {"purpose": "marketing", "text": ""},
                                                   "holdout_percent": 10})

    def _send_at(self, raw: str, zone: str) -> datetime | None:
        raw = raw.strip()
        if not raw:
            return None
        try:
            at = datetime.fromisoformat(raw) if len(raw) <= 25 else None
        except ValueError:
            at = None
        if at is None:
            raise InvalidInput.one("send_at", N_("Enter a date and time, like 2026-12-24 20:00."))
        return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(zone))

    @post("/broadcasts/preview")
    async def broadcast_preview(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return await self._composer(request, tid, forms.broadcast_from_form(await request.form()), block="preview")

    @post("/broadcasts/test")
    async def broadcast_test(self, request: Request[Any, Any, Any]) -> Template:
        """Send the message now to one contact (by id), through the same ladder, outside quiet hours and the
        frequency cap; the answer says which channel took it or why none could."""
        tid, actor = tenant_scope(request)
        form = await request.form()
        raw = forms.broadcast_from_form(form)
        message = parse_broadcast_message(raw.get("message"))
        contact_raw = str(form.get("test_contact") or "").strip()
        if not (contact_raw.isdigit() and len(contact_raw) < 10):
            raise InvalidInput.one("test_contact", N_("Enter the id of a contact (on their page)."))
        contact_id = int(contact_raw)
        await contacts.get_contact(tid, contact_id)  # another tenant's contact is a missing one
        delivery_id = await broadcasts.do_test_send(tid, contact_id, message, actor)
        return await self._composer(request, tid, raw, block="test", test={"row": await ledger.get(tid, delivery_id)})

    @get("/broadcasts/tests/{delivery_id:int}")
    async def test_outcome(self, request: Request[Any, Any, Any], delivery_id: FromPath[int]) -> Template:
        """Where a test send stands (the composer asks until it is settled)."""
        tid, _ = tenant_scope(request)
        row = await ledger.get(tid, delivery_id)
        if row is None or row.step != "test":
            raise NotFound()
        return render(request, "engagement/broadcast_new.html", {"test": {"row": row}, "carriers": charts.CARRIERS},
                      block="test")

    @post("/broadcasts")
    async def create_broadcast(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        raw = forms.broadcast_from_form(form)
        raw_send_at = str(form.get("send_at") or "")
        try:
            send_at = self._send_at(raw_send_at, (await rules.get_settings(tid)).timezone)
            created = await broadcasts.do_create_broadcast(
                tid, {**raw, **({"send_at": send_at} if send_at else {})}, actor, schedule=form.get("draft") is None)
        except InvalidInput as exc:
            return await self._composer(request, tid, {**raw, "send_at_text": raw_send_at}, errors=errors_for(exc),
                                        status_code=400)
        return _go(request, f"/engagement/broadcasts/{created.id}", i18n.gettext(N_("Broadcast saved.")))

    @get("/broadcasts/{broadcast_id:int}")
    async def broadcast_detail(self, request: Request[Any, Any, Any], broadcast_id: FromPath[int]) -> Template:
        tid, _ = tenant_scope(request)
        b = await broadcasts.get_broadcast(tid, broadcast_id)
        figures = (await attribution.figures(tid, "broadcast", b.id)).get("message") or attribution.Figures("message")
        recent = await ledger.page(tid, "broadcast", b.id, None, RECENT)
        return render(request, "engagement/broadcast.html", {
            "broadcast": b, "f": figures, "charts": charts, "moves": broadcasts.MOVES[b.status],
            "segment": await _segment_name(tid, b.segment_id), "as_of": clock.now(),
            "recent": recent, "names": await contacts.display_names(tid, [r.contact for r in recent])},
            block="progress" if _is_htmx(request) else None)

    @post("/broadcasts/{broadcast_id:int}/status")
    async def broadcast_status(self, request: Request[Any, Any, Any], broadcast_id: FromPath[int]) -> Response[Any]:
        tid, actor = tenant_scope(request)
        await broadcasts.get_broadcast(tid, broadcast_id)
        await broadcasts.do_set_status(tid, broadcast_id, str((await request.form()).get("status") or ""), actor)
        return _go(request, f"/engagement/broadcasts/{broadcast_id}", i18n.gettext(N_("Broadcast updated.")))

    # --- shared rules ---------------------------------------------------------------------------------------------

    @get("/settings")
    async def settings_page(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "engagement/settings.html", {"form": (await rules.get_settings(tid)).as_json(),
                                                            "errors": {}})

    @post("/settings")
    async def save_settings(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        data = {k: str(form.get(k) or "") for k in ("cap_count", "cap_days", "quiet_start", "quiet_end",
                                                     "conversion_days")}
        try:
            await rules.do_update_settings(tid, dict(data), actor)
        except InvalidInput as exc:
            return render(request, "engagement/settings.html", {"form": data, "errors": errors_for(exc)},
                          status_code=400)
        return _go(request, "/engagement/settings", i18n.gettext(N_("Settings saved.")))


async def _segment_name(tid: int, segment_id: int) -> str:
    try:
        return (await segments.get_segment(tid, segment_id)).name
    except NotFound:
        return "—"
