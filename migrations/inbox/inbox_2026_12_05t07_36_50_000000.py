"""A message to the customer may end `unknown` (its send left and no answer came back: WeChat may have
delivered it), mirroring its send-once ledger row. An index finds the messages still sending for the sweeper."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T07:36:50:000000"
VERSION = "1.38.0"
DESCRIPTION = "message status unknown"

FORWARDS = [
    "ALTER TABLE inbox_message DROP CONSTRAINT IF EXISTS inbox_message_status_check",
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_status_check "
    "CHECK (status IN ('received', 'sending', 'sent', 'failed', 'unknown', 'noted'))",
    "CREATE INDEX inbox_message_sending ON inbox_message (created_at) WHERE status = 'sending'",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_message_sending",
    "ALTER TABLE inbox_message DROP CONSTRAINT IF EXISTS inbox_message_status_check",
    "UPDATE inbox_message SET status = 'failed' WHERE status = 'unknown'",
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_status_check "
    "CHECK (status IN ('received', 'sending', 'sent', 'failed', 'noted'))",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
