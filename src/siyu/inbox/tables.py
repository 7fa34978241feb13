"""The inbox: conversations between a person (one identity: OA / MP openid, WeCom external_userid) and
the brand's sales reps, their messages, the assignment log, reps' presence and the routing rules.

A conversation belongs to an identity, not to a contact: the contact is always `identity.contact`, so a
merge or an unmerge that moves identities moves their conversations with them, and two identities of one
person on different channels keep one conversation each (one per contact and channel).

Keys, partial indexes and CHECKs are created in the hand-written migration (migrations/inbox).
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Array,
    BigInt,
    BigSerial,
    Boolean,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from siyu.contacts.tables import Identity
from siyu.tenants.tables import Staff, Team, Tenant


class InboxSettings(Table, tablename="inbox_settings"):
    """Per-tenant handoff and routing switches; a tenant without a row has the defaults."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    handoff_keywords = JSONB(default=["人工", "客服", "转人工", "human", "agent"])
    handoff_menu_keys = JSONB(default=[])  # menu buttons marked "talk to a human"
    unanswered_limit = Integer(default=3)  # N consecutive messages the bot could not answer (0 = off)
    vip_tag_ids = JSONB(default=[])  # contacts with one of these tags go to a human at once, first in line
    sla_minutes = Integer(default=5)  # an assignment without a first reply goes back to the queue
    recent_days = Integer(default=30)  # "the rep who served this contact last within N days"
    notify_customer = Boolean(default=True)  # tell the customer what happens next
    # The Official Account template a rep may send when the reply window is closed (a service notice):
    # its id, the keyword that carries the rep's short text, and an optional keyword for the time.
    notice_template_id = Varchar(length=64, default="")
    notice_text_key = Varchar(length=32, default="thing1")
    notice_time_key = Varchar(length=32, default="")
    # The Mini Program's subscription message template for the same purpose (it needs the customer's
    # one-time consent, counted by siyu.wechat.consents).
    mp_notice_template_id = Varchar(length=64, default="")
    mp_notice_text_key = Varchar(length=32, default="thing1")
    mp_notice_time_key = Varchar(length=32, default="")
    updated_at = Timestamptz()


