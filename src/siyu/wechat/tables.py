"""What the WeChat gateway keeps: every inbound callback (durably, before answering), the 微信客服
sync cursors, and the Official Account's auto-reply rules."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
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

from siyu.tenants.tables import ChannelAccount, Tenant


class InboundEvent(Table, tablename="wechat_inbound_event"):
    """One callback from WeChat, decrypted. Unique on (tenant, channel, dedup_key): WeChat's retries of
    the same message (MsgId) or event (FromUserName + CreateTime + Event) land on the same row."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    channel_account = ForeignKey(ChannelAccount, null=True, on_delete=OnDelete.set_null)
    channel = Varchar(length=8)  # oa | mp | wecom
    dedup_key = Varchar(length=255)
    kind = Varchar(length=40)  # normalised: follow, unfollow, message, menu_click, …
    msg_type = Varchar(length=32, default="")
    event = Varchar(length=64, default="")
    external_id = Varchar(length=128, default="")  # openid / external_userid / open_kfid
    occurred_at = Timestamptz()  # CreateTime
    payload = JSONB(default={})  # the decrypted message, as fields
    received_at = Timestamptz()
    deliveries = Integer(default=1)  # 2 or 3 when WeChat retried
    processed_at = Timestamptz(null=True, default=None)
    attempts = Integer(default=0)
    last_error = Text(default="")


class KfCursor(Table, tablename="wechat_kf_cursor"):
    """Where `kf/sync_msg` stopped, per 微信客服 account (open_kfid)."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    open_kfid = Varchar(length=64)
    cursor = Varchar(length=255, default="")
    synced_at = Timestamptz()


class AutoReply(Table, tablename="wechat_auto_reply"):
    """Passive replies of the Official Account: a welcome on follow (per QR scene), keyword rules,
    and menu CLICK replies."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    trigger = Varchar(length=16)  # welcome | keyword | click
    match_type = Varchar(length=16, default="exact")  # exact | contains (keyword rules)
    keyword = Varchar(length=64, default="")  # as typed
    keyword_norm = Varchar(length=64, default="")  # NFKC + casefold, what matching compares
    scene = Varchar(length=64, default="")  # welcome: QR scene ("" = any follow)
    menu_key = Varchar(length=128, default="")  # click: the button's key
    reply = Text()
    enabled = Boolean(default=True)
    hits = Integer(default=0)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class ReplyWindow(Table, tablename="wechat_reply_window"):
    """What WeChat will accept towards one person on one channel: the window opened by their last
    message (5 replies / 48 h) and the short one opened by follow / scan / menu click (3 / 1 min on the
    Official Account, 2 / 1 min after entering a Mini Program session)."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)
    external_id = Varchar(length=128)
    user_msg_at = Timestamptz(null=True, default=None)
    user_sent = Integer(default=0)
    event_at = Timestamptz(null=True, default=None)
    event_sent = Integer(default=0)
    # A person from the brand has this conversation (the inbox says so): the Official Account's keyword
    # rules stay quiet instead of answering over the rep.
    bot_silenced = Boolean(default=False)
    updated_at = Timestamptz()


class SubscribeConsent(Table, tablename="wechat_subscribe_consent"):
    """One-time subscription consents a person gave and Siyu has not used yet, per template (WeChat has no
    API to ask: the count comes from the `subscribe_msg_popup_event` pushes; one consent, one send)."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)
    external_id = Varchar(length=128)
    template_id = Varchar(length=64)
    remaining = Integer(default=0)
    updated_at = Timestamptz()


class ConsentGrant(Table, tablename="wechat_consent_grant"):
    """Each consent counted once: a retried or re-processed callback finds its key here."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    source_key = Varchar(length=200)
    created_at = Timestamptz()


class Outbound(Table, tablename="wechat_outbound"):
    """Every message Siyu sends, keyed by the caller's idempotency key: a key is sent at most once. The
    states and their one writer are in `siyu.wechat.outbound`."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)
    external_id = Varchar(length=128)
    idempotency_key = Varchar(length=200)
    kind = Varchar(length=16, default="custom")  # custom | kf | template | subscribe | wecom_task
    payload = JSONB(default={})
    # queued | sending | retry, then one of the final: sent | failed | unknown
    state = Varchar(length=16, default="queued")
    window_slot = Varchar(length=16, default="")  # user | event | event+user
    errcode = Integer(null=True, default=None)  # WeChat's, when it answered one
    reason = Varchar(length=32, default="")  # why, as a key: window_closed, outcome_unknown, unreachable, …
    errmsg = Text(default="")  # why, in words
    wechat_msgid = Varchar(length=128, default="")
    attempts = Integer(default=0)  # claims so far; a run's writes name its own
    created_at = Timestamptz()
    claimed_at = Timestamptz()  # when the current attempt was claimed
    attempted_at = Timestamptz(null=True, default=None)  # when its request last left for WeChat
    sent_at = Timestamptz(null=True, default=None)
