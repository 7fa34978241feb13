"""Sending a claimed ledger row, per person, at that moment.

For each row (state `due`, or `sending` when a run is re-driven):
1. the source still wants it (journey not archived or paused, step still there, broadcast not cancelled);
2. the exit rules and the `stop_if` steps before it, re-checked now: bought again since the trigger, refunded
   (marked on the entry when the refund arrives), unfollowed or erased, a conversation with a person right
   now, a tag, left the segment — the person leaves the journey and their later rows are skipped;
3. marketing only: the tenant's frequency cap across every journey and broadcast (a skip, with its reason);
4. held-out people stop here (`held_out`: the moment they would have been sent, for attribution);
5. the message's ordered channels, each passed over with its reason until one carries it: an open reply window
   (OA / Mini Program / 微信客服, keeping a reply for the reps when it is marketing), a 1:1 task through the
   customer's WeCom rep, a Mini Program subscription message on a counted consent and an OA template (service
   only: refused here, before WeChat, for marketing), an OA mass send (batched; at most 4 a person a natural
   month, counted by Siyu).

Every call to WeChat goes through the send-once ledger (`siyu.wechat.outbound`) under a key made of the row
and the channel, so a re-driven row asks WeChat again only for what WeChat certainly did not take; an
unknown outcome is final. "Not allowed now" answers move to the next channel; rate limits and busy answers
leave the row `sending` until `next_attempt_at`.

Quiet hours are applied when rows are claimed (`ledger.claim_due`), so a row is never due inside them.

What a claim's rows share is read once for them (people, sources, entries, conversations, a service message's
reply windows), and the sends WeChat took are settled together a few times a second (`flush_sent`): per send,
only the statements that must be per person are made.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siyu.contacts.live import lock_live_many
from siyu.contacts.reach import Reach, reach_of
from siyu.core import clock, db, groupcommit
from siyu.engagement import broadcasts as broadcasts_svc
from siyu.engagement import entries, journeys, ledger, mass
from siyu.engagement.definition import Conditions, Message
from siyu.engagement.ledger import Row
from siyu.engagement.rules import MASS_PER_MONTH, Settings, get_settings, month_start
from siyu.inbox import reach as inbox_reach
from siyu.segments import services as segments
from siyu.timeline import services as timeline
from siyu.wechat import consents, outbound, windows

log = logging.getLogger("siyu.engagement.sender")

CONCURRENCY = 32  # rows of one claim sent at once
FLUSH_EVERY = 0.25  # seconds between two settlements of the sends WeChat took
MAX_ATTEMPTS = 8  # rate-limited / busy retries of one row before it is given up
# Carriers: what actually takes the message, and which ladder step each belongs to.
LADDER_OF = {"oa_window": "window", "mp_window": "window", "kf_window": "window", "wecom_task": "wecom_task",
             "mp_subscribe": "subscribe", "oa_template": "template", "oa_mass": "mass"}
WECHAT_CHANNEL = {"oa_window": "oa", "mp_window": "mp", "kf_window": "wecom", "wecom_task": "wecom",
                  "mp_subscribe": "mp", "oa_template": "oa", "oa_mass": "oa"}
# Answers that mean "not this way, not now": the next channel is tried.
NOT_NOW = {"window_closed", "quota_used", "not_following", "no_consent", "not_their_contact", "welcome_used",
           "not_allowed", "not_linked", "receive_limit"}
NOT_NOW_CODES = {45015, 45047, 43004, 43101, 95018, 95001, 41051, 45028, 41096}


@dataclass
class Batch:
    """What one tenant's rows of a claim share, read once."""

    tenant_id: int
    settings: Settings
    reach: dict[int, Reach]
    busy: set[int]
    journeys: dict[int, journeys.JourneyRow]
    broadcasts: dict[int, broadcasts_svc.BroadcastRow]
    entries: dict[int, entries.EntryRow]
    kf: dict[int, str]
    segment_members: dict[int, set[int]] = field(default_factory=dict)
    # (channel, external id) → the reply window as read with the batch, for service rows (see `_window`).
    window_reads: dict[tuple[str, str], windows.WindowState] = field(default_factory=dict)
    # Sends WeChat took (row, when it took it), settled together every FLUSH_EVERY seconds; only while `run`
    # drives the batch, which flushes them before it returns.
    deferred: bool = False
    sent: list[tuple[Row, datetime]] = field(default_factory=list)


