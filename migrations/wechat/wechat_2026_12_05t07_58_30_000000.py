"""Held jobs are unique per tenant, job and arguments: a job that runs twice while its tenant is suspended
is held once; and they are read per tenant on reactivation."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T07:58:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "held job keys"

FORWARDS = [
    "CREATE UNIQUE INDEX wechat_held_job_key ON wechat_held_job (tenant, job, args)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS wechat_held_job_key",
]


forwards = sql_migration(ID, "wechat", DESCRIPTION, FORWARDS, BACKWARDS)
