"""A person's stored callbacks by (tenant, channel, external id): what the unfollow and data-subject
erasures look up."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T13:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "inbound events by person"

FORWARDS = [
    "CREATE INDEX wechat_inbound_person ON wechat_inbound_event (tenant, channel, external_id, occurred_at)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_inbound_person",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
