"""The reps' inbox (`/inbox`): three panes — the conversation list of a box, the open thread with its
composer, the contact — kept live by server-sent events (`/inbox/stream`, see `live`); and the canned
replies page (`/inbox/canned`).

Views validate and render; the `do_*` services in `actions` and `canned` act. Every read is scoped by the
signed-in person's `Viewer`, so a conversation out of their scope (or of another tenant) is a 404 like a
missing one. htmx asks for the fragment it swaps (a partial template); a plain request gets the page.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from siyu.contacts import services as contacts
from siyu.contacts.views import KIND_LABELS
from siyu.core import clock, i18n
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox import actions, boxes, canned, live
from siyu.inbox.config import get_settings
from siyu.inbox.conversations import Viewer, get_conversation, viewer_for
from siyu.tenants import staff as staff_svc
from siyu.tenants.services import Actor
from siyu.timeline import services as timeline
from siyu.web.auth import SESSION_COOKIE, AccessWatch, client_ip, require_tenant_id, tenant_staff
from siyu.web.media import media_response
from siyu.web.render import current_user, errors_for, render, toast_header
from siyu.wechat import consents, errors, media, windows

CONTACT_EVENTS = 8  # timeline events in the contact panel; the contact page has them all
IMAGE_BODY_MAX = 12 * 1024 * 1024  # a picture up to WeCom's 10 MB, with the form around it

STATUS_LABELS = {"bot": N_("With the bot"), "queued": N_("Waiting"), "assigned": N_("Assigned"),
                 "snoozed": N_("Snoozed"), "resolved": N_("Resolved")}
STATUS_FILTER_LABELS = {"open": N_("Open"), "queued": N_("Waiting"), "assigned": N_("Assigned"),
                        "snoozed": N_("Snoozed"), "resolved": N_("Resolved"), "bot": N_("With the bot"),
                        "any": N_("Any status")}
BOX_LABELS = {"mine": N_("Mine"), "unassigned": N_("Unassigned"), "all": N_("All")}
PRESENCE_LABELS = {"online": N_("online"), "away": N_("away"), "offline": N_("offline")}
SNOOZE_LABELS = {"1h": N_("1 hour"), "4h": N_("4 hours"), "1d": N_("1 day"), "3d": N_("3 days")}
RULE_WORDS = {"owner": N_("the customer's own rep"), "recent": N_("served them last"),
              "least_loaded": N_("least busy"), "manual": N_("by hand"), "reopen": N_("reopened"),
              "follow_up": N_("the customer wrote again after it was resolved")}
REASON_WORDS = {"keyword": N_("the customer asked for a human"), "menu": N_("the customer tapped “talk to a human”"),
                "unanswered": N_("the bot could not answer"), "vip": N_("a VIP customer"),
                "api": N_("requested through the API"), "manual": N_("transferred to a team"),
                "sla": N_("no first reply in time"), "follow_up": N_("the customer wrote again after it was resolved")}
ACTOR_WORDS = {"bot": N_("the bot"), "system": N_("Siyu"), "siyu": N_("Siyu"), "routing": N_("routing"),
               "customer": N_("the customer"), "api": N_("the API"), "sla": N_("the first-reply deadline"),
               "snooze": N_("the snooze timer")}
SYSTEM_LINES = {"assigned": N_("Assigned to {to} ({rule}) by {by}"), "queued": N_("Waiting for a rep: {reason}"),
                "resolved": N_("Resolved by {by}"), "snoozed": N_("Snoozed by {by} until {until}"),
                "reopened": N_("Reopened by {by}"), "menu_handoff": N_("The customer tapped “talk to a human”"),
                "followed": N_("The customer followed the Official Account"),
                "menu_click": N_("The customer tapped the menu button {key}")}
# A follow-up an auto-reply answered stays with the bot (`handoff._customer_message`): the thread says why.
BACK_TO_BOT = N_("The customer wrote again and an auto-reply answered, so the bot has it; their next message "
                 "the bot cannot answer goes to a person at once.")


# --- words ---------------------------------------------------------------------------------------------

def _t(msgid: str, **params: Any) -> str:
    text = i18n.gettext(msgid)
    return text.format(**params) if params else text


def _actor(label: str) -> str:
    if label.startswith("api-key:"):
        return _t(ACTOR_WORDS["api"])
    return _t(ACTOR_WORDS[label]) if label in ACTOR_WORDS else label


def _local(value: datetime | None) -> str:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%m-%d %H:%M") if value else ""


def system_text(body: str) -> str:
    """A system line's JSON ({"event": …, params}) in the reader's language."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("event") not in SYSTEM_LINES:
        return body
    event = data["event"]
    by = _actor(str(data.get("by") or "system"))
    if event == "assigned":
        rule = str(data.get("rule") or "manual")
        return _t(SYSTEM_LINES[event], to=str(data.get("to") or ""), by=by,
                  rule=_t(RULE_WORDS[rule]) if rule in RULE_WORDS else rule)
    if event == "queued":
        reason = str(data.get("reason") or "")
        words = _t(REASON_WORDS[reason]) if reason in REASON_WORDS else (reason or by)
        return _t(SYSTEM_LINES[event], reason=words)
    if event == "snoozed":
        until = str(data.get("until") or "")
        with contextlib.suppress(ValueError):
            until = _local(datetime.fromisoformat(until))
        return _t(SYSTEM_LINES[event], by=by, until=until)
    if event == "reopened" and data.get("reason") == "auto_reply":
        return _t(BACK_TO_BOT)
    if event == "menu_click":
        return _t(SYSTEM_LINES[event], key=str(data.get("key") or ""))
    return _t(SYSTEM_LINES[event], by=by)


