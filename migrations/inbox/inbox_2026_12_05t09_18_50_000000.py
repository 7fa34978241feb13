"""What became of a WeCom 1:1 task a message went out as, mirrored from its ledger row."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T09:18:50:000000"
VERSION = "1.38.0"
DESCRIPTION = "message delivery of WeCom tasks"

FORWARDS = [
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_delivery_check "
    "CHECK (delivery IN ('', 'waiting', 'delivered', 'not_delivered'))",
]
BACKWARDS = [
    "ALTER TABLE inbox_message DROP CONSTRAINT IF EXISTS inbox_message_delivery_check",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