async def run(runtime: outbound.WeChatRuntime, rows: list[Row], gate: asyncio.Semaphore | None = None
              ) -> Counter[str]:
    """Send claimed rows; returns how many ended in each state (or stayed, for `sending`). Runs sharing a
    `gate` share its CONCURRENCY (the sweeper prepares the next claim while this one sends)."""
    done: Counter[str] = Counter()
    by_tenant: dict[int, list[Row]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant, []).append(row)
    gate = gate or asyncio.Semaphore(CONCURRENCY)
    for tenant_id, trows in by_tenant.items():
        batch = await _batch(tenant_id, trows)
        batch.deferred = True

        async def one(row: Row, batch: Batch = batch) -> None:
            async with gate:
                try:
                    done[await send_row(runtime, batch, row)] += 1
                except Exception:  # the row keeps its lease; the sweeper drives it again later
                    log.exception("engagement delivery %s failed; it will be retried", row.id)
                    done["error"] += 1

        sending = asyncio.gather(*(one(r) for r in trows))
        try:
            while not sending.done():
                await asyncio.wait([sending], timeout=FLUSH_EVERY)
                await flush_sent(batch)
        finally:
            await sending
            await flush_sent(batch)
    return done


async def flush_sent(batch: Batch) -> None:
    """Settle the sends WeChat took since the last flush: one ledger statement and one timeline write for
    all of them. A flush that fails leaves its rows `sending` (WeChat's answer is in the send-once ledger):
    the sweeper drives them again when their lease ends, learns `sent` from that ledger and settles them."""
    pending, batch.sent = batch.sent, []
    if not pending:
        return
    moved = await ledger.settle_sent(batch.tenant_id, [r.id for r, _ in pending], [at for _, at in pending],
                                     clock.now())
    at = {r.id: sent_at for r, sent_at in pending}
    events = [(row, at[row.id]) for row in moved if row.step != "test"]
    if not events:
        return
    async with db.transaction():
        live = await lock_live_many(batch.tenant_id, [r.contact for r, _ in events], share=True)
        events = [(r, a) for r, a in events if r.contact in live]
        await timeline.insert_many(
            batch.tenant_id, "broadcast_sent",
            "SELECT u.c AS contact, NULL::bigint AS identity, u.o AS occurred_at, u.ch AS channel, u.p AS payload, "
            "u.k AS source_key FROM unnest($2::int[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::text[]) "
            "AS u(c, o, ch, p, k)",
            [live[r.contact] for r, _ in events], [a for _, a in events],
            [WECHAT_CHANNEL[r.channel] for r, _ in events],
            [json.dumps({"source": r.source, "step": r.step, "delivery": r.id, "carrier": r.channel,
                         "text": _text(batch, r)}, ensure_ascii=False) for r, _ in events],
            [f"engagement:{r.id}" for r, _ in events])


async def _batch(tenant_id: int, rows: list[Row]) -> Batch:
    contact_ids = sorted({r.contact for r in rows})
    reach = await reach_of(tenant_id, contact_ids)
    live_ids = sorted({r.contact_id for r in reach.values()})
    journey_ids = {r.source_id for r in rows if r.source_kind == "journey"}
    broadcast_ids = {r.source_id for r in rows if r.source_kind == "broadcast"}
    identity_ids = [i.id for r in reach.values() for i in r.identities if i.channel == "wecom"]
    batch = Batch(
        tenant_id, await get_settings(tenant_id), reach, await inbox_reach.with_a_person(tenant_id, live_ids),
        await journeys.by_ids(tenant_id, journey_ids) if journey_ids else {},
        await broadcasts_svc.by_ids(tenant_id, broadcast_ids) if broadcast_ids else {},
        await entries.get_entries(tenant_id, [r.entry for r in rows if r.entry is not None]),
        await inbox_reach.kf_accounts(tenant_id, identity_ids) if identity_ids else {})
    if any(r.purpose == "service" for r in rows):
        for channel in ("oa", "mp", "wecom"):
            ids = [i.external_id for r in reach.values() for i in r.identities if i.channel == channel and i.usable]
            for external_id, state in (await windows.states(tenant_id, channel, ids)).items():
                batch.window_reads[(channel, external_id)] = state
    wanted_segments = {c.segment_id for j in batch.journeys.values()
                       for c in [j.definition.exit, *(s.stop_if for s in j.definition.steps if s.stop_if)]
                       if c.segment_id}
    for segment_id in wanted_segments:
        try:
            segment = await segments.get_segment(tenant_id, segment_id)
            batch.segment_members[segment_id] = await segments.members_among(tenant_id, segment.definition, live_ids)
        except Exception:  # a deleted segment: nobody can be said to have left it
            batch.segment_members[segment_id] = set(live_ids)
    return batch


