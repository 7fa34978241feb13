"""A rep's resolved conversations, for their "mine" box."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T14:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "resolved conversations by their last rep"

FORWARDS = [
    "CREATE INDEX inbox_conversation_last_assignee ON inbox_conversation (tenant, last_assignee, last_message_at DESC) "
    "WHERE status = 'resolved'",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_conversation_last_assignee",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
