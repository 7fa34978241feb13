"""A thread is read in the order things happened (time, then id), not in the order its lines were written."""

from siyu.core.migrations import sql_migration

ID = "2026-12-06T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "thread in time order"

FORWARDS = [
    "CREATE INDEX inbox_message_thread_time ON inbox_message (tenant, conversation, created_at DESC, id DESC)",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_message_thread_time",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