# --- one row -----------------------------------------------------------------------------------------------

async def send_row(runtime: outbound.WeChatRuntime, batch: Batch, row: Row) -> str:
    now = clock.now()
    message = _message(batch, row)
    reach = batch.reach.get(row.contact)
    if row.state == "due":
        hold = _held(batch, row)
        if hold:
            await ledger.transition(row, "due", "due", now, next_attempt_at=now + timedelta(minutes=1))
            return "due"
        reason = _source_gone(batch, row, message) or _exit(batch, row, reach)
        if reason:
            return await _skip(batch, row, reason, now)
        if row.held_out:
            await ledger.transition(row, "due", "held_out", now)
            return "held_out"
    if message is None or reach is None:  # a re-driven row whose source or person has gone meanwhile
        return await _skip(batch, row, "step_removed" if message is None else "erased", now)
    return await _ladder(runtime, batch, row, message, reach)


def _message(batch: Batch, row: Row) -> Message | None:
    if row.source_kind == "broadcast":
        b = batch.broadcasts.get(row.source_id)
        return b.message if b else None
    j = batch.journeys.get(row.source_id)
    step = j.definition.step(row.step) if j else None
    return step.send if step else None


def _held(batch: Batch, row: Row) -> bool:
    """The source is paused: the row waits (claimed again every minute) instead of going."""
    if row.source_kind == "journey":
        j = batch.journeys.get(row.source_id)
        return j is not None and j.status == "paused"
    b = batch.broadcasts.get(row.source_id)
    return b is not None and b.status == "paused"


def _source_gone(batch: Batch, row: Row, message: Message | None) -> str:
    if row.source_kind == "broadcast":
        b = batch.broadcasts.get(row.source_id)
        if b is None or b.status == "cancelled":
            return "cancelled"
        return ""
    j = batch.journeys.get(row.source_id)
    if j is None or j.status == "archived":
        return "journey_archived"
    if message is None:
        return "step_removed"
    return ""


def _conditions_hold(batch: Batch, c: Conditions, row: Row, reach: Reach, since: datetime | None) -> str:
    if c.purchased and since is not None and reach.last_purchase_at is not None and reach.last_purchase_at > since:
        return "purchased"
    if c.unfollowed and reach.unfollowed:
        return "unfollowed"
    if c.in_conversation and reach.contact_id in batch.busy:
        return "in_conversation"
    if c.tags_any and reach.tag_ids & set(c.tags_any):
        return "tag"
    if c.segment_id and reach.contact_id not in batch.segment_members.get(c.segment_id, {reach.contact_id}):
        return "left_segment"
    return ""


def _exit(batch: Batch, row: Row, reach: Reach | None) -> str:
    """Why this person must not get this row now ("" when nothing stops it)."""
    if reach is None or reach.erased:
        return "erased"
    if row.source_kind == "broadcast":
        return ""
    entry = batch.entries.get(row.entry or 0)
    if entry is not None and entry.exited_at is not None:
        return entry.exit_reason or "exited"
    j = batch.journeys[row.source_id]
    since = entry.triggered_at if entry else None
    reason = _conditions_hold(batch, j.definition.exit, row, reach, since)
    if reason:
        return reason
    for step in j.definition.steps:
        if step.id == row.step:
            break
        if step.stop_if is not None:
            reason = _conditions_hold(batch, step.stop_if, row, reach, since)
            if reason:
                return f"stop:{reason}"
    return ""


