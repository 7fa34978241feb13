"""Segment pages for the brand's staff (agents and admins, as on the contact pages): the list with counts
loaded lazily, the editor with a live preview (count, per-channel breakdown, a few members) that follows
the filters as they change, the members of a saved segment in pages, and deletion after a confirmation.

Every form works without JavaScript: "Preview" posts the form and gets the whole editor back.

People are shown within the signed-in person's scope (`contact_scope`, the inbox's rule, see
`siyu.contacts.scope`): a rep's preview examples and member pages list only contacts they may see. The count
and the per-channel breakdown stay the whole audience's (a number, not a person: what a broadcast to the
segment would reach), as the tag counts on the contact list do."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from siyu.contacts import services as contacts
from siyu.contacts.scope import Scope
from siyu.core import clock, i18n
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_
from siyu.segments import services as svc
from siyu.segments.definition import CHANNELS, RECENCIES, RECENCY_OPS, Definition
from siyu.web.auth import tenant_staff
from siyu.web.render import errors_for, render, tenant_scope, toast_header

MEMBERS_PAGE = 50
# Labels of the fields an error can name, for the preview's list of problems.
FIELD_LABELS = {
    "name": N_("Segment name"), "description": N_("Description"), "tags": N_("Has tags"), "tags.match": N_("Has tags"),
    "exclude_tags": N_("Excluding tags"), "channels": N_("Linked on"), "owner": N_("Sales rep"),
    "owner.userid": N_("Sales rep"), "last_interaction": N_("Last interaction"),
    "last_interaction.days": N_("Last interaction"), "last_purchase": N_("Last purchase"),
    "last_purchase.days": N_("Last purchase"), "include_erased": N_("Erased contacts"),
    "spent": N_("Spent"), "spent.at_least": N_("Spent at least"), "spent.at_most": N_("Spent at most"),
    "orders": N_("Orders"), "orders.at_least": N_("At least … orders"), "orders.at_most": N_("At most … orders"),
    "bought": N_("Bought"), "bought.skus": N_("Bought"), "bought.match": N_("Bought"), "not_bought": N_("Never bought"),
    "first_purchase": N_("First purchase"), "first_purchase.days": N_("First purchase"),
}
YUAN_RE = re.compile(r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$")



def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return bool(getattr(request, "htmx", None))


def _go(request: Request[Any, Any, Any], url: str, message: str) -> Response[Any]:
    if _is_htmx(request):
        return Response("", status_code=200, headers={"HX-Redirect": url, **toast_header(message)})
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


def _number(raw: str, digits: int = 9) -> int | str:
    """A form's digits as a number; anything else stays text, for the definition's check to name."""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= digits else raw


def _fen(raw: str) -> int | str:
    """Yuan as typed ("128", "12.5") in fen; anything else stays text, for the definition's check to name."""
    raw = raw.strip()
    return int(Decimal(raw) * 100) if YUAN_RE.match(raw) else raw


def _yuan(fen: Any) -> str:
    return "" if fen is None else f"{fen / 100:.2f}".removesuffix(".00") if isinstance(fen, int) else str(fen)


def _sku_list(raw: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,，\s]+", raw) if part.strip()]


def _bounds_from_form(form: Any, name: str, convert: Any) -> dict[str, Any] | None:
    values = {k: str(form.get(f"{name}.{k}") or "").strip() for k in ("at_least", "at_most")}
    if not any(values.values()):
        return None
    return {k: (convert(v) if v else None) for k, v in values.items()}


def definition_from_form(form: Any) -> dict[str, Any]:
    """The editor's fields as a definition in the API's JSON shape (checked by the services, not here)."""
    tags = [_number(v) for v in form.getall("tags", []) if str(v).strip()]
    raw: dict[str, Any] = {
        "tags": {"ids": tags, "match": str(form.get("tags.match") or "any")} if tags else None,
        "exclude_tags": [_number(v) for v in form.getall("exclude_tags", []) if str(v).strip()],
        "channels": [str(v) for v in form.getall("channels", [])],
        "owner": None,
        "include_erased": bool(form.get("include_erased")),
    }
    owner = str(form.get("owner") or "")
    if owner == "is":
        raw["owner"] = {"op": "is", "userid": str(form.get("owner.userid") or "")}
    elif owner:
        raw["owner"] = {"op": owner}
    for name in (*RECENCIES, "first_purchase"):
        op = str(form.get(name) or "")
        if not op:
            raw[name] = None
        elif op == "never":
            raw[name] = {"op": "never"}
        else:
            raw[name] = {"op": op, "days": _number(str(form.get(f"{name}.days") or ""), digits=6)}
    raw["spent"] = _bounds_from_form(form, "spent", _fen)
    raw["orders"] = _bounds_from_form(form, "orders", lambda v: _number(v, digits=7))
    bought = _sku_list(str(form.get("bought") or ""))
    raw["bought"] = {"skus": bought, "match": str(form.get("bought.match") or "any")} if bought else None
    raw["not_bought"] = _sku_list(str(form.get("not_bought") or ""))
    return raw