MEDIA_MESSAGES = ("image", "voice", "video", "shortvideo", "file")


def _media_key(message: dict[str, Any]) -> tuple[str, int] | None:
    """How a message names its medium: a rep's picture by its row, a customer's by the callback it came with."""
    if message.get("media_ref") is not None:
        return ("row", int(message["media_ref"]))
    source = str(message.get("source_key") or "")
    if message["msg_type"] in MEDIA_MESSAGES and source.startswith("wechat:") and source[7:].isdigit():
        return ("event", int(source[7:]))
    return None


async def _media_of(tid: int, thread: list[dict[str, Any]]) -> dict[tuple[str, int], media.MediaView]:
    keys = [k for k in (_media_key(m) for m in thread) if k is not None]
    return await media.views(tid, [i for kind, i in keys if kind == "event"], [i for kind, i in keys if kind == "row"])


def _shown(message: dict[str, Any], found: dict[tuple[str, int], media.MediaView] | None = None) -> dict[str, Any]:
    """A message with what the thread shows beside its stored fields: its picture, voice or video (and why it
    is not there), why it did not go (in words, with what to do, from the one table of WeChat's errors) and
    whether "Try again" can help."""
    out = dict(message)
    if message["direction"] == "out" and message["author_label"] == "bot":
        out["author_label"] = _t(N_("Bot"))
    key = _media_key(message)
    if key is not None:
        view = (found or {}).get(key)
        out["media"] = view
        out["media_words"] = _t(media.KIND_WORDS.get(view.kind if view else _kind_of(message), N_("File")))
        if view is not None and view.state == "failed":
            words = errors.describe_stored(view.error)
            out["media_failure"] = f"{words.summary} {words.advice}"
    if message["direction"] == "system":
        out["text"] = system_text(message["body"])
    elif message["status"] in ("failed", "unknown"):
        error = message["error"] or (actions.OUTCOME_UNKNOWN if message["status"] == "unknown" else "")
        words = actions.failure(error)
        out["failure"], out["advice"] = words.summary, words.advice
        out["can_retry"] = actions.retry_helps(message) and not message.get("resent_as")
    if message.get("delivery") == "not_delivered":
        words = actions.failure(message["error"] or "")
        out["failure"], out["advice"] = words.summary, words.advice
    return out


def _kind_of(message: dict[str, Any]) -> str:
    return {"shortvideo": "video"}.get(message["msg_type"], message["msg_type"])


