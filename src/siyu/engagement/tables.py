"""Re-engagement: journeys (automated), broadcasts (one-off), who entered a journey, the delivery ledger (one
row per source, step, person and trigger key), OA mass-send batches, conversions, and per-tenant settings.

Every table carries `tenant` and starts its unique keys with it (Citus-ready); the composite and partial
indexes and the CHECKs are created in the hand-written migration (migrations/engagement). A delivery's
`state` has one writer: `siyu.engagement.ledger`.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    BigInt,
    BigSerial,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from siyu.contacts.tables import Contact
from siyu.tenants.tables import Tenant


class EngagementSettings(Table, tablename="engagement_settings"):
    """Per-tenant rules every journey and broadcast shares; a tenant without a row has the defaults."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    cap_count = Integer(default=2)  # marketing messages a person may receive …
    cap_days = Integer(default=7)  # … within this many days (service messages are exempt)
    quiet_start = Integer(default=21 * 60)  # minutes after midnight, tenant time zone
    quiet_end = Integer(default=9 * 60)  # quiet_start == quiet_end: no quiet hours
    conversion_days = Integer(default=7)
    updated_at = Timestamptz()


class Journey(Table, tablename="engagement_journey"):
    """An automated journey. `definition` is the canonical JSON of `siyu.engagement.definition`; the
    columns beside it repeat what the sweepers and lists select on."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    name = Varchar(length=80)
    trigger_kind = Varchar(length=16)
    definition = JSONB(default={})
    status = Varchar(length=16, default="draft")  # draft | active | paused | archived
    version = Integer(default=1)  # bumped by every change of the definition
    holdout_percent = Integer(default=0)
    created_by = Varchar(length=254, default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()
    evaluated_at = Timestamptz(null=True, default=None)  # last pass of the entry cron (inactivity, segments)


class Broadcast(Table, tablename="engagement_broadcast"):
    """A one-off message to a segment, now or at a time, paced at `rate_per_minute` (None: as fast as the
    sending budget allows)."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    name = Varchar(length=80)
    segment_id = Integer()
    message = JSONB(default={})
    send_at = Timestamptz(null=True, default=None)
    rate_per_minute = Integer(null=True, default=None)
    holdout_percent = Integer(default=0)
    status = Varchar(length=16, default="draft")  # draft | scheduled | sending | paused | cancelled | done
    fanned_after = BigInt(null=True, default=None)  # contacts up to this id have their ledger row
    fanned_out = Boolean(default=False)
    pace_next_at = Timestamptz(null=True, default=None)  # the due time of the next row the fan-out schedules
    targeted = Integer(default=0)
    created_by = Varchar(length=254, default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()
    started_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)


class Entry(Table, tablename="engagement_entry"):
    """A person entering a journey, once per (journey, person, trigger key)."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    journey = ForeignKey(Journey, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    trigger_key = Varchar(length=128)
    facts = JSONB(default={})  # what triggered it: order id, purchase id, SKUs, amount, …
    triggered_at = Timestamptz()
    entered_at = Timestamptz()
    journey_version = Integer(default=1)
    held_out = Boolean(default=False)
    exited_at = Timestamptz(null=True, default=None)
    exit_reason = Varchar(length=40, default="")


class Delivery(Table, tablename="engagement_delivery"):
    """One message to one person for one step of one journey or broadcast and trigger key: the ledger.

    States (only forward; `siyu.engagement.ledger` is the one writer):
        scheduled → due → sending → sent | skipped | failed | unknown | held_out
        sending → waiting_for_rep → sent | not_sent      (a WeCom 1:1 task the rep must confirm)
    """

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    source_kind = Varchar(length=16)  # journey | broadcast
    source_id = BigInt()
    step = Varchar(length=32)  # the journey step's stable id; "message" for a broadcast
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    trigger_key = Varchar(length=128, default="")
    entry = BigInt(null=True, default=None)
    purpose = Varchar(length=16, default="marketing")  # service | marketing
    held_out = Boolean(default=False)
    planned_at = Timestamptz()  # when it was meant to go (due_at moves for quiet hours and pauses)
    due_at = Timestamptz()
    state = Varchar(length=16, default="scheduled")
    channel = Varchar(length=16, default="")  # what carries (or carried) it: oa_window, wecom_task, oa_mass, …
    skips = JSONB(default=[])  # [{"channel", "reason"}]: every channel passed over, in order
    reason = Varchar(length=40, default="")  # why skipped / failed / not sent
    errcode = Integer(null=True, default=None)
    outbound_key = Varchar(length=200, default="")  # the send-once ledger key of the current attempt
    wechat_ref = Varchar(length=128, default="")  # WeCom task msgid, mass msg_id
    sender = Varchar(length=64, default="")  # the WeCom rep a task goes through
    batch = BigInt(null=True, default=None)  # engagement_mass_batch
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz(null=True, default=None)  # sending, waiting for a rate limit to pass
    claimed_at = Timestamptz(null=True, default=None)
    counted_at = Timestamptz(null=True, default=None)  # from here on it counts against caps
    settled_at = Timestamptz(null=True, default=None)  # reached a final state (held_out: when it would have gone)
    sent_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class MassBatch(Table, tablename="engagement_mass_batch"):
    """One OA mass send (`message/mass/send`) carrying the deliveries that chose it in one slot. Its
    `clientmsgid` comes from this row, so WeChat itself refuses a second send of it within 24 h."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    slot_key = Varchar(length=128)
    state = Varchar(length=16, default="collecting")  # collecting | sending | sent | failed | unknown
    recipients = Integer(default=0)
    text = Varchar(length=2000, default="")
    msg_id = Varchar(length=64, default="")
    closes_at = Timestamptz()
    result = JSONB(default={})  # MASSSENDJOBFINISH: Status, TotalCount, SentCount, FilterCount, ErrorCount
    created_at = Timestamptz()
    sent_at = Timestamptz(null=True, default=None)
    finished_at = Timestamptz(null=True, default=None)


class Conversion(Table, tablename="engagement_conversion"):
    """A purchase credited to a message: within the conversion window after it was sent (for held-out
    people, after they would have been sent), or named by its attribution token (last touch)."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    delivery = BigInt()
    purchase_id = BigInt()
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    amount_fen = BigInt(default=0)
    currency = Varchar(length=3, default="CNY")
    paid_at = Timestamptz()
    kind = Varchar(length=16, default="window")  # window | last_touch
    created_at = Timestamptz()
