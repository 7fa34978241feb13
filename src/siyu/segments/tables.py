"""Saved segments. `definition` is the canonical JSON of `siyu.segments.definition.Definition`; the
unique name per tenant (case-insensitive) and the CHECKs are in the hand-written migration."""

from __future__ import annotations

from piccolo.columns import JSONB, ForeignKey, OnDelete, Text, Timestamptz, Varchar
from piccolo.table import Table

from siyu.tenants.tables import Tenant


class Segment(Table, tablename="segment"):
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    name = Varchar(length=80)
    description = Text(default="")
    definition = JSONB(default={})
    created_by = Varchar(length=254, default="")  # the actor's label, kept if the person goes
    created_at = Timestamptz()
    updated_at = Timestamptz()
