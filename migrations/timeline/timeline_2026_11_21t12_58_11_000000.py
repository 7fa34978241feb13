"""One event per (tenant, source key), the newest-first page index, and the known kinds and channels."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T12:58:11:000000"
VERSION = "1.38.0"
DESCRIPTION = "timeline keys, page index and checks"

KINDS = ("followed", "unfollowed", "message_in", "message_out", "menu_click", "scan", "mp_login", "purchase",
         "wecom_added", "wecom_removed", "handoff", "assignment", "resolution", "broadcast_sent",
         "broadcast_skipped", "broadcast_failed", "note", "merged", "unmerged")

FORWARDS = [
    "CREATE UNIQUE INDEX timeline_event_source ON timeline_event (tenant, source_key)",
    "CREATE INDEX timeline_event_page ON timeline_event (tenant, contact, occurred_at DESC, id DESC)",
    "CREATE INDEX timeline_event_identity ON timeline_event (tenant, identity) WHERE identity IS NOT NULL",
    "ALTER TABLE timeline_event ADD CONSTRAINT timeline_event_channel_check "
    "CHECK (channel IN ('oa', 'mp', 'wecom', 'siyu'))",
    "ALTER TABLE timeline_event ADD CONSTRAINT timeline_event_kind_check "
    f"CHECK (kind IN ({', '.join(repr(k) for k in KINDS)}))",
]

BACKWARDS = [
    "ALTER TABLE timeline_event DROP CONSTRAINT IF EXISTS timeline_event_kind_check",
    "ALTER TABLE timeline_event DROP CONSTRAINT IF EXISTS timeline_event_channel_check",
    "DROP INDEX IF EXISTS timeline_event_identity",
    "DROP INDEX IF EXISTS timeline_event_page",
    "DROP INDEX IF EXISTS timeline_event_source",
]


forwards = sql_migration(ID, "timeline", DESCRIPTION, FORWARDS, BACKWARDS)