async def _skip(batch: Batch, row: Row, reason: str, now: datetime, skips: list[dict[str, str]] | None = None) -> str:
    frm = row.state
    moved = await ledger.transition(row, frm, "skipped", now, reason=reason[:40],
                                    **({"skips": skips} if skips is not None else {}))
    if moved is None:
        return "lost"
    if row.entry is not None and reason not in ("no_channel", "frequency_cap", "step_removed", "cancelled"):
        await entries.do_exit(batch.tenant_id, row.entry, reason)  # the person leaves: later rows are skipped too
    await _on_timeline(batch, moved, "broadcast_skipped", "siyu", {"reason": reason})
    return "skipped"


async def _on_timeline(batch: Batch, row: Row, kind: str, channel: str, payload: dict[str, Any]) -> None:
    if row.step == "test":
        return
    reach = batch.reach.get(row.contact)
    await timeline.append(batch.tenant_id, reach.contact_id if reach else row.contact, kind, channel, clock.now(),
                          {"source": row.source, "step": row.step, "delivery": row.id, **payload},
                          f"engagement:{row.id}")


# --- the ladder --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    carrier: str = ""
    reason: str = ""  # why the ladder step was passed over
    identity: Any = None
    sender: str = ""
    external_id: str = ""
    open_kfid: str = ""


async def _choose(batch: Batch, row: Row, message: Message, reach: Reach, step: str, now: datetime) -> Choice:
    """Whether this ladder step can carry the message to this person now, without asking WeChat."""
    tid = batch.tenant_id
    if step == "window":
        reasons = []
        for channel in ("oa", "mp", "wecom"):
            ident = reach.identity(channel)
            if ident is None:
                continue
            open_kfid = batch.kf.get(ident.id, "") if channel == "wecom" else ""
            if channel == "wecom" and not open_kfid:
                continue
            state = await _window(batch, message, channel, ident.external_id, now)
            if not state.can_send:
                reasons.append("quota_used" if state.refusal == 45047 else "window_closed")
            elif message.purpose == "marketing" and state.remaining < 2:
                reasons.append("kept_for_reps")  # the last reply of a window is the reps'
            else:
                carrier = "kf_window" if channel == "wecom" else f"{channel}_window"
                return Choice(carrier, identity=ident, external_id=ident.external_id, open_kfid=open_kfid)
        best = next((r for r in ("kept_for_reps", "quota_used", "window_closed") if r in reasons), "no_window")
        return Choice(reason=best)
    if step == "wecom_task":
        owner = next((o for o in reach.owners), None)
        if owner is None:
            return Choice(reason="no_rep")
        return Choice("wecom_task", sender=owner.userid, external_id=owner.external_userid)
    if step == "subscribe":
        if message.purpose == "marketing":
            return Choice(reason="service_only")
        ident = reach.identity("mp")
        if message.mp_template is None or ident is None:
            return Choice(reason="no_template" if message.mp_template is None else "not_linked")
        if await consents.remaining(tid, "mp", ident.external_id, message.mp_template.template_id) <= 0:
            return Choice(reason="no_consent")
        return Choice("mp_subscribe", identity=ident, external_id=ident.external_id)
    if step == "template":
        if message.purpose == "marketing":
            return Choice(reason="service_only")
        ident = reach.identity("oa")
        if message.oa_template is None or ident is None:
            return Choice(reason="no_template" if message.oa_template is None else "not_following")
        return Choice("oa_template", identity=ident, external_id=ident.external_id)
    ident = reach.identity("oa")  # mass
    if ident is None:
        return Choice(reason="not_following")
    return Choice("oa_mass", identity=ident, external_id=ident.external_id)


async def _window(batch: Batch, message: Message, channel: str, external_id: str, now: datetime
                  ) -> windows.WindowState:
    """A service message takes the window as read with the batch: `windows.reserve`, right before WeChat is
    asked, is what decides (a window used up meanwhile is a refusal there, and the next channel is tried). A
    marketing message keeps the reps' last reply, which only a read at this moment can tell."""
    read = batch.window_reads.get((channel, external_id)) if message.purpose == "service" else None
    return read or await windows.state(batch.tenant_id, channel, external_id, now)


