"""The waiting conversations a rep may take, by index: those no team claims, and those of given teams. A rep's
scope (the inbox's `Viewer.where`, and the contact pages through `siyu.inbox.scope`) reads only these
instead of every waiting conversation of the brand."""

from siyu.core.migrations import sql_migration

ID = "2026-11-22T09:09:09:000000"
VERSION = "1.38.0"
DESCRIPTION = "waiting conversations for anyone and by team"

FORWARDS = [
    "CREATE INDEX inbox_conversation_queue_anyone ON inbox_conversation (tenant) "
    "WHERE status = 'queued' AND cardinality(teams) = 0",
    "CREATE INDEX inbox_conversation_queue_teams ON inbox_conversation USING gin (teams) WHERE status = 'queued'",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_conversation_queue_teams",
    "DROP INDEX IF EXISTS inbox_conversation_queue_anyone",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