def form_fields(definition: dict[str, Any] | Definition, name: str = "", description: str = "") -> dict[str, Any]:
    """What the editor's fields show for a definition (a checked one, or what a person typed)."""
    d = definition.as_json() if isinstance(definition, Definition) else definition
    tags = d.get("tags") or {}
    owner = d.get("owner") or {}
    fields: dict[str, Any] = {
        "name": name, "description": description,
        "tags": [str(t) for t in tags.get("ids", [])], "tags.match": tags.get("match", "any"),
        "exclude_tags": [str(t) for t in d.get("exclude_tags") or []],
        "channels": list(d.get("channels") or []),
        "owner": owner.get("op", ""), "owner.userid": owner.get("userid", "") or "",
        "include_erased": bool(d.get("include_erased")),
    }
    for recency in (*RECENCIES, "first_purchase"):
        rule = d.get(recency) or {}
        fields[recency] = rule.get("op", "")
        fields[f"{recency}.days"] = "" if rule.get("days") is None else str(rule["days"])
    spent, orders, bought = d.get("spent") or {}, d.get("orders") or {}, d.get("bought") or {}
    fields.update({
        "spent.at_least": _yuan(spent.get("at_least")), "spent.at_most": _yuan(spent.get("at_most")),
        "orders.at_least": "" if orders.get("at_least") is None else str(orders["at_least"]),
        "orders.at_most": "" if orders.get("at_most") is None else str(orders["at_most"]),
        "bought": ", ".join(str(v) for v in bought.get("skus", [])), "bought.match": bought.get("match", "any"),
        "not_bought": ", ".join(str(v) for v in d.get("not_bought") or []),
    })
    return fields