def _remaining_steps(message: Message, row: Row) -> list[str]:
    if row.state == "sending" and row.channel:
        current = LADDER_OF.get(row.channel, "")
        if current in message.channels:
            return list(message.channels[message.channels.index(current) + 1:])
    return list(message.channels)


async def _ladder(runtime: outbound.WeChatRuntime, batch: Batch, row: Row, message: Message, reach: Reach) -> str:
    skips = list(row.skips)
    if row.state == "sending":
        if row.channel == "oa_mass":
            return "sending"  # its batch settles it
        if row.channel:  # re-driven: learn what became of the current attempt first
            outcome = await _attempt(runtime, batch, row, message, reach, _target(row, reach))
            if outcome != "next":
                return outcome
            skips = list((await ledger.get(batch.tenant_id, row.id) or row).skips)
    now = clock.now()
    for step in _remaining_steps(message, row):
        choice = await _choose(batch, row, message, reach, step, now)
        if choice.reason:
            skips.append({"channel": step, "reason": choice.reason})
            continue
        moved = await _take(batch, row, message, choice, skips, now)
        if isinstance(moved, str):
            if moved == "monthly_cap":
                skips.append({"channel": step, "reason": "monthly_cap"})
                continue
            return moved
        row = moved
        if choice.carrier == "oa_mass":
            return "sending"
        outcome = await _attempt(runtime, batch, row, message, reach, choice)
        if outcome != "next":
            return outcome
        row = await ledger.get(batch.tenant_id, row.id) or row
        skips = list(row.skips)
        now = clock.now()
    if row.state not in ("due", "sending"):
        return row.state
    return await _skip(batch, row, "no_channel", clock.now(), skips)


async def _take(batch: Batch, row: Row, message: Message, choice: Choice, skips: list[dict[str, str]],
                now: datetime) -> Row | str:
    """The row moves to `sending` on this carrier, under the person's lock when something is counted for them:
    the frequency cap (first channel of a marketing row) and WeChat's monthly mass cap. A string says why
    not. Rows of concurrent sends are taken together (`_takes`): one transaction for all of them."""
    key = f"engagement:{row.id}:{choice.carrier}"
    capped = row.counted_at is None and message.purpose == "marketing" and row.step != "test"
    if choice.carrier != "oa_mass":
        cap = batch.settings
        got = await _takes.write(_TakeItem(
            batch.tenant_id, row.contact, capped, cap.cap_days, cap.cap_count,
            ledger.Take(row.id, row.state, choice.carrier, skips, key, choice.sender, row.counted_at or now), now))
        if got == "frequency_cap":
            return await _skip(batch, row, "frequency_cap", now, skips)
        return got
    async with db.transaction():
        await ledger.lock_people(batch.tenant_id, [row.contact])
        counted_at = row.counted_at
        if capped:
            cap = batch.settings
            sent = await ledger.marketing_counts(batch.tenant_id, [row.contact], now - timedelta(days=cap.cap_days))
            if sent.get(row.contact, 0) >= cap.cap_count:
                return await _skip(batch, row, "frequency_cap", now, skips)
        got = await db.fetchrow(
            "SELECT count(*) AS n FROM engagement_delivery WHERE tenant = $1 AND contact = $2 AND counted_at >= $3 "
            "AND channel = 'oa_mass' AND state = ANY($4::text[]) AND id <> $5", batch.tenant_id, row.contact,
            month_start(now), list(ledger.COUNTED), row.id)
        if int(got["n"]) >= MASS_PER_MONTH:
            return "monthly_cap"
        batch_id = await mass.join(batch.tenant_id, row, message.text, now)
        moved = await ledger.transition(
            row, row.state, "sending", now, channel=choice.carrier, skips=skips, outbound_key=key,
            sender=choice.sender, counted_at=counted_at or now, batch=batch_id, next_attempt_at=None)
    return moved if moved is not None else "lost"


@dataclass(frozen=True)
class _TakeItem:
    tenant_id: int
    contact: int
    capped: bool  # a marketing row not counted yet: the frequency cap applies
    cap_days: int
    cap_count: int
    take: ledger.Take
    now: datetime


