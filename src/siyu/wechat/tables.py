"""What the WeChat gateway keeps: every inbound callback (durably, before answering), the 微信客服
sync cursors, and the Official Account's auto-reply rules."""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
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
    # A WeCom 1:1 task (kind wecom_task) WeChat took is only a task: the member confirms it in WeCom, or not.
    # What became of it (`siyu.wechat.owner_tasks`): '' (not a task), waiting, sent, not_sent.
    task_state = Varchar(length=12, default="")
    task_reason = Varchar(length=32, default="")  # not_sent: not_their_contact | receive_limit | rep_did_not_confirm
    task_checks = Integer(default=0)  # times WeChat was asked
    task_checked_at = Timestamptz(null=True, default=None)
    task_next_check_at = Timestamptz(null=True, default=None)  # when asking again is due (backoff)
    task_sent_at = Timestamptz(null=True, default=None)  # when the member sent it to the customer


class Media(Table, tablename="wechat_media"):
    """A picture, voice message, video or file: one a customer sent (fetched from WeChat's media API by its
    MediaId, never from a URL in the message), or one a rep sends (uploaded to WeChat as temporary media before
    its message). The bytes live in the media store (`siyu.core.storage`) under `storage_key`; the states and
    their one writer are in `siyu.wechat.media`."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    channel = Varchar(length=8)
    external_id = Varchar(length=128, default="")  # the customer it came from or goes to
    direction = Varchar(length=4, default="in")  # in | out
    media_id = Varchar(length=200)  # WeChat's MediaId (in), or Siyu's own id of an upload (out: "siyu:…")
    kind = Varchar(length=12)  # image | voice | video | file
    source_event = BigInt(null=True, default=None)  # the inbound callback it came with (wechat_inbound_event)
    state = Varchar(length=8, default="pending")  # pending | stored | failed
    content_type = Varchar(length=64, default="")  # sniffed from the bytes, never taken from WeChat's header
    size = BigInt(default=0)
    sha256 = Varchar(length=64, default="")
    storage_key = Varchar(length=200, default="")
    playable_key = Varchar(length=200, default="")  # voice transcoded for browsers (AMR is not playable there)
    filename = Varchar(length=200, default="")
    recognition = Text(default="")  # WeChat's speech-to-text of a voice message, when switched on
    error = Varchar(length=32, default="")  # why it failed: an errcode or a reason key (siyu.wechat.errors)
    errmsg = Text(default="")
    attempts = Integer(default=0)
    wechat_media_id = Varchar(length=200, default="")  # out: the temporary media id of the last upload
    uploaded_at = Timestamptz(null=True, default=None)  # out: when (WeChat keeps it 3 days)
    created_at = Timestamptz()
    fetched_at = Timestamptz(null=True, default=None)


class HeldJob(Table, tablename="wechat_held_job"):
    """A job that would have sent something for a tenant while it was suspended: kept (by name and
    arguments, unique per tenant) instead of run, and enqueued again when the tenant is reactivated."""

    id: BigSerial
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    job = Varchar(length=64)
    args = JSONB(default=[])
    held_at = Timestamptz()
