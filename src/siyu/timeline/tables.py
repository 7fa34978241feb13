"""The unified timeline: append-only events per contact across channels, idempotent by source key.

Unique `(tenant, source_key)` and the page index `(tenant, contact, occurred_at DESC, id DESC)` are
created in migrations/timeline.
"""

from __future__ import annotations

from piccolo.columns import JSONB, BigSerial, ForeignKey, OnDelete, Timestamptz, Varchar
from piccolo.table import Table

from siyu.contacts.tables import Contact, Identity
from siyu.tenants.tables import Tenant


class TimelineEvent(Table, tablename="timeline_event"):
    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    # Which identity the event came through, if any: an unmerge takes an identity's events back with
    # it, and an unfollow erasure finds that identity's personal payloads.
    identity = ForeignKey(Identity, null=True, default=None, on_delete=OnDelete.set_null)
    occurred_at = Timestamptz()
    kind = Varchar(length=32)
    channel = Varchar(length=8)  # oa | mp | wecom | siyu (made inside the CRM: notes, merges)
    payload = JSONB(default={})
    source_key = Varchar(length=200)
    created_at = Timestamptz()
