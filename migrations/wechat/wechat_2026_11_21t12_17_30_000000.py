"""Tenant-first unique keys for the gateway: the dedup key of inbound callbacks, one cursor per
微信客服 account, one welcome per QR scene, one reply per menu key, one rule per keyword."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T12:17:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "gateway unique keys and checks"

FORWARDS = [
    "CREATE UNIQUE INDEX wechat_inbound_dedup ON wechat_inbound_event (tenant, channel, dedup_key)",
    "CREATE INDEX wechat_inbound_pending ON wechat_inbound_event (received_at) WHERE processed_at IS NULL",
    "CREATE INDEX wechat_inbound_tenant_received ON wechat_inbound_event (tenant, received_at DESC)",
    "ALTER TABLE wechat_inbound_event ADD CONSTRAINT wechat_inbound_channel_check "
    "CHECK (channel IN ('oa', 'mp', 'wecom'))",
    "CREATE UNIQUE INDEX wechat_kf_cursor_key ON wechat_kf_cursor (tenant, open_kfid)",
    "ALTER TABLE wechat_auto_reply ADD CONSTRAINT wechat_auto_reply_trigger_check "
    "CHECK (trigger IN ('welcome', 'keyword', 'click'))",
    "ALTER TABLE wechat_auto_reply ADD CONSTRAINT wechat_auto_reply_match_check "
    "CHECK (match_type IN ('exact', 'contains'))",
    "CREATE UNIQUE INDEX wechat_auto_reply_welcome ON wechat_auto_reply (tenant, scene) WHERE trigger = 'welcome'",
    "CREATE UNIQUE INDEX wechat_auto_reply_click ON wechat_auto_reply (tenant, menu_key) WHERE trigger = 'click'",
    "CREATE UNIQUE INDEX wechat_auto_reply_keyword ON wechat_auto_reply (tenant, match_type, keyword_norm) "
    "WHERE trigger = 'keyword'",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_auto_reply_keyword",
    "DROP INDEX IF EXISTS wechat_auto_reply_click",
    "DROP INDEX IF EXISTS wechat_auto_reply_welcome",
    "ALTER TABLE wechat_auto_reply DROP CONSTRAINT IF EXISTS wechat_auto_reply_match_check",
    "ALTER TABLE wechat_auto_reply DROP CONSTRAINT IF EXISTS wechat_auto_reply_trigger_check",
    "DROP INDEX IF EXISTS wechat_kf_cursor_key",
    "ALTER TABLE wechat_inbound_event DROP CONSTRAINT IF EXISTS wechat_inbound_channel_check",
    "DROP INDEX IF EXISTS wechat_inbound_tenant_received",
    "DROP INDEX IF EXISTS wechat_inbound_pending",
    "DROP INDEX IF EXISTS wechat_inbound_dedup",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
