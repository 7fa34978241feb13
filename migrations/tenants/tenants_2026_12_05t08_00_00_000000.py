"""The audit log filtered by person or by action reads its own index in time order, as the unfiltered
log reads `audit_log_tenant_created`."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T08:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "audit log indexes for the person and action filters"

FORWARDS = [
    "CREATE INDEX audit_log_tenant_actor ON audit_log (tenant, actor, created_at DESC, id DESC)",
    "CREATE INDEX audit_log_tenant_action ON audit_log (tenant, action, created_at DESC, id DESC)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS audit_log_tenant_action",
    "DROP INDEX IF EXISTS audit_log_tenant_actor",
]


forwards = sql_migration(ID, "tenants", DESCRIPTION, FORWARDS, BACKWARDS)