class SegmentsController(Controller):
    path = "/segments"
    guards = [tenant_staff]
    include_in_schema = False

    # --- the list ---------------------------------------------------------------------------------------

    @get("/")
    async def index(self, request: Request[Any, Any, Any]) -> Template:
        tid, _ = tenant_scope(request)
        return render(request, "segments/list.html", {
            "segments": await svc.list_segments(tid), "tag_names": await self._tag_names(tid),
        })

    @get("/{segment_id:int}/count")
    async def count(self, request: Request[Any, Any, Any], segment_id: FromPath[int]) -> Template:
        """One segment's live count, asked for by its row on the list once the page is shown."""
        tid, _ = tenant_scope(request)
        segment = await svc.get_segment(tid, segment_id)
        return render(request, "segments/_count.html", {
            "segment": segment, "count": await svc.count(tid, segment.definition), "as_of": clock.now()})

    # --- the editor ---------------------------------------------------------------------------------------

    async def _tag_names(self, tid: int) -> dict[int, str]:
        return {int(t["id"]): t["name"] for t in await contacts.list_tags(tid)}

    async def _editor(self, request: Request[Any, Any, Any], tid: int, scope: Scope, raw: dict[str, Any],
                      name: str = "", description: str = "", segment: svc.Segment | None = None,
                      errors: dict[str, str] | None = None, block: str | None = None, status_code: int = 200,
                      after: int | None = None) -> Template:
        """The editor page (or one of its blocks): the fields showing `raw` (a definition in the API's JSON
        shape, possibly wrong), the preview of what it selects now, and for a saved segment one page of its
        members."""
        if not _is_htmx(request):
            block = None  # a plain request always gets the whole page
        preview: svc.Breakdown | None = None
        sample: list[dict[str, Any]] = []
        preview_errors: dict[str, str] = {}
        if block in (None, "preview"):
            try:
                definition = await svc.validate_definition(tid, raw)
                preview = await svc.breakdown(tid, definition)
                sample = (await svc.members_of(tid, definition, limit=svc.SAMPLE_SIZE, scope=scope)).contacts
            except InvalidInput as exc:
                preview_errors = errors_for(exc)
        members = None
        if segment is not None and block in (None, "member_rows"):
            members = await svc.members(tid, segment.id, after, MEMBERS_PAGE, scope)
        whole = block is None  # the fields' choices are needed only when the form is drawn
        return render(request, "segments/edit.html", {
            "segment": segment, "form": form_fields(raw, name, description), "errors": errors or {},
            "tags": await contacts.list_tags(tid) if whole else [],
            "owners": await svc.known_owners(tid) if whole else [],
            "channels": CHANNELS, "recency_ops": RECENCY_OPS,
            "preview": preview, "sample": sample, "preview_errors": preview_errors, "as_of": clock.now(),
            "field_labels": {k: i18n.gettext(v) for k, v in FIELD_LABELS.items()},
            "members": members, "after": after, "scoped": not scope.everyone,
        }, block=block, status_code=status_code)

    @get("/new")
    async def new(self, request: Request[Any, Any, Any], contact_scope: NamedDependency[Scope]) -> Template:
        tid, _ = tenant_scope(request)
        return await self._editor(request, tid, contact_scope, Definition().as_json())

    @post("/preview")
    async def preview(self, request: Request[Any, Any, Any], contact_scope: NamedDependency[Scope]) -> Template:
        """What the editor's filters select now. htmx asks for the preview block as filters change; a plain
        form post ("Preview" without JavaScript) gets the whole editor back with the preview filled in."""
        tid, _ = tenant_scope(request)
        form = await request.form()
        segment = None
        raw_id = str(form.get("segment_id") or "")
        if raw_id.isdigit() and len(raw_id) < 10:
            segment = await svc.get_segment(tid, int(raw_id))
        return await self._editor(request, tid, contact_scope, definition_from_form(form),
                                  str(form.get("name") or ""), str(form.get("description") or ""), segment,
                                  block="preview")

    @post("/")
    async def create(self, request: Request[Any, Any, Any],
                     contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        raw = definition_from_form(form)
        name, description = str(form.get("name") or ""), str(form.get("description") or "")
        try:
            segment_id = await svc.do_create_segment(tid, name, raw, actor, description)
        except InvalidInput as exc:
            return await self._editor(request, tid, contact_scope, raw, name, description,
                                      errors=errors_for(exc), status_code=400)
        return _go(request, f"/segments/{segment_id}", i18n.gettext(N_("Segment saved.")))

    @get("/{segment_id:int}")
    async def detail(self, request: Request[Any, Any, Any], segment_id: FromPath[int],
                     contact_scope: NamedDependency[Scope]) -> Template:
        tid, _ = tenant_scope(request)
        segment = await svc.get_segment(tid, segment_id)
        raw_after = request.query_params.get("after") or ""
        after = None
        if raw_after:
            if not (raw_after.isascii() and raw_after.isdigit() and len(raw_after) < 10):
                raise InvalidInput.one("after", N_("Enter a whole number."))
            after = int(raw_after)
        # htmx's "load more" asks for the next rows only.
        return await self._editor(request, tid, contact_scope, segment.definition.as_json(), segment.name,
                                  segment.description, segment, after=after,
                                  block="member_rows" if after is not None else None)

    @post("/{segment_id:int}")
    async def update(self, request: Request[Any, Any, Any], segment_id: FromPath[int],
                     contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        segment = await svc.get_segment(tid, segment_id)  # a foreign id is a 404 before the form is judged
        form = await request.form()
        raw = definition_from_form(form)
        name, description = str(form.get("name") or ""), str(form.get("description") or "")
        try:
            await svc.do_update_segment(tid, segment_id, name, raw, actor, description)
        except InvalidInput as exc:
            return await self._editor(request, tid, contact_scope, raw, name, description, segment,
                                      errors=errors_for(exc), status_code=400)
        return _go(request, f"/segments/{segment.id}", i18n.gettext(N_("Segment saved.")))

    # --- deleting ------------------------------------------------------------------------------------------

    @get("/{segment_id:int}/delete")
    async def confirm_delete(self, request: Request[Any, Any, Any], segment_id: FromPath[int]) -> Template:
        tid, _ = tenant_scope(request)
        segment = await svc.get_segment(tid, segment_id)
        return render(request, "segments/delete.html", {
            "segment": segment, "count": await svc.count(tid, segment.definition),
            "tag_names": await self._tag_names(tid)})

    @post("/{segment_id:int}/delete")
    async def delete(self, request: Request[Any, Any, Any], segment_id: FromPath[int]) -> Response[Any]:
        tid, actor = tenant_scope(request)
        await svc.do_delete_segment(tid, segment_id, actor)
        return _go(request, "/segments", i18n.gettext(N_("Segment deleted.")))

