"""Keys of the subscription consents: one counter per person, channel and template; one grant per source
(a callback re-processed never counts its consent twice)."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T17:18:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "subscription consent keys"

FORWARDS = [
    "CREATE UNIQUE INDEX wechat_subscribe_consent_key ON wechat_subscribe_consent "
    "(tenant, channel, external_id, template_id)",
    "CREATE UNIQUE INDEX wechat_consent_grant_source ON wechat_consent_grant (tenant, source_key)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_consent_grant_source",
    "DROP INDEX IF EXISTS wechat_subscribe_consent_key",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
