"""Jobs of the contacts domain. They take ids, are registered by name and are safe to run twice."""

from __future__ import annotations

import logging
from typing import Any

from arq.worker import Retry

from siyu.contacts import services
from siyu.contacts.resolve import resolve
from siyu.timeline import services as timeline
from siyu.wechat.events import load_normalized

log = logging.getLogger("siyu.contacts.jobs")

# The gateway's normalised kinds (siyu.wechat.protocol) → timeline kinds.
TIMELINE_KINDS = {
    "follow": "followed",
    "unfollow": "unfollowed",
    "message": "message_in",
    "menu_click": "menu_click",
    "menu_view": "menu_click",  # a menu button that opens a link: a click all the same
    "scan": "scan",
    "wecom_contact_added": "wecom_added",
    "wecom_contact_deleted": "wecom_removed",  # the rep deleted the customer
    "wecom_follow_user_deleted": "wecom_removed",  # the customer deleted the rep
    "kf_servicer_message": "message_out",  # a 微信客服 servicer wrote from the WeCom client
}
# The person acted, so their identity resolves (first sight creates the contact), but nothing goes on
# the timeline: entering an MP customer-service session only opens a reply window (the inbox's business);
# subscription consents belong to the delivery ledger of re-engagement; an edited WeCom contact is
# re-read by profile enrichment; 微信客服 session events and location reports are not history.
RESOLVE_ONLY = frozenset({"session_enter", "subscription_consent", "wecom_contact_edited", "kf_event",
                          "location_report"})
# Details that are not worth keeping on the timeline (one-time codes).
DROPPED_DETAILS = frozenset({"welcome_code", "sync_token"})


def _is_person(event: dict[str, Any]) -> bool:
    if not event["external_id"]:
        return False
    # On WeCom, a plain message comes from an employee writing to the self-built app; customers' messages
    # arrive through 微信客服 (synced, with an `origin`).
    return not (event["channel"] == "wecom" and event["kind"] == "message" and "origin" not in event["details"])


async def resolve_inbound(ctx: dict[str, Any], event_ids: list[int]) -> int:
    """Resolve each stored inbound event's identity to a contact (creating both on first sight) and put
    it on the timeline under the source key `wechat:<event id>`. Returns how many events this run added;
    a second run adds none and changes nothing."""
    try:
        return await _resolve_all(event_ids)
    except Exception as exc:
        if "job_try" not in ctx:  # called directly (tests, scripts): the real error
            raise
        # arq does not retry a plain failure; a lost database connection should not lose the batch.
        tries = int(ctx["job_try"])
        log.warning("resolving inbound events %s failed (try %s): %r", event_ids[:5], tries, exc)
        raise Retry(defer=min(60, 2 ** tries)) from exc


async def _resolve_all(event_ids: list[int]) -> int:
    appended = 0
    for event in await load_normalized(event_ids):
        kind = TIMELINE_KINDS.get(event["kind"])
        if (kind is None and event["kind"] not in RESOLVE_ONLY) or not _is_person(event):
            continue
        tenant_id, at = event["tenant"], event["occurred_at"]
        resolved = await resolve(tenant_id, event["channel"], event["external_id"], at=at)
        if kind is None:
            continue
        details = {k: v for k, v in event["details"].items() if k not in DROPPED_DETAILS}
        if kind in ("message_in", "message_out"):
            details = {"msg_type": event["msg_type"], **details}
        added = await timeline.append(tenant_id, None, kind, event["channel"], at, details,
                                      f"wechat:{event['id']}", identity_id=resolved.identity_id)
        appended += added is not None
        rep = str(event["details"].get("user_id") or "")
        if kind == "wecom_added" and rep:
            await services.record_owner_added(tenant_id, resolved.identity_id, rep, at,
                                              state=str(event["details"].get("state") or ""))
        elif kind == "wecom_removed" and rep:
            await services.record_owner_removed(tenant_id, resolved.identity_id, rep, at)
        elif kind == "unfollowed" and event["channel"] == "oa":
            await services.erase_on_unfollow(tenant_id, resolved.identity_id, at)
    return appended
