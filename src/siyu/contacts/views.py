"""Contact pages for the brand's staff (agents and admins): the searchable list, and one contact with its
identities, owners, tags, merges and unified timeline; the tag, merge, undo and note actions.

Every handler takes `contact_scope` (who the signed-in person may see, injected by the composition root from
the inbox's rule, see `siyu.contacts.scope`): the list and the merge candidates show only people in it, and
every route naming a contact or a merge outside it answers exactly like a missing one, before anything else
is judged. A contact in scope is shown whole, timeline included."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from siyu.commerce.stats import summary as purchase_summary
from siyu.contacts import bulk_tags, listing, privacy
from siyu.contacts import scope as scoping
from siyu.contacts import search as finder
from siyu.contacts import services as svc
from siyu.contacts.scope import Scope
from siyu.core import clock, i18n
from siyu.core.errors import Forbidden, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants.services import get_tenant
from siyu.timeline import services as timeline
from siyu.web.auth import tenant_staff
from siyu.web.media import media_response
from siyu.web.render import current_user, errors_for, render, tenant_scope, toast_header
from siyu.wechat import errors, media

TIMELINE_PAGE = 30
KIND_LABELS = {
    "followed": N_("Followed"), "unfollowed": N_("Unfollowed"), "message_in": N_("Message received"),
    "message_out": N_("Message sent"), "menu_click": N_("Menu click"), "scan": N_("Scanned a QR code"),
    "mp_login": N_("Mini Program login"), "purchase": N_("Purchase"), "wecom_added": N_("Added a sales rep"),
    "wecom_removed": N_("Removed by a sales rep"), "handoff": N_("Handed to an agent"), "assignment": N_("Assigned"),
    "resolution": N_("Resolved"), "broadcast_sent": N_("Re-engagement message sent"),
    "broadcast_skipped": N_("Re-engagement message skipped"), "broadcast_failed": N_("Re-engagement message failed"), "note": N_("Note"), "merged": N_("Merged"),
    "unmerged": N_("Merge undone"), "refund": N_("Refund"),
}
# How a follower came to the Official Account (user/info `subscribe_scene`).
SUBSCRIBE_SCENES = {
    "ADD_SCENE_SEARCH": N_("Searched for the account"), "ADD_SCENE_ACCOUNT_MIGRATION": N_("Account migration"),
    "ADD_SCENE_PROFILE_CARD": N_("Shared account card"), "ADD_SCENE_QR_CODE": N_("Scanned a QR code"),
    "ADD_SCENE_PROFILE_LINK": N_("Account name in an article"), "ADD_SCENE_PROFILE_ITEM": N_("Article menu"),
    "ADD_SCENE_PAID": N_("After a payment"), "ADD_SCENE_WECHAT_ADVERTISEMENT": N_("WeChat advertising"),
    "ADD_SCENE_REPRINT": N_("Reprinted article"), "ADD_SCENE_LIVESTREAM": N_("Channels live stream"),
    "ADD_SCENE_CHANNELS": N_("WeChat Channels"), "ADD_SCENE_WXA": N_("Mini Program"), "ADD_SCENE_OTHERS": N_("Other"),
}


# The list's filters, as the bulk form carries them (hidden fields).
LIST_FIELDS = ("q", "channel", "tag", "owner", "seen", "bought", "spent_min", "spent_max")
SEEN_LABELS = {"within:7": N_("In the last 7 days"), "within:30": N_("In the last 30 days"),
               "within:90": N_("In the last 90 days"), "more_than:30": N_("More than 30 days ago"),
               "more_than:90": N_("More than 90 days ago"), "more_than:365": N_("More than a year ago"),
               "never": N_("Never")}


def _int_param(request: Request[Any, Any, Any], name: str) -> int | None:
    raw = request.query_params.get(name) or ""
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidInput.one(name, N_("Use a number from 1 to {max}."), max=999999999)
    return int(raw)


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return bool(getattr(request, "htmx", None))


def _go(request: Request[Any, Any, Any], url: str, message: str | None = None) -> Response[Any]:
    """After an action that reshapes the page: htmx reloads it, a plain form follows a redirect."""
    if _is_htmx(request):
        headers = {"HX-Redirect": url, **(toast_header(message) if message else {})}
        return Response("", status_code=200, headers=headers)
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


async def _list(request: Request[Any, Any, Any], tid: int, filters: listing.ListFilters, cursor: str | None,
                scope: Scope, bulk_done: bool = False, headers: dict[str, str] | None = None) -> Template:
    """The list under these filters: the whole page, its results (a search, a filter, after a bulk action:
    then with the bulk form's tag choices out of band) or, with a cursor, the next rows."""
    page = await finder.search(tid, filters.q, cursor=cursor, scope=scope,
                               audience=await listing.audience_of(tid, filters))
    shown = filters.as_query()
    more_url = f"/contacts?{urlencode({**shown, 'cursor': page.next_cursor})}" if page.next_cursor else None
    # A "load more" asks for the next rows only; a search or filter change replaces the results. Only the
    # whole page has the filter and bulk forms, and so needs the tags and reps to choose from.
    whole = not _is_htmx(request)
    return render(request, "contacts/list.html", {
        "page": page, "filters": filters, "shown": shown, "more_url": more_url,
        "tags": await svc.list_tags(tid) if whole or bulk_done else [],
        "owners": await listing.owner_choices(tid) if whole else [],
        "seen_choices": SEEN_LABELS, "export_url": "/contacts/export.csv" + (f"?{urlencode(shown)}" if shown else ""),
        "can_export": _is_admin(request), "request_key": secrets.token_urlsafe(16), "bulk_done": bulk_done,
    }, block="rows" if cursor else "results", headers=headers)
MEDIA_MESSAGES = ("image", "voice", "video", "shortvideo", "file")


def _media_ref(event: timeline.Event) -> tuple[str, Any] | None:
    """How a message event names its picture, voice or video: WeChat's media id (what the customer sent) or
    the media row (a rep's picture)."""
    if event.kind not in ("message_in", "message_out") or event.payload.get("msg_type") not in MEDIA_MESSAGES:
        return None
    if isinstance(event.payload.get("media"), int):
        return ("row", int(event.payload["media"]))
    media_id = str(event.payload.get("MediaId") or event.payload.get("media_id") or "")
    return ("wechat", (event.channel, media_id)) if media_id else None


async def _event_media(tid: int, events: list[timeline.Event]) -> dict[int, Any]:
    """The media of a page of events, in two queries: event id → MediaView (None: not kept)."""
    refs = {e.id: ref for e in events if (ref := _media_ref(e)) is not None}
    by_wechat = await media.by_media_ids(tid, [r for kind, r in refs.values() if kind == "wechat"])
    by_row = await media.views(tid, [], [r for kind, r in refs.values() if kind == "row"])
    return {eid: (by_wechat.get(r) if kind == "wechat" else by_row.get(("row", r))) for eid, (kind, r) in refs.items()}


def _wechat_error(errcode: Any, reason: str = "") -> errors.Words:
    """An errcode WeChat answered about this person, in words (the one table of WeChat's errors)."""
    code = errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None
    return errors.describe(code, str(reason or ""))


class ContactsController(Controller):
    path = "/contacts"
    guards = [tenant_staff]
    include_in_schema = False

    # --- the list ---------------------------------------------------------------------------------------

    @get("/")
    async def index(self, request: Request[Any, Any, Any], contact_scope: NamedDependency[Scope]) -> Template:
        tid, _ = tenant_scope(request)
        filters = listing.parse_filters(request.query_params)
        cursor = request.query_params.get("cursor") or None
        return await _list(request, tid, filters, cursor, contact_scope)

    @get("/export.csv")
    async def export_csv(self, request: Request[Any, Any, Any], contact_scope: NamedDependency[Scope]) -> Stream:
        """Every contact the list shows under the same filters, as CSV (tenant admins; audited)."""
        tid, actor = tenant_scope(request)
        _admin_only(request, N_("Only the brand's administrators can export the contact list."))
        filters = listing.parse_filters(request.query_params)
        found = await listing.audience_of(tid, filters)
        tenant = await get_tenant(tid)
        await listing.do_record_export(tid, filters, actor)
        stamp = clock.now().astimezone(ZoneInfo(tenant.timezone)).strftime("%Y%m%d-%H%M")
        return Stream(listing.export_csv(tid, filters, found, tenant.timezone, contact_scope),
                      media_type="text/csv; charset=utf-8",
                      headers={"Content-Disposition": f'attachment; filename="contacts-{tenant.slug}-{stamp}.csv"',
                               "Cache-Control": "no-store"})

    @post("/bulk")
    async def bulk_action(self, request: Request[Any, Any, Any],
                          contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        """Tag or untag the ticked contacts now, or every contact the filters select as a job (its progress
        page next). A rep reaches only the contacts in their scope."""
        tid, actor = tenant_scope(request)
        form = await request.form()
        filters = listing.parse_filters({k: str(form.get(k) or "") for k in LIST_FIELDS})
        back = "/contacts" + (f"?{urlencode(filters.as_query())}" if filters.as_query() else "")
        action = str(form.get("action") or "")
        name = str(form.get("name") or "")
        raw_tag = str(form.get("tag_id") or "")
        tag_id = int(raw_tag) if raw_tag.isascii() and raw_tag.isdigit() and len(raw_tag) < 11 else None
        if str(form.get("target") or "") == "all":
            user = current_user(request)
            assert user is not None
            action_id = await bulk_tags.do_start(tid, filters, action, name, tag_id, str(form.get("request_key") or ""),
                                            actor, user.id, contact_scope)
            return _go(request, f"/contacts/bulk/{action_id}")
        ids = [int(v) for v in form.getall("contact", []) if isinstance(v, str) and v.isascii() and v.isdigit()
               and len(v) < 11]
        done = await bulk_tags.do_tag_selected(tid, ids, action, name, tag_id, actor, contact_scope)
        message = i18n.gettext(N_("Tag added (contacts: {n}).") if action == "tag"
                               else N_("Tag removed (contacts: {n}).")).format(n=done.matched)
        if _is_htmx(request):  # the list again in place (its tags changed), the boxes cleared, and a toast
            return await _list(request, tid, filters, None, contact_scope, bulk_done=True,
                               headers=toast_header(message))
        return _go(request, back, message)

    @get("/bulk/{action_id:int}")
    async def bulk_progress(self, request: Request[Any, Any, Any], action_id: FromPath[int]) -> Template:
        """An action on every matching contact: how far it got (refreshed while it runs). Its starter and the
        brand's administrators see it; anyone else gets a 404, as for a missing one."""
        tid, _ = tenant_scope(request)
        user = current_user(request)
        assert user is not None
        found = await bulk_tags.get_action(tid, action_id, None if _is_admin(request) else user.id)
        back = "/contacts" + (f"?{urlencode(found['filters'])}" if found["filters"] else "")
        return render(request, "contacts/bulk.html", {"action": found, "back": back,
                                                      "running": found["state"] in ("queued", "running")},
                      block="progress")

    @get("/pick")
    async def pick(self, request: Request[Any, Any, Any], contact_scope: NamedDependency[Scope]) -> Template:
        """Candidates for a manual merge, as buttons of the merge form."""
        tid, _ = tenant_scope(request)
        q = request.query_params.get("q") or ""
        exclude = _int_param(request, "exclude")
        found = (await finder.search(tid, q, limit=8, scope=contact_scope) if q.strip()
                 else finder.ContactPage([], None))
        return render(request, "contacts/_pick.html",
                      {"candidates": [c for c in found.contacts if c["id"] != exclude], "q": q})

    # --- one contact ------------------------------------------------------------------------------------

    async def _contact(self, request: Request[Any, Any, Any], contact_id: int, contact_scope: Scope,
                       block: str | None = None, status_code: int = 200, headers: dict[str, str] | None = None,
                       **extra: Any) -> Template | Response[Any]:
        tid, _ = tenant_scope(request)
        await scoping.require(tid, contact_scope, contact_id)
        contact = await svc.get_contact(tid, contact_id)
        if contact["merged_into"] is not None:
            return Redirect(f"/contacts/{contact['merged_into']}")
        channels = request.query_params.getall("channel", []) if block in (None, "timeline", "events") else []
        kinds = request.query_params.getall("kind", []) if block in (None, "timeline", "events") else []
        cursor = request.query_params.get("cursor") if block in (None, "events") else None
        page = await timeline.page(tid, contact_id, cursor, TIMELINE_PAGE, channels or None, kinds or None)
        query = [("channel", c) for c in channels] + [("kind", k) for k in kinds]
        more_url = (f"/contacts/{contact_id}?{urlencode([*query, ('cursor', page.next_cursor)])}"
                    if page.next_cursor else None)
        return render(request, "contacts/detail.html", {
            "contact": contact,
            "identities": await svc.identities_of(tid, contact_id),
            "owners": await svc.owners_of(tid, contact_id, include_removed=True),
            "tags": await svc.tags_of(tid, contact_id),
            "all_tags": await svc.list_tags(tid),
            "merges": await svc.list_merges(tid, contact_id),
            "events": page.events, "more_url": more_url,
            "event_media": await _event_media(tid, page.events),
            "chosen_channels": channels, "chosen_kinds": kinds,
            "event_channels": timeline.CHANNELS, "event_kinds": timeline.KINDS,
            "kind_labels": {k: i18n.gettext(v) for k, v in KIND_LABELS.items()},
            "scene_labels": {k: i18n.gettext(v) for k, v in SUBSCRIBE_SCENES.items()},
            "purchases": await purchase_summary(tid, contact_id) if block is None or not _is_htmx(request) else None,
            "wechat_error": _wechat_error, "stored_error": errors.describe_stored,
            **extra,
        }, block=block, status_code=status_code, headers=headers)

    @get("/{contact_id:int}")
    async def detail(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                     contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        # htmx asks for the timeline: the next events (infinite scroll) or a new filter.
        block = "events" if request.query_params.get("cursor") else "timeline"
        return await self._contact(request, contact_id, contact_scope, block=block)

    @get("/{contact_id:int}/events/{event_id:int}/media")
    async def event_media(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                          event_id: FromPath[int]) -> Response[Any]:
        """The picture, voice (`?play=1`: as MP3) or video of a timeline message, to those who may see the
        contact (another tenant's, or a contact out of reach, is a 404 like a missing one)."""
        tid, _ = tenant_scope(request)
        await svc.get_contact(tid, contact_id)
        event = await timeline.get_event(tid, contact_id, event_id)
        view = (await _event_media(tid, [event])).get(event.id)
        if view is None:
            raise NotFound()
        served = await media.open_media(tid, view.id, playable=request.query_params.get("play") == "1")
        return media_response(served.data, served.content_type, served.filename, served.inline)

    @post("/{contact_id:int}/tags")
    async def tag(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                  contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        name = str(form.get("name") or "")
        # A foreign id (another tenant's, or outside the person's scope) is a 404 before the name is judged.
        await scoping.require(tid, contact_scope, contact_id)
        await svc.get_contact(tid, contact_id)
        try:
            await svc.do_tag(tid, contact_id, name, actor)
        except InvalidInput as exc:
            return await self._contact(request, contact_id, contact_scope, block="tags", status_code=400,
                                       form={"name": name}, errors=errors_for(exc))
        return await self._contact(request, contact_id, contact_scope, block="tags",
                                   headers=toast_header(i18n.gettext(N_("Tag added."))))

    @post("/{contact_id:int}/tags/{tag_id:int}/delete")
    async def untag(self, request: Request[Any, Any, Any], contact_id: FromPath[int], tag_id: FromPath[int],
                    contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        await scoping.require(tid, contact_scope, contact_id)
        if not await svc.do_untag(tid, contact_id, tag_id, actor):
            raise NotFound()
        return await self._contact(request, contact_id, contact_scope, block="tags",
                                   headers=toast_header(i18n.gettext(N_("Tag removed."))))

    @post("/{contact_id:int}/merge")
    async def merge(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                    contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        """Merge another contact into this one (an agent found the same person twice). Both must be in the
        person's scope: merging someone in would show them their whole history."""
        tid, actor = tenant_scope(request)
        form = await request.form()
        other = str(form.get("other") or "")
        await scoping.require(tid, contact_scope, contact_id)
        await svc.get_contact(tid, contact_id)
        try:
            other_id = await finder.find_live(tid, other, contact_scope)
            await svc.do_merge(tid, contact_id, other_id, "manual", actor)
        except InvalidInput as exc:
            errors = errors_for(exc)
            if "merged_id" in errors:
                errors["other"] = errors.pop("merged_id")
            return await self._contact(request, contact_id, contact_scope, block="merge", status_code=400,
                                       form={"other": other}, errors=errors)
        return _go(request, f"/contacts/{contact_id}", i18n.gettext(N_("Contacts merged.")))

    @post("/merges/{merge_id:int}/undo")
    async def undo(self, request: Request[Any, Any, Any], merge_id: FromPath[int],
                   contact_scope: NamedDependency[Scope]) -> Response[Any]:
        """Undo a merge; an undone one answers 409 (the error handler shows its message). A merge is seen
        through its survivor: outside the person's scope it answers like a missing one."""
        tid, actor = tenant_scope(request)
        await scoping.require_merge(tid, contact_scope, merge_id)
        form = await request.form()
        await svc.do_unmerge(tid, merge_id, actor)
        back = str(form.get("back") or "")
        url = f"/contacts/{back}" if back.isdigit() and len(back) < 10 else "/contacts"
        return _go(request, url, i18n.gettext(N_("Merge undone.")))

    @post("/{contact_id:int}/notes")
    async def note(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                   contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        tid, actor = tenant_scope(request)
        form = await request.form()
        text = str(form.get("text") or "")
        await scoping.require(tid, contact_scope, contact_id)
        await svc.get_contact(tid, contact_id)
        try:
            await svc.do_add_note(tid, contact_id, text, actor)
        except InvalidInput as exc:
            return await self._contact(request, contact_id, contact_scope, block="timeline", status_code=400,
                                       form={"text": text}, errors=errors_for(exc))
        if not _is_htmx(request):
            return Redirect(f"/contacts/{contact_id}", status_code=HTTP_303_SEE_OTHER)
        return await self._contact(request, contact_id, contact_scope, block="timeline",
                                   headers=toast_header(i18n.gettext(N_("Note added."))))

    # --- data-subject requests --------------------------------------------------------------------------

    @get("/{contact_id:int}/export")
    async def export(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                     contact_scope: NamedDependency[Scope]) -> Response[Any]:
        """Everything Siyu holds about this person, as a JSON download (audited). Tenant admins only (a rep
        gets 403 for a contact they may see, 404 like a missing one for any other)."""
        tid, actor = tenant_scope(request)
        await scoping.require(tid, contact_scope, contact_id)
        _admin_only(request)
        doc = await privacy.export_contact(tid, contact_id, actor)
        return Response(json.dumps(doc, ensure_ascii=False, indent=2), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="contact-{doc["contact"]["id"]}.json"'})

    @post("/{contact_id:int}/erase")
    async def erase(self, request: Request[Any, Any, Any], contact_id: FromPath[int],
                    contact_scope: NamedDependency[Scope]) -> Template | Response[Any]:
        """Erase this person's personal information (a data-subject request), with the request's reference."""
        tid, actor = tenant_scope(request)
        await scoping.require(tid, contact_scope, contact_id)
        _admin_only(request)
        form = await request.form()
        reason = str(form.get("reason") or "")
        try:
            await privacy.do_erase_contact(tid, contact_id, reason, actor)
        except InvalidInput as exc:
            return await self._contact(request, contact_id, contact_scope, block="privacy", status_code=400,
                                       privacy_form={"reason": reason}, privacy_errors=errors_for(exc))
        return _go(request, f"/contacts/{contact_id}", i18n.gettext(N_("Personal information erased.")))


def _is_admin(request: Request[Any, Any, Any]) -> bool:
    user = current_user(request)
    return user is not None and user.role == "tenant_admin"


def _admin_only(request: Request[Any, Any, Any],
                message: str = N_("Only the brand's administrators can export or erase a person's data.")) -> None:
    if not _is_admin(request):
        raise Forbidden(message)
