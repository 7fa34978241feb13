"""Contacts: one row per person and tenant, the identities that point at it (one per channel and external
id), the rep owners from WeCom, tags, the merge log, and per-tenant settings.

Every table carries `tenant` and starts its unique keys with it (Citus-ready); the composite and partial
unique indexes and the CHECKs are created in the hand-written migrations (migrations/contacts).

Invariant kept by every writer: identities, owners and contact tags only point at live contacts
(`merged_into IS NULL`); a merged-away contact keeps its row so the merge can be undone.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Array,
    BigInt,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from siyu.tenants.tables import Tenant


class Contact(Table, tablename="contact"):
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    display_name = Varchar(length=120, default="")
    avatar_url = Text(default="")
    phone = Varchar(length=32, default="")
    remark = Text(default="")
    language = Varchar(length=16, default="")
    # Unique per tenant among live contacts (partial index): the key that converges identities.
    unionid = Varchar(length=64, null=True, default=None)
    first_seen_at = Timestamptz()
    last_interaction_at = Timestamptz(null=True, default=None)
    last_purchase_at = Timestamptz(null=True, default=None)  # the newest `purchase` on the timeline
    merged_into = ForeignKey("self", null=True, default=None, on_delete=OnDelete.set_null)
    erased_at = Timestamptz(null=True, default=None)  # personal fields erased (unfollow, data-subject request)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Identity(Table, tablename="identity"):
    """One person as one WeChat surface knows them: OA / MP openid or WeCom external_userid."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)  # oa | mp | wecom
    external_id = Varchar(length=128)
    unionid = Varchar(length=64, null=True, default=None)
    first_seen_at = Timestamptz()
    last_seen_at = Timestamptz()
    profile = JSONB(default={})  # what the channel told us (nickname, avatar, language, scene, …)
    enriched_at = Timestamptz(null=True, default=None)  # when the channel's API was last asked about them
    erased_at = Timestamptz(null=True, default=None)  # unfollowed and erased; cleared when seen again


class ContactMerge(Table, tablename="contact_merge"):
    """The merge log. `snapshot` records what moved, so the merge can be undone exactly."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    survivor = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    merged = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    reason = Varchar(length=16)  # unionid | manual
    actor_label = Varchar(length=254, default="")
    snapshot = JSONB(default={})
    created_at = Timestamptz()
    undone_at = Timestamptz(null=True, default=None)
    undone_by = Varchar(length=254, default="")


class Tag(Table, tablename="tag"):
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    name = Varchar(length=40)
    created_at = Timestamptz()


class ContactTag(Table, tablename="contact_tag"):
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    tag = ForeignKey(Tag, null=False, on_delete=OnDelete.cascade)
    created_at = Timestamptz()


class Owner(Table, tablename="owner"):
    """A WeCom rep (follow user) who has added this customer; drives routing later."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    identity = ForeignKey(Identity, null=False, on_delete=OnDelete.cascade)
    staff_userid = Varchar(length=64)  # the rep's WeCom UserID
    state = Varchar(length=64, default="")  # the `state` of the contact way the customer came through
    remark = Text(default="")
    description = Text(default="")  # the rep's description of the customer (WeCom follow_user)
    tags = JSONB(default=[])  # the rep's WeCom tags on the customer: [{"group": …, "name": …, "type": …}]
    added_at = Timestamptz()
    removed_at = Timestamptz(null=True, default=None)


class ContactSettings(Table, tablename="contact_settings"):
    """Per-tenant switches of the contacts domain; a tenant without a row has the defaults."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    # WeChat's rule: delete a user's information when they unfollow the Official Account.
    erase_on_unfollow = Boolean(default=True)
    updated_at = Timestamptz()


class ParkedBatch(Table, tablename="contacts_parked_batch"):
    """Inbound events whose resolution failed every try (the database was down longer than the job's
    retries): parked here, in PostgreSQL, and resolved again by the sweeper until they go through. Not
    tenant data: event ids only (a batch can span tenants)."""

    event_ids = Array(base_column=BigInt())
    error = Text(default="")
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz()
    created_at = Timestamptz()


class BulkAction(Table, tablename="contact_bulk_action"):
    """Tag or untag every contact a list filter selects (job `contacts.bulk_tag`): walked in batches by
    contact id, each batch with the cursor moved in its own transaction, so a re-run continues where the last
    stopped and a batch done twice changes nothing. The filter is compiled again when it runs, under the scope
    of the person who started it (`staff`) as it is then."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    staff = Integer(null=True, default=None)  # who started it
    actor_label = Varchar(length=254, default="")
    request_key = Varchar(length=64)  # the form's one-time key: a second submit finds the first action
    action = Varchar(length=8)  # tag | untag
    tag = ForeignKey(Tag, null=False, on_delete=OnDelete.cascade)
    tag_name = Varchar(length=40, default="")
    search = Text(default="")  # the list's search text
    definition = JSONB(default={})  # the list's filters, in the segments' language
    filters = JSONB(default={})  # the list's query string, to link back to it
    state = Varchar(length=8, default="queued")  # queued | running | done | failed
    total = Integer(default=0)  # how many matched when it was asked for
    done = Integer(default=0)  # contacts reached so far
    changed = Integer(default=0)  # of those, how many gained (or lost) the tag
    after_id = Integer(default=0)  # the cursor: contacts up to this id are done
    error = Text(default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)
