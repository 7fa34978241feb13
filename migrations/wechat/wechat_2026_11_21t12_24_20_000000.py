"""One reply window per (tenant, channel, person); one outbound row per idempotency key."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T12:24:20:000000"
VERSION = "1.38.0"
DESCRIPTION = "window and outbound keys"

FORWARDS = [
    "CREATE UNIQUE INDEX wechat_reply_window_key ON wechat_reply_window (tenant, channel, external_id)",
    "CREATE UNIQUE INDEX wechat_outbound_key ON wechat_outbound (tenant, idempotency_key)",
    "CREATE INDEX wechat_outbound_recipient ON wechat_outbound (tenant, channel, external_id, created_at DESC)",
    "ALTER TABLE wechat_outbound ADD CONSTRAINT wechat_outbound_state_check "
    "CHECK (state IN ('pending', 'sent', 'refused', 'retryable', 'unknown'))",
]
BACKWARDS = [
    "ALTER TABLE wechat_outbound DROP CONSTRAINT IF EXISTS wechat_outbound_state_check",
    "DROP INDEX IF EXISTS wechat_outbound_recipient",
    "DROP INDEX IF EXISTS wechat_outbound_key",
    "DROP INDEX IF EXISTS wechat_reply_window_key",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