async def _take_batch(items: list[_TakeItem]) -> list[Row | str]:
    """One transaction for the takes that arrived together: each tenant's capped people locked and counted
    in one statement each (the rows of this batch count too, in order), then every row that may go moved in
    one statement. A row another run moved meanwhile is "lost"; a person over the cap "frequency_cap"."""
    results: list[Row | str] = ["lost"] * len(items)
    going: list[int] = []
    seen: set[int] = set()
    async with db.transaction():
        capped: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            if it.take.id in seen:
                continue  # one row handed in twice (two runs of it): only the first may take it
            seen.add(it.take.id)
            if it.capped:
                capped.setdefault(it.tenant_id, []).append(i)
            else:
                going.append(i)
        for tenant_id, members in capped.items():
            people = sorted({items[i].contact for i in members})
            await ledger.lock_people(tenant_id, people)
            first = items[members[0]]
            used = await ledger.marketing_counts(tenant_id, people, first.now - timedelta(days=first.cap_days))
            for i in members:
                it = items[i]
                if used.get(it.contact, 0) >= it.cap_count:
                    results[i] = "frequency_cap"
                else:
                    used[it.contact] = used.get(it.contact, 0) + 1
                    going.append(i)
        moved = {r.id: r for r in await ledger.take_many([items[i].take for i in going],
                                                         max(items[i].now for i in going) if going else clock.now())}
    for i in going:
        results[i] = moved.get(items[i].take.id, "lost")
    return results


_takes: groupcommit.GroupCommit[_TakeItem, Row | str] = groupcommit.GroupCommit(_take_batch, "engagement-takes")


def _target(row: Row, reach: Reach) -> Choice:
    """The attempt a re-driven row was making, rebuilt from the row and the person."""
    if row.channel == "wecom_task":
        owner = next((o for o in reach.owners if o.userid == row.sender), None)
        return Choice("wecom_task", sender=row.sender, external_id=owner.external_userid if owner else "")
    ident = reach.identity(WECHAT_CHANNEL.get(row.channel, "oa"))
    return Choice(row.channel, identity=ident, external_id=ident.external_id if ident else "")


async def _attempt(runtime: outbound.WeChatRuntime, batch: Batch, row: Row, message: Message, reach: Reach,
                   choice: Choice) -> str:
    """Ask WeChat (through the send-once ledger) and settle the row; "next" when the next channel is to be
    tried."""
    tid, key, carrier = batch.tenant_id, row.outbound_key, row.channel
    bulk = row.source_kind == "broadcast"
    if not choice.external_id:
        return await _passed_over(row, "not_linked")
    if carrier in ("oa_window", "mp_window", "kf_window"):
        delivery = await outbound.deliver_text(runtime, tid, WECHAT_CHANNEL[carrier], choice.external_id, message.text,
                                               key, open_kfid=choice.open_kfid or batch.kf.get(
                                                   choice.identity.id if choice.identity else 0, ""), bulk=bulk)
    elif carrier == "wecom_task":
        delivery = await outbound.deliver_owner_task(runtime, tid, row.sender, choice.external_id, message.text, key)
    elif carrier == "mp_subscribe":
        t = message.mp_template
        assert t is not None
        delivery = await outbound.deliver_subscribe(runtime, tid, "mp", choice.external_id, t.template_id,
                                                    dict(t.data), key)
    elif carrier == "oa_template":
        t = message.oa_template
        assert t is not None
        delivery = await outbound.deliver_template(runtime, tid, choice.external_id, t.template_id, dict(t.data), key)
    else:
        return "sending"
    return await settle(batch, row, delivery)


def _state_of(delivery: outbound.Delivery) -> str:
    # The send-once ledger's words (older and newer forms): sent | failed | retry | unknown | pending.
    return {"refused": "failed", "retryable": "retry"}.get(delivery.state, delivery.state)


