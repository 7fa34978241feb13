"""Jobs of the contacts domain. They take ids, are registered by name and are safe to run twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.worker import Retry

from siyu.contacts import bulk_tags, enrich, services
from siyu.contacts.resolve import resolve
from siyu.core import clock, db, effects
from siyu.timeline import services as timeline
from siyu.wechat import profiles
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
# WeCom changes that make Siyu read the customer again (the reps, their remarks and tags).
WECOM_ENRICH_KINDS = frozenset({"wecom_contact_added", "wecom_contact_edited"})
ENRICH_JOB = "contacts.enrich_identity"
INBOX_JOB = "inbox.handle_inbound"
ENGAGEMENT_JOB = "engagement.handle_inbound"  # follows start welcome journeys; WeChat's mass-send results
RESOLVE_TRIES = 5  # the worker registers resolve_inbound with this many tries; after the last, it parks
PARKED_PER_SWEEP = 20


def _is_person(event: dict[str, Any]) -> bool:
    if not event["external_id"]:
        return False
    # On WeCom, a plain message comes from an employee writing to the self-built app; customers' messages
    # arrive through 微信客服 (synced, with an `origin`).
    return not (event["channel"] == "wecom" and event["kind"] == "message" and "origin" not in event["details"])


@dataclass
class _OaSeen:
    last_at: datetime  # the newest event of the identity in the batch
    follow_id: int | None = None  # the newest follow among them
    followed_at: datetime | None = None


@dataclass
class _EnrichWanted:
    """Identities of one batch to ask WeChat about, decided once every event is resolved (committed).

    The job ids keep re-runs and concurrent batches from asking twice: a WeCom add or edit is read again
    once per event; an OA identity never asked has one job (`new`, however many of its events arrive
    together), a (re-)follow after the last answer one per follow, a stale profile one per hour."""

    jobs: dict[tuple[int, int], str] = field(default_factory=dict)  # WeCom: (tenant, identity) → job id
    oa: dict[tuple[int, int], _OaSeen] = field(default_factory=dict)

    def note(self, event: dict[str, Any], identity_id: int) -> None:
        key, at = (event["tenant"], identity_id), event["occurred_at"]
        if event["channel"] == "wecom" and event["kind"] in WECOM_ENRICH_KINDS:
            self.jobs[key] = f"contacts.enrich:{key[0]}:{key[1]}:e{event['id']}"
        elif event["channel"] == "oa" and event["kind"] != "unfollow":
            seen = self.oa.setdefault(key, _OaSeen(at))
            seen.last_at = max(seen.last_at, at)
            if event["kind"] == "follow" and (seen.followed_at is None or at >= seen.followed_at):
                seen.follow_id, seen.followed_at = int(event["id"]), at

    async def due(self) -> dict[tuple[int, int], str]:
        """The WeCom jobs, and the OA identities never asked, asked before their newest follow, or longer
        ago than `enrich.REFRESH_AFTER`."""
        wanted = dict(self.jobs)
        if not self.oa:
            return wanted
        rows = await db.fetch(
            "SELECT i.tenant, i.id, i.enriched_at FROM identity i "
            "JOIN unnest($1::int[], $2::int[]) AS w(tenant, id) ON w.tenant = i.tenant AND w.id = i.id "
            "WHERE i.erased_at IS NULL", [k[0] for k in self.oa], [k[1] for k in self.oa])
        stale_before = clock.now() - enrich.REFRESH_AFTER
        for r in rows:
            key = (int(r["tenant"]), int(r["id"]))
            seen, last = self.oa[key], r["enriched_at"]
            prefix = f"contacts.enrich:{key[0]}:{key[1]}"
            if last is None:
                wanted[key] = f"{prefix}:new"
            elif seen.followed_at is not None and last < seen.followed_at:
                wanted[key] = f"{prefix}:f{seen.follow_id}"
            elif last < stale_before:
                wanted[key] = f"{prefix}:{seen.last_at.astimezone(UTC):%Y%m%d%H}"
        return wanted


async def resolve_inbound(ctx: dict[str, Any], event_ids: list[int]) -> int:
    """Resolve each stored inbound event's identity to a contact (creating both on first sight) and put
    it on the timeline under the source key `wechat:<event id>`. Returns how many events this run added;
    a second run adds none and changes nothing.

    Then, once all of it is committed, profile enrichment is queued for the identities that need it (see
    `_EnrichWanted`), and the inbox's and re-engagement's parts, by name. Called without a queue (tests,
    scripts), it queues nothing."""
    try:
        wanted = _EnrichWanted()
        appended = await _resolve_all(event_ids, wanted)
        redis = ctx.get("redis")
        if redis is not None:
            for (tenant_id, identity_id), job_id in (await wanted.due()).items():
                await redis.enqueue_job(ENRICH_JOB, tenant_id, identity_id, _job_id=job_id)
            # The inbox's part needs the identities resolved: it runs next, by name (contacts never imports it).
            await redis.enqueue_job(INBOX_JOB, event_ids, _job_id=f"inbox.inbound:{event_ids[0]}")
            await redis.enqueue_job(ENGAGEMENT_JOB, event_ids, _job_id=f"engagement.inbound:{event_ids[0]}")
        return appended
    except Exception as exc:
        if "job_try" not in ctx:  # called directly (tests, scripts): the real error
            raise
        # arq does not retry a plain failure; a lost database connection should not lose the batch.
        tries = int(ctx["job_try"])
        log.warning("resolving inbound events %s failed (try %s): %r", event_ids[:5], tries, exc)
        if tries >= RESOLVE_TRIES:
            await park(event_ids, repr(exc))  # the sweeper takes it from here; arq has no tries left
            return 0
        raise Retry(defer=min(60, 2 ** tries)) from exc


async def park(event_ids: list[int], error: str) -> None:
    """Keep a batch that used up its tries in PostgreSQL, for `sweep_parked`. If even this write fails,
    the job fails loudly (arq logs it) and the events stay processed-but-unresolved: visible, not silent."""
    await db.execute(
        "INSERT INTO contacts_parked_batch (event_ids, error, attempts, next_attempt_at, created_at) "
        "VALUES ($1::bigint[], $2, 0, now() + interval '1 minute', now())", event_ids, error[:2000])


async def sweep_parked(ctx: dict[str, Any]) -> int:
    """Every minute: resolve parked batches again (a second resolution of an event changes nothing), with
    a growing pause between attempts; a batch leaves the table once it goes through. A batch is leased
    (its next attempt pushed back) before it runs, so two sweepers never take the same one."""
    done = 0
    for _ in range(PARKED_PER_SWEEP):
        row = await db.fetchrow(
            "UPDATE contacts_parked_batch SET attempts = attempts + 1, "
            "next_attempt_at = now() + make_interval(secs => LEAST(3600, 60 * power(2, LEAST(attempts, 6))::int)) "
            "WHERE id = (SELECT id FROM contacts_parked_batch WHERE next_attempt_at <= now() "
            "ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, event_ids")
        if row is None:
            break
        try:
            # Without `job_try`, a failure raises here instead of parking the batch a second time.
            await resolve_inbound({"redis": ctx.get("redis")}, list(row["event_ids"]))
        except Exception as exc:
            log.warning("parked batch %s failed again: %r", row["id"], exc)
            await db.execute("UPDATE contacts_parked_batch SET error = $2 WHERE id = $1", row["id"], repr(exc)[:2000])
            continue
        await db.execute("DELETE FROM contacts_parked_batch WHERE id = $1", row["id"])
        done += 1
    return done


async def _resolve_all(event_ids: list[int], wanted: _EnrichWanted) -> int:
    appended = 0
    for event in await load_normalized(event_ids):
        kind = TIMELINE_KINDS.get(event["kind"])
        if (kind is None and event["kind"] not in RESOLVE_ONLY) or not _is_person(event):
            continue
        tenant_id, at = event["tenant"], event["occurred_at"]
        resolved = await resolve(tenant_id, event["channel"], event["external_id"], at=at)
        wanted.note(event, resolved.identity_id)
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


async def enrich_identity(ctx: dict[str, Any], tenant_id: int, identity_id: int) -> str:
    """Ask WeChat about one identity and keep the answer (`enrich.enrich_identity`). Busy or rate-limited:
    retried later (WeChat's wait, else a growing backoff); refusals and configuration problems end the job,
    so a person WeChat will not describe is not asked over and over."""
    tries = int(ctx.get("job_try") or 1)
    try:
        return await enrich.enrich_identity(profiles.runtime_of(ctx), tenant_id, identity_id)
    except enrich.TryLater as exc:
        defer = exc.retry_after if exc.retry_after is not None else min(600, 5 * 2 ** tries)
        log.info("enriching identity %s of tenant %s: %s; again in %s s", identity_id, tenant_id, exc, defer)
        raise Retry(defer=defer) from exc
    except Exception as exc:
        if "job_try" not in ctx:
            raise
        log.warning("enriching identity %s of tenant %s failed (try %s): %r", identity_id, tenant_id, tries, exc)
        raise Retry(defer=min(300, 2 ** tries)) from exc


async def bulk_tag(ctx: dict[str, Any], tenant_id: int, action_id: int, part: int = 0) -> None:
    """Tag or untag every contact a list filter selects (`siyu.contacts.bulk_tags`), batch by batch; a long one
    hands over to its next part. Runs again safely: the cursor moves with each batch."""
    await bulk_tags.run(tenant_id, action_id, part)


async def sweep_bulk(ctx: dict[str, Any]) -> int:
    """Every minute: enqueue again the bulk actions whose job was lost (Redis flushed, the worker killed)."""
    stale = await bulk_tags.unfinished()
    stamp = int(clock.now().timestamp())
    for tenant_id, action_id in stale:
        await effects.enqueue(bulk_tags.JOB, tenant_id, action_id, job_id=f"{bulk_tags.JOB}:{tenant_id}:{action_id}:sweep:{stamp}")
    return len(stale)
