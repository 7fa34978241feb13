"""Media: one row per (tenant, channel, media id), so a callback processed twice fetches its picture once;
states and directions as CHECKs; an index for the sweeper's pending rows and one per inbound callback. WeCom
tasks: the rows whose result is still asked about, by when the next question is due."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T09:18:40:000000"
VERSION = "1.38.0"
DESCRIPTION = "media keys and task results"

FORWARDS = [
    "CREATE UNIQUE INDEX wechat_media_key ON wechat_media (tenant, channel, media_id)",
    "ALTER TABLE wechat_media ADD CONSTRAINT wechat_media_state_check CHECK (state IN ('pending', 'stored', 'failed'))",
    "ALTER TABLE wechat_media ADD CONSTRAINT wechat_media_direction_check CHECK (direction IN ('in', 'out'))",
    "ALTER TABLE wechat_media ADD CONSTRAINT wechat_media_kind_check "
    "CHECK (kind IN ('image', 'voice', 'video', 'file'))",
    "CREATE INDEX wechat_media_pending ON wechat_media (created_at) WHERE state = 'pending'",
    "CREATE INDEX wechat_media_event ON wechat_media (tenant, source_event) WHERE source_event IS NOT NULL",
    "CREATE INDEX wechat_media_person ON wechat_media (tenant, channel, external_id)",
    "ALTER TABLE wechat_outbound ADD CONSTRAINT wechat_outbound_task_state_check "
    "CHECK (task_state IN ('', 'waiting', 'sent', 'not_sent'))",
    "CREATE INDEX wechat_outbound_task_due ON wechat_outbound (task_next_check_at) WHERE task_state = 'waiting'",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_outbound_task_due",
    "ALTER TABLE wechat_outbound DROP CONSTRAINT IF EXISTS wechat_outbound_task_state_check",
    "DROP INDEX IF EXISTS wechat_media_person",
    "DROP INDEX IF EXISTS wechat_media_event",
    "DROP INDEX IF EXISTS wechat_media_pending",
    "ALTER TABLE wechat_media DROP CONSTRAINT IF EXISTS wechat_media_kind_check",
    "ALTER TABLE wechat_media DROP CONSTRAINT IF EXISTS wechat_media_direction_check",
    "ALTER TABLE wechat_media DROP CONSTRAINT IF EXISTS wechat_media_state_check",
    "DROP INDEX IF EXISTS wechat_media_key",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