def window_words(channel: str, state: windows.WindowState) -> str:
    """"3 of 5 left · closes in 31 h", or why nothing can be sent."""
    if not state.can_send:
        return errors.describe(state.refusal or 45015).summary
    rule = windows.RULES[channel]
    quota = rule.user_quota if state.slot == "user" else rule.event_quota
    if state.closes_at is None:
        return _t(N_("{remaining} of {quota} left"), remaining=state.remaining, quota=quota)
    seconds = max(0, int((state.closes_at - clock.now()).total_seconds()))
    if seconds > 3600:  # rounded up: "closes in 31 h" means before 31 hours have passed
        return _t(N_("{remaining} of {quota} left · closes in {hours} h"), remaining=state.remaining, quota=quota,
                  hours=-(-seconds // 3600))
    return _t(N_("{remaining} of {quota} left · closes in {minutes} min"), remaining=state.remaining, quota=quota,
              minutes=max(1, -(-seconds // 60)))


def alternatives(channel: str, state: windows.WindowState, owner_names: list[str],
                 buttons: frozenset[str] = frozenset()) -> list[str]:
    """What the rep can do instead when WeChat would refuse a reply: legal ways to reach the customer, in
    words; those the pane offers as buttons (`buttons`: "notice", "wecom") are not repeated."""
    if state.can_send:
        return []
    out = [_t(N_("Wait for the customer to write again: their next message opens 5 replies within 48 hours."))]
    if channel == "oa" and "notice" not in buttons:
        out.append(_t(N_("Send a template message (it needs a template approved for the Official Account).")))
    elif channel == "mp":
        out.append(_t(N_("Send a subscription notification (only if the customer accepted one).")))
    if owner_names and "wecom" not in buttons:
        out.append(_t(N_("Write to them 1:1 on WeCom: {names} added this customer as a contact."),
                      names=", ".join(owner_names)))
    return out


# --- request helpers -----------------------------------------------------------------------------------

def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return bool(getattr(request, "htmx", None))


async def _who(request: Request[Any, Any, Any]) -> tuple[int, Viewer, Actor]:
    user = current_user(request)
    assert user is not None
    tid = require_tenant_id(user)
    return tid, await viewer_for(tid, user.id), user.actor(client_ip(request))


def _filter(request: Request[Any, Any, Any], viewer: Viewer) -> boxes.ListFilter:
    q = request.query_params
    return boxes.parse_filter(viewer, q.get("box"), q.get("status"), q.get("q"))


def _labels() -> dict[str, Any]:
    t = i18n.gettext
    return {"status_labels": {k: t(v) for k, v in STATUS_LABELS.items()},
            "status_filter_labels": {k: t(v) for k, v in STATUS_FILTER_LABELS.items()},
            "box_labels": {k: t(v) for k, v in BOX_LABELS.items()},
            "presence_labels": {k: t(v) for k, v in PRESENCE_LABELS.items()},
            "snooze_labels": {k: t(v) for k, v in SNOOZE_LABELS.items()},
            "kind_labels": {k: t(v) for k, v in KIND_LABELS.items()}}


async def _list_context(tid: int, viewer: Viewer, f: boxes.ListFilter, cursor: str | None,
                        current: int | None) -> dict[str, Any]:
    page = await boxes.conversations(tid, viewer, f, cursor)
    query = urlencode(f.as_query())
    more = f"/inbox?{urlencode({**f.as_query(), 'cursor': page.next_cursor})}" if page.next_cursor else None
    return {"rows": page.rows, "more_url": more, "filter": f, "query": query, "current_id": current,
            "counts": await boxes.counts(tid, viewer), "viewer": viewer}


async def _conversation_context(tid: int, viewer: Viewer, conversation_id: int, query: str) -> dict[str, Any]:
    """The middle and right panes: thread, composer and contact (a fixed number of queries)."""
    conv = await _opened(tid, viewer, await get_conversation(tid, viewer, conversation_id))
    live_ctx = await _live_context(tid, viewer, conv, query)
    contact_id = int(conv["contact"])
    events = await timeline.page(tid, contact_id, None, CONTACT_EVENTS)
    mine = conv["assignee"] == viewer.staff_id
    return {
        **live_ctx,
        "contact": await contacts.get_contact(tid, contact_id),
        "identities": await contacts.identities_of(tid, contact_id),
        "tags": await contacts.tags_of(tid, contact_id),
        "events": events.events,
        "canned": canned.composer_choices(await canned.list_canned(tid, viewer.staff_id)),
        "can_transfer": mine or viewer.is_manager,
        "reps": await boxes.reps(tid) if (mine or viewer.is_manager) else [],
        "teams": await staff_svc.list_teams(tid) if (mine or viewer.is_manager) else [],
    }


async def _opened(tid: int, viewer: Viewer, conv: dict[str, Any]) -> dict[str, Any]:
    """The rep who has it is looking at it: nothing is unread any more."""
    if conv["unread"] and conv["assignee"] == viewer.staff_id and await actions.do_mark_read(tid, viewer, conv["id"]):
        return {**conv, "unread": 0}
    return conv


ANSWER_WITHIN = timedelta(days=2)


async def _answering(tid: int, conv: dict[str, Any]) -> timeline.Event | None:
    """The re-engagement message the customer is most likely answering: the newest one sent to them on this
    channel before their last message, within two days of it (from the timeline, where re-engagement writes
    every message it sends)."""
    last_in = conv.get("last_inbound_at")
    if last_in is None:
        return None
    page = await timeline.page(tid, int(conv["contact"]), None, 5, channels=[conv["channel"]], kinds=["broadcast_sent"])
    return next((e for e in page.events if e.occurred_at <= last_in and last_in - e.occurred_at <= ANSWER_WITHIN), None)


async def _live_context(tid: int, viewer: Viewer, conv: dict[str, Any], query: str) -> dict[str, Any]:
    """The part of the conversation pane that changes live: header, messages, the reply window."""
    thread, earlier = await boxes.messages(tid, conv["id"])
    found = await _media_of(tid, thread)
    state = await actions.window_for(tid, conv)
    owners = await actions.wecom_owners(tid, int(conv["contact"]))  # named as Siyu reps where they are
    holder = conv["assignee"] == viewer.staff_id or viewer.is_manager
    via_wecom = owners if holder and not state.can_send else []
    notice = None
    if holder and not state.can_send and conv["channel"] in ("oa", "mp"):
        template = (await get_settings(tid)).notice_for(conv["channel"])
        left = None
        if template is not None and template.kind == "subscribe":
            left = await consents.remaining(tid, conv["channel"], conv["external_id"], template.template_id)
        notice = {"set": template is not None, "ready": template is not None and left != 0,
                  "max": template.text_max if template else 0, "channel": conv["channel"], "left": left}
    return {
        "conv": conv, "messages": [_shown(m, found) for m in thread], "earlier": earlier,
        "answering": await _answering(tid, conv),
        "image_max_mb": media.UPLOAD_MAX.get(conv["channel"], media.UPLOAD_MAX["oa"]) // (1024 * 1024),
        "window": state, "window_text": window_words(conv["channel"], state),
        "alternatives": alternatives(conv["channel"], state, [o["label"] for o in owners], frozenset(
            (["notice"] if notice and notice["ready"] else []) + (["wecom"] if via_wecom else []))),
        "owners": owners, "via_wecom": via_wecom, "notice": notice,
        "can_take": conv["status"] != "resolved" and not (conv["status"] == "assigned"
                                                          and conv["assignee"] == viewer.staff_id),
        "can_resolve": conv["status"] in ("bot", "queued") or (conv["status"] in ("assigned", "snoozed") and holder),
        "can_snooze": conv["status"] == "assigned" and holder,
        "can_reopen": conv["status"] == "resolved",
        "snooze_choices": list(actions.SNOOZE_CHOICES), "viewer": viewer, "query": query,
    }


async def _after_send(request: Request[Any, Any, Any], tid: int, viewer: Viewer,
                      conversation_id: int) -> Template | Response[Any]:
    """After a reply, note or notice: back to the conversation (plain form), or its live part (htmx)."""
    if not _is_htmx(request):
        return Redirect(_back(request, conversation_id), status_code=HTTP_303_SEE_OTHER)
    conv = await get_conversation(tid, viewer, conversation_id)
    return render(request, "inbox/_live.html", {**await _live_context(tid, viewer, conv, _keep(request)),
                                                **_labels()},
                  headers={"HX-Trigger": json.dumps({"inbox:sent": {"id": conversation_id}})})


def _keep(request: Request[Any, Any, Any]) -> str:
    """The list's box, status and search, carried along in the URLs of the conversation pane."""
    raw = request.query_params
    return urlencode({k: str(raw.get(k))[:100] for k in ("box", "status", "q") if raw.get(k)})


def _back(request: Request[Any, Any, Any], conversation_id: int | None = None) -> str:
    keep = _keep(request)
    base = f"/inbox/conversations/{conversation_id}" if conversation_id else "/inbox"
    return f"{base}?{keep}" if keep else base


async def _form(request: Request[Any, Any, Any]) -> dict[str, Any]:
    form = await request.form()
    return {k: form.get(k) for k in form}


class InboxController(Controller):
    path = "/inbox"
    guards = [tenant_staff]
    include_in_schema = False

    # --- the page and its list ------------------------------------------------------------------------

    async def _page(self, request: Request[Any, Any, Any], tid: int, viewer: Viewer,
                    conversation_id: int | None = None) -> Template:
        f = _filter(request, viewer)
        ctx = await _list_context(tid, viewer, f, request.query_params.get("cursor") or None, conversation_id)
        ctx["alerts"] = await actions.alerts_of(tid, viewer.staff_id)
        if conversation_id is not None:
            ctx.update(await _conversation_context(tid, viewer, conversation_id, urlencode(f.as_query())))
        user = current_user(request)
        assert user is not None
        return render(request, "inbox/index.html", {
            **ctx, **_labels(), "presence": await actions.presence_of(tid, user.id),
            "status_filters": list(boxes.STATUS_FILTERS), "boxes": boxes.BOXES if viewer.is_manager else boxes.BOXES[:2],
        })

    @get("/")
    async def index(self, request: Request[Any, Any, Any]) -> Template:
        tid, viewer, _ = await _who(request)
        if not _is_htmx(request):
            return await self._page(request, tid, viewer)
        f = _filter(request, viewer)
        cursor = request.query_params.get("cursor") or None
        current = request.query_params.get("current") or ""
        ctx = await _list_context(tid, viewer, f, cursor, int(current) if current.isdigit() and len(current) < 16 else None)
        # "Load more" appends rows; a box, filter or search change replaces the list pane.
        template = "inbox/_rows.html" if cursor else "inbox/_list.html"
        return render(request, template, {**ctx, **_labels(), "status_filters": list(boxes.STATUS_FILTERS),
                                          "boxes": boxes.BOXES if viewer.is_manager else boxes.BOXES[:2]},
                      headers={"HX-Push-Url": f"/inbox?{urlencode(f.as_query())}"} if not cursor else None)

    @get("/counts")
    async def counts(self, request: Request[Any, Any, Any]) -> Template:
        tid, viewer, _ = await _who(request)
        f = _filter(request, viewer)
        return render(request, "inbox/_counts.html", {
            "counts": await boxes.counts(tid, viewer), "filter": f, "query": urlencode(f.as_query()), **_labels(),
            "boxes": boxes.BOXES if viewer.is_manager else boxes.BOXES[:2]})

    # --- one conversation -----------------------------------------------------------------------------

    @get("/conversations/{conversation_id:int}")
    async def conversation(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template:
        tid, viewer, _ = await _who(request)
        if not _is_htmx(request):
            return await self._page(request, tid, viewer, conversation_id)
        ctx = await _conversation_context(tid, viewer, conversation_id, _keep(request))
        return render(request, "inbox/_conversation.html", {**ctx, **_labels()})

    @get("/conversations/{conversation_id:int}/live")
    async def live_part(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template:
        """The thread's changing part, re-fetched when a live event names this conversation."""
        tid, viewer, _ = await _who(request)
        conv = await _opened(tid, viewer, await get_conversation(tid, viewer, conversation_id))
        return render(request, "inbox/_live.html", {**await _live_context(tid, viewer, conv, _keep(request)),
                                                    **_labels()})

    @get("/conversations/{conversation_id:int}/messages")
    async def earlier(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template:
        """Earlier messages of a thread ("load earlier")."""
        tid, viewer, _ = await _who(request)
        raw = request.query_params.get("before") or ""
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidInput.one("before", N_("Enter a whole number."))
        conv = await get_conversation(tid, viewer, conversation_id)
        thread, earlier = await boxes.messages(tid, conv["id"], int(raw))
        found = await _media_of(tid, thread)
        return render(request, "inbox/_messages.html", {"conv": conv, "messages": [_shown(m, found) for m in thread],
                                                        "earlier": earlier, **_labels()})

    @get("/conversations/{conversation_id:int}/row")
    async def row(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template:
        """One list row as the box and filter show it (live updates): empty when it left the box."""
        tid, viewer, _ = await _who(request)
        f = _filter(request, viewer)
        conv = await boxes.conversation_in(tid, viewer, f, conversation_id)
        current = request.query_params.get("current") or ""
        return render(request, "inbox/_row.html", {
            "c": conv, "filter": f, "query": urlencode(f.as_query()), "viewer": viewer, **_labels(),
            "current_id": int(current) if current.isdigit() and len(current) < 16 else None})

    async def _after_action(self, request: Request[Any, Any, Any], tid: int, viewer: Viewer, conversation_id: int,
                            message: str) -> Template | Response[Any]:
        """Answer an action with the conversation as it is now, or, when it left the viewer's scope (resolved
        or given away), with the empty pane."""
        headers = toast_header(i18n.gettext(message))
        if not _is_htmx(request):
            try:
                await get_conversation(tid, viewer, conversation_id)
            except NotFound:
                return Redirect(_back(request), status_code=HTTP_303_SEE_OTHER)
            return Redirect(_back(request, conversation_id), status_code=HTTP_303_SEE_OTHER)
        try:
            ctx = await _conversation_context(tid, viewer, conversation_id, _keep(request))
        except NotFound:
            return render(request, "inbox/_gone.html", {**_labels()}, headers={**headers, "HX-Push-Url": _back(request)})
        return render(request, "inbox/_conversation.html", {**ctx, **_labels()}, headers=headers)

    @post("/conversations/{conversation_id:int}/reply")
    async def reply(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        """Send a reply (queued as `sending`, live to `sent` / `failed`), or add an internal note."""
        tid, viewer, _ = await _who(request)
        form = await _form(request)
        text = await canned.expand_shortcut(tid, viewer.staff_id, str(form.get("text") or ""))
        as_note = str(form.get("note") or "") in ("1", "on", "true")
        if as_note:
            await actions.do_note(tid, viewer, conversation_id, text)
        else:
            await actions.do_reply(tid, viewer, conversation_id, text)
        return await _after_send(request, tid, viewer, conversation_id)

    @post("/conversations/{conversation_id:int}/wecom-task")
    async def wecom_task(self, request: Request[Any, Any, Any],
                         conversation_id: FromPath[int]) -> Template | Response[Any]:
        """Write to the customer 1:1 through a WeCom rep who added them (a task they confirm in WeCom)."""
        tid, viewer, _ = await _who(request)
        form = await _form(request)
        owner = str(form.get("owner") or "")
        if not owner.isdigit():
            raise InvalidInput.one("owner", N_("Choose a WeCom rep who added this customer."))
        await actions.do_send_via_owner(tid, viewer, conversation_id, int(owner), str(form.get("text") or ""))
        return await _after_send(request, tid, viewer, conversation_id)

    @post("/conversations/{conversation_id:int}/notice")
    async def notice(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        """Send the tenant's service-notice template (Official Account) with the rep's short text."""
        tid, viewer, _ = await _who(request)
        form = await _form(request)
        await actions.do_send_template_notice(tid, viewer, conversation_id, str(form.get("text") or ""))
        return await _after_send(request, tid, viewer, conversation_id)

    @post("/conversations/{conversation_id:int}/image", request_max_body_size=IMAGE_BODY_MAX)
    async def image(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        """Send the customer a picture chosen in the composer (multipart field `image`)."""
        tid, viewer, _ = await _who(request)
        await get_conversation(tid, viewer, conversation_id)  # out of scope: 404 before the file is judged
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise InvalidInput.one("image", N_("Choose a picture to send."))
        data = await upload.read(IMAGE_BODY_MAX)
        await actions.do_send_image(tid, viewer, conversation_id, data, upload.filename or "")
        return await _after_send(request, tid, viewer, conversation_id)

    @get("/conversations/{conversation_id:int}/messages/{message_id:int}/media")
    async def message_media(self, request: Request[Any, Any, Any], conversation_id: FromPath[int],
                            message_id: FromPath[int]) -> Response[Any]:
        """The picture, voice (`?play=1`: as MP3) or video of a message, for those who may see its conversation
        (404 otherwise, like a missing one)."""
        tid, viewer, _ = await _who(request)
        await get_conversation(tid, viewer, conversation_id)
        row = await boxes.message_in(tid, conversation_id, message_id)
        key = _media_key(row) if row is not None else None
        if key is None:
            raise NotFound()
        view = (await media.views(tid, *(([key[1]], []) if key[0] == "event" else ([], [key[1]])))).get(key)
        if view is None:
            raise NotFound()
        served = await media.open_media(tid, view.id, playable=request.query_params.get("play") == "1")
        return media_response(served.data, served.content_type, served.filename, served.inline)

    @post("/conversations/{conversation_id:int}/messages/{message_id:int}/send-again")
    async def send_again(self, request: Request[Any, Any, Any], conversation_id: FromPath[int],
                         message_id: FromPath[int]) -> Template | Response[Any]:
        """Send a message that may not have been delivered once more (the rep's choice; a new message)."""
        tid, viewer, _ = await _who(request)
        await actions.do_send_again(tid, viewer, conversation_id, message_id)
        return await _after_send(request, tid, viewer, conversation_id)

    @post("/conversations/{conversation_id:int}/take")
    async def take(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        tid, viewer, _ = await _who(request)
        await actions.do_assign(tid, viewer, conversation_id, viewer.staff_id)
        return await self._after_action(request, tid, viewer, conversation_id, N_("The conversation is yours."))

    @post("/conversations/{conversation_id:int}/transfer")
    async def transfer(self, request: Request[Any, Any, Any],
                       conversation_id: FromPath[int]) -> Template | Response[Any]:
        """To a rep (`to=staff:<id>`) or back to a team's queue (`to=team:<id>`)."""
        tid, viewer, _ = await _who(request)
        await get_conversation(tid, viewer, conversation_id)  # out of scope: 404 before the choice is judged
        target = str((await _form(request)).get("to") or "")
        kind, _, raw = target.partition(":")
        if kind not in ("staff", "team") or not raw.isdigit() or len(raw) > 9:
            raise InvalidInput.one("to", N_("Choose a rep or a team."))
        if kind == "staff":
            await actions.do_assign(tid, viewer, conversation_id, int(raw))
        else:
            await actions.do_transfer_to_team(tid, viewer, conversation_id, int(raw))
        return await self._after_action(request, tid, viewer, conversation_id, N_("Transferred."))

    @post("/conversations/{conversation_id:int}/resolve")
    async def resolve(self, request: Request[Any, Any, Any],
                      conversation_id: FromPath[int]) -> Template | Response[Any]:
        tid, viewer, _ = await _who(request)
        await actions.do_resolve(tid, viewer, conversation_id)
        return await self._after_action(request, tid, viewer, conversation_id, N_("Resolved."))

    @post("/conversations/{conversation_id:int}/reopen")
    async def reopen(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        tid, viewer, _ = await _who(request)
        await actions.do_reopen(tid, viewer, conversation_id)
        return await self._after_action(request, tid, viewer, conversation_id, N_("Reopened; it is yours."))

    @post("/conversations/{conversation_id:int}/snooze")
    async def snooze(self, request: Request[Any, Any, Any], conversation_id: FromPath[int]) -> Template | Response[Any]:
        tid, viewer, _ = await _who(request)
        await get_conversation(tid, viewer, conversation_id)
        until = str((await _form(request)).get("until") or "")
        await actions.do_snooze(tid, viewer, conversation_id, until)
        return await self._after_action(request, tid, viewer, conversation_id, N_("Snoozed."))

    # --- presence and the live stream -----------------------------------------------------------------

    @get("/presence")
    async def presence_toggle(self, request: Request[Any, Any, Any]) -> Template:
        """The toggle as it is now (another tab changed it)."""
        user = current_user(request)
        assert user is not None
        presence = await actions.presence_of(require_tenant_id(user), user.id)
        return render(request, "inbox/_presence.html", {"presence": presence, **_labels()})

    @post("/presence")
    async def presence(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        tid, viewer, actor = await _who(request)
        value = str((await _form(request)).get("presence") or "")
        await actions.do_set_presence(tid, viewer.staff_id, value, actor)
        if not _is_htmx(request):
            return Redirect("/inbox", status_code=HTTP_303_SEE_OTHER)
        return render(request, "inbox/_presence.html", {"presence": value, **_labels()})

    @post("/alerts")
    async def alerts(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        """Switch one of the rep's own alerts (`alert` = sound | desktop, `on` = 1 | 0)."""
        tid, viewer, _ = await _who(request)
        form = await _form(request)
        on = str(form.get("on") or "")
        if on not in ("0", "1"):
            raise InvalidInput.one("on", N_("Choose on or off."))
        alerts = await actions.do_set_alert(tid, viewer.staff_id, str(form.get("alert") or ""), on == "1")
        if not _is_htmx(request):
            return Redirect("/inbox", status_code=HTTP_303_SEE_OTHER)
        return render(request, "inbox/_alerts.html", {"alerts": alerts})

    @get("/stream", middleware=[live.counted])
    async def stream(self, request: Request[Any, Any, Any]) -> ServerSentEvent:
        """Server-sent events for this viewer: `ready`, then `conversation` ({"id", "kind"}), `presence`,
        `resync` (reload everything) and keep-alive comments every 15 s."""
        tid, viewer, _ = await _who(request)
        relay: live.Relay = request.app.state.inbox_relay
        access: AccessWatch = request.app.state.access_watch
        user = current_user(request)
        assert user is not None
        token = request.cookies.get(SESSION_COOKIE)

        async def events() -> Any:
            # Signing out, a password change or deactivation ends the stream within about a second.
            async with access.watching(token, user) as ended:
                async for name, data in live.stream(relay, tid, viewer, ended=ended):
                    if name is None:
                        yield ServerSentEventMessage(comment=data, data=None)
                    else:
                        yield ServerSentEventMessage(event=name, data=data)

        return ServerSentEvent(events(), retry_duration=3000, headers={"X-Accel-Buffering": "no"})

    # --- canned replies -------------------------------------------------------------------------------

    async def _canned_page(self, request: Request[Any, Any, Any], tid: int, viewer: Viewer,
                           status_code: int = 200, **extra: Any) -> Template:
        replies = await canned.list_canned(tid, viewer.staff_id)
        return render(request, "inbox/canned.html", {
            "replies": [{**r, "editable": canned.can_edit(viewer, r)} for r in replies], "viewer": viewer, **extra,
        }, status_code=status_code)

    @get("/canned")
    async def canned_list(self, request: Request[Any, Any, Any]) -> Template:
        tid, viewer, _ = await _who(request)
        return await self._canned_page(request, tid, viewer)

    @post("/canned")
    async def canned_create(self, request: Request[Any, Any, Any]) -> Template | Response[Any]:
        tid, viewer, actor = await _who(request)
        form = await _form(request)
        try:
            await canned.do_create_canned(tid, viewer, form, actor)
        except InvalidInput as exc:
            return await self._canned_page(request, tid, viewer, 400, form=form, errors=errors_for(exc))
        return _go(request, "/inbox/canned", N_("Canned reply saved."))

    @get("/canned/{canned_id:int}")
    async def canned_edit(self, request: Request[Any, Any, Any], canned_id: FromPath[int]) -> Template:
        tid, viewer, _ = await _who(request)
        row = await canned.get_canned(tid, viewer, canned_id)
        return render(request, "inbox/canned_edit.html", {"reply": row, "form": row,
                                                          "editable": canned.can_edit(viewer, row)})

    @post("/canned/{canned_id:int}")
    async def canned_update(self, request: Request[Any, Any, Any], canned_id: FromPath[int]) -> Template | Response[Any]:
        tid, viewer, actor = await _who(request)
        row = await canned.get_canned(tid, viewer, canned_id)
        form = await _form(request)
        try:
            await canned.do_update_canned(tid, viewer, canned_id, form, actor)
        except InvalidInput as exc:
            return render(request, "inbox/canned_edit.html", {"reply": row, "form": form, "errors": errors_for(exc),
                                                              "editable": True}, status_code=400)
        return _go(request, "/inbox/canned", N_("Canned reply saved."))

    @post("/canned/{canned_id:int}/delete")
    async def canned_delete(self, request: Request[Any, Any, Any], canned_id: FromPath[int]) -> Response[Any]:
        tid, viewer, actor = await _who(request)
        await canned.do_delete_canned(tid, viewer, canned_id, actor)
        return _go(request, "/inbox/canned", N_("Canned reply deleted."))


def _go(request: Request[Any, Any, Any], url: str, message: str) -> Response[Any]:
    if _is_htmx(request):
        return Response("", status_code=200, headers={"HX-Redirect": url, **toast_header(i18n.gettext(message))})
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)