async def settle(batch: Batch, row: Row, delivery: outbound.Delivery) -> str:
    now = clock.now()
    state = _state_of(delivery)
    if state == "sent":
        if row.channel == "wecom_task":
            await ledger.transition(row, "sending", "waiting_for_rep", now)
            return "waiting_for_rep"
        if batch.deferred:
            batch.sent.append((row, now))
            return "sent"
        moved = await ledger.transition(row, "sending", "sent", now, sent_at=now)
        if moved is not None:
            await _on_timeline(batch, moved, "broadcast_sent", WECHAT_CHANNEL[row.channel],
                               {"carrier": row.channel, "text": _text(batch, row)})
        return "sent"
    if state == "unknown":
        moved = await ledger.transition(row, "sending", "unknown", now, reason=delivery.reason[:40] or "outcome_unknown")
        if moved is not None:
            await _on_timeline(batch, moved, "broadcast_failed", WECHAT_CHANNEL[row.channel],
                               {"carrier": row.channel, "reason": "outcome_unknown"})
        return "unknown"
    if state == "retry":
        if row.attempts >= MAX_ATTEMPTS:
            # Final in the send-once ledger too, so no later run can send it.
            await outbound.give_up(batch.tenant_id, WECHAT_CHANNEL.get(row.channel, "oa"), "", row.outbound_key,
                                   "custom", f"engagement gave up after {row.attempts} attempts")
            return await _fail(batch, row, "gave_up", delivery.errcode, now)
        wait = max(getattr(delivery, "retry_after", 0) or 0, min(300, 5 * 2 ** max(row.attempts, 1)))
        await ledger.transition(row, "sending", "sending", now, next_attempt_at=now + timedelta(seconds=wait))
        return "sending"
    if state == "pending":
        return "sending"  # another run holds this send right now; the lease brings the row back later
    reason = delivery.reason or "refused"
    if reason in NOT_NOW or (delivery.errcode in NOT_NOW_CODES):
        return await _passed_over(row, reason, delivery.errcode)
    return await _fail(batch, row, reason, delivery.errcode, now)


async def _passed_over(row: Row, reason: str, errcode: int | None = None) -> str:
    skips = [*row.skips, {"channel": LADDER_OF.get(row.channel, row.channel), "reason": reason}]
    await ledger.transition(row, "sending", "sending", clock.now(), skips=skips, errcode=errcode)
    return "next"


async def _fail(batch: Batch, row: Row, reason: str, errcode: int | None, now: datetime) -> str:
    moved = await ledger.transition(row, "sending", "failed", now, reason=reason[:40], errcode=errcode)
    if moved is not None:
        await _on_timeline(batch, moved, "broadcast_failed", WECHAT_CHANNEL.get(row.channel, "siyu"),
                           {"carrier": row.channel, "reason": reason, "errcode": errcode})
    return "failed"


def _text(batch: Batch, row: Row) -> str:
    message = _message(batch, row)
    return message.text if message else ""


# --- before sending: who could be reached now -----------------------------------------------------------------

@dataclass
class Reachability:
    total: int = 0
    carriers: Counter[str] = field(default_factory=Counter)  # the channel each person would get it on now
    passed_over: Counter[str] = field(default_factory=Counter)  # "window: window_closed", … (every step passed)
    unreachable: Counter[str] = field(default_factory=Counter)  # why a person would get nothing (the last reason)


async def reachability(tenant_id: int, contact_ids: list[int], message: Message) -> Reachability:
    """What the ladder would do for each of these people now, without asking WeChat or writing anything (the
    frequency cap and WeChat's monthly mass cap are checked when it goes)."""
    out = Reachability()
    reach = await reach_of(tenant_id, contact_ids)
    identity_ids = [i.id for r in reach.values() for i in r.identities if i.channel == "wecom"]
    batch = Batch(tenant_id, await get_settings(tenant_id), reach, set(), {}, {}, {},
                  await inbox_reach.kf_accounts(tenant_id, identity_ids) if identity_ids else {})
    now = clock.now()
    probe = Row(0, tenant_id, "broadcast", 0, "preview", 0, "", None, message.purpose, False, now, now, "due", "", [],
                "", None, "", "", "", None, 0, None, None, None, None, None, now)
    for contact_id in contact_ids:
        out.total += 1
        person = reach.get(contact_id)
        if person is None or person.erased:
            out.unreachable["erased"] += 1
            continue
        last = "no_channel"
        for step in message.channels:
            choice = await _choose(batch, probe, message, person, step, now)
            if not choice.reason:
                out.carriers[choice.carrier] += 1
                break
            out.passed_over[f"{step}: {choice.reason}"] += 1
            last = f"{step}: {choice.reason}"
        else:
            out.unreachable[last] += 1
    return out