class TeamRoute(Table, tablename="inbox_team_route"):
    """What a team serves. Empty lists mean "any"; a tenant without rules lets every rep take anything."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    team = ForeignKey(Team, null=False, on_delete=OnDelete.cascade)
    channels = Array(base_column=Varchar(length=8), default=[])
    languages = Array(base_column=Varchar(length=16), default=[])
    tag_ids = Array(base_column=Integer(), default=[])
    managers = Array(base_column=Integer(), default=[])  # staff ids who manage this team
    updated_at = Timestamptz()


class Agent(Table, tablename="inbox_agent"):
    """A rep as the inbox sees them: presence, their WeCom UserID (to recognise the contact's owner), and
    when they were last given a conversation (round-robin among equals), and their load: how many
    conversations they hold in `assigned` state, kept by a trigger on `inbox_conversation` (so no path can
    forget it). The row is the lock routing takes together with that load, so two routers can never both
    fill the last seat."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    staff = ForeignKey(Staff, null=False, on_delete=OnDelete.cascade)
    presence = Varchar(length=8, default="offline")  # online | away | offline
    presence_at = Timestamptz()
    wecom_userid = Varchar(length=64, default="")
    last_assigned_at = Timestamptz(null=True, default=None)
    load = Integer(default=0)
    # How the inbox tells this rep about a new assignment or a customer's message in one of their
    # conversations (the browser asks for the desktop permission when they switch it on).
    alert_sound = Boolean(default=True)
    alert_desktop = Boolean(default=True)


class Conversation(Table, tablename="inbox_conversation"):
    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    identity = ForeignKey(Identity, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)  # oa | mp | wecom (微信客服)
    open_kfid = Varchar(length=64, default="")  # WeCom 微信客服 account the customer wrote to
    status = Varchar(length=12, default="bot")  # bot | queued | assigned | snoozed | resolved
    assignee = ForeignKey(Staff, null=True, default=None, on_delete=OnDelete.set_null)
    # Who held it last: a rep keeps seeing the conversations they resolved (and can reopen them).
    last_assignee = ForeignKey(Staff, null=True, default=None, on_delete=OnDelete.set_null)
    teams = Array(base_column=Integer(), default=[])  # the teams that serve it (empty: everyone)
    vip = Boolean(default=False)
    handoff_reason = Varchar(length=16, default="")  # keyword | menu | unanswered | vip | api | manual
    unanswered = Integer(default=0)  # consecutive messages the bot could not answer
    unread = Integer(default=0)  # inbound messages since the assignee last opened it
    queued_at = Timestamptz(null=True, default=None)
    assigned_at = Timestamptz(null=True, default=None)
    first_response_at = Timestamptz(null=True, default=None)  # of the current assignment
    snoozed_until = Timestamptz(null=True, default=None)
    resolved_at = Timestamptz(null=True, default=None)
    last_message_at = Timestamptz(null=True, default=None)
    last_inbound_at = Timestamptz(null=True, default=None)
    preview = Varchar(length=140, default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Message(Table, tablename="inbox_message"):
    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    conversation = ForeignKey(Conversation, null=False, on_delete=OnDelete.cascade)
    direction = Varchar(length=8)  # in | out | note | system
    author = ForeignKey(Staff, null=True, default=None, on_delete=OnDelete.set_null)
    author_label = Varchar(length=120, default="")  # a rep's name, "bot", a WeCom servicer
    msg_type = Varchar(length=16, default="text")
    body = Text(default="")
    # received | noted | sending, then as its send-once ledger row settles: sent | failed | unknown (WeChat
    # may or may not have delivered it; a person may send it again, as a new message)
    status = Varchar(length=10, default="received")
    outbound_id = BigInt(null=True, default=None)  # the send-once ledger row (wechat_outbound)
    error = Text(default="")  # why WeChat did not take it: an errcode or a reason key (words in actions)
    resent_as = BigInt(null=True, default=None)  # the message a rep sent again in its place
    via_owner = BigInt(null=True, default=None)  # a 1:1 WeCom task: the contact's owner row it goes through
    media_ref = BigInt(null=True, default=None)  # a picture a rep sends: its wechat_media row
    # A 1:1 WeCom task WeChat took (status sent): '' until asked, then waiting (for the rep to confirm it in
    # WeCom), delivered, or not_delivered (the reason in `error`), as its ledger row learns it.
    delivery = Varchar(length=16, default="")
    source_key = Varchar(length=200)
    created_at = Timestamptz()
    sent_at = Timestamptz(null=True, default=None)


class Assignment(Table, tablename="inbox_assignment"):
    """Every time a conversation was given to a rep, and how that ended: routing preferences ("served
    last within N days"), the SLA, and the manager's first-response and resolution figures read it."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    conversation = ForeignKey(Conversation, null=False, on_delete=OnDelete.cascade)
    contact = Integer()  # the contact at assignment time (for "served this contact last")
    staff = ForeignKey(Staff, null=False, on_delete=OnDelete.cascade)
    rule = Varchar(length=16)  # owner | recent | least_loaded | manual | reopen
    queued_at = Timestamptz(null=True, default=None)  # when the wait for a human began
    assigned_at = Timestamptz()
    first_response_at = Timestamptz(null=True, default=None)
    ended_at = Timestamptz(null=True, default=None)
    end_reason = Varchar(length=16, default="")  # resolved | sla | transferred | reassigned | snoozed | offline


class CannedReply(Table, tablename="inbox_canned_reply"):
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    owner = ForeignKey(Staff, null=True, default=None, on_delete=OnDelete.cascade)  # NULL: tenant-wide
    shortcut = Varchar(length=32)  # typed as /shortcut in the composer
    title = Varchar(length=80, default="")
    body = Text()
    created_at = Timestamptz()
    updated_at = Timestamptz()
