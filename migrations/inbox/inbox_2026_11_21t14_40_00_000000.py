"""Conversations by team (GIN over the `teams` array; team ids are unique across tenants): a manager's
boxes and counts find their teams' conversations without walking the whole tenant."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T14:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversations by team"

FORWARDS = [
    "CREATE INDEX inbox_conversation_teams ON inbox_conversation USING gin (teams)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS inbox_conversation_teams",
]


forwards = sql_migration(ID, "inbox", DESCRIPTION, FORWARDS, BACKWARDS)
