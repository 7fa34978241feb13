"""A thread is read in the order things happened (time, then id), not in the order its lines were written.
A rep keeps seeing the conversations they held last that are resolved or back with the bot (a follow-up an
auto-reply answered): the index of those covers both states."""

from siyu.core.migrations import sql_migration

ID = "2026-12-06T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "thread in time order; last holder of resolved or bot conversations"

FORWARDS = [
    "CREATE INDEX inbox_message_thread_time ON inbox_message (tenant, conversation, created_at DESC, id DESC)",
    "CREATE INDEX inbox_conversation_last_holder ON inbox_conversation (tenant, last_assignee, last_message_at DESC) "
    "WHERE status IN ('resolved', 'bot')",
    "DROP INDEX IF EXISTS inbox_conversation_last_assignee",
]
BACKWARDS = [
    "CREATE INDEX IF NOT EXISTS inbox_conversation_last_assignee ON inbox_conversation "
    "(tenant, last_assignee, last_message_at DESC) WHERE status = 'resolved'",
    "DROP INDEX IF EXISTS inbox_conversation_last_holder",
    "DROP INDEX IF EXISTS inbox_message_thread_time",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
