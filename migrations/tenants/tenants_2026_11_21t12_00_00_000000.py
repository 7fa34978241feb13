"""Composite unique keys (tenant first, Citus-ready), CHECK constraints on enumerations, and indexes
that Piccolo's auto-migrations cannot express."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "tenant-scoped unique keys and checks"

FORWARDS = [
    "CREATE UNIQUE INDEX channel_account_tenant_kind ON channel_account (tenant, kind)",
    "ALTER TABLE channel_account ADD CONSTRAINT channel_account_kind_check CHECK (kind IN ('oa', 'mp', 'wecom'))",
    "ALTER TABLE channel_account ADD CONSTRAINT channel_account_mode_check "
    "CHECK (message_mode IN ('plain', 'compatible', 'safe'))",
    "ALTER TABLE channel_account ADD CONSTRAINT channel_account_format_check CHECK (push_format IN ('xml', 'json'))",
    "ALTER TABLE tenant ADD CONSTRAINT tenant_status_check CHECK (status IN ('active', 'suspended'))",
    "ALTER TABLE staff ADD CONSTRAINT staff_role_check "
    "CHECK (role IN ('platform_admin', 'tenant_admin', 'agent'))",
    "ALTER TABLE staff ADD CONSTRAINT staff_tenant_role_check "
    "CHECK ((role = 'platform_admin') = (tenant IS NULL))",
    "ALTER TABLE staff ADD CONSTRAINT staff_capacity_check CHECK (max_concurrent BETWEEN 0 AND 500)",
    "ALTER TABLE invitation ADD CONSTRAINT invitation_role_check CHECK (role IN ('tenant_admin', 'agent'))",
    "CREATE UNIQUE INDEX team_tenant_name ON team (tenant, lower(name))",
    "CREATE UNIQUE INDEX team_member_tenant_team_staff ON team_member (tenant, team, staff)",
    "CREATE UNIQUE INDEX invitation_pending_email ON invitation (tenant, lower(email)) "
    "WHERE accepted_at IS NULL AND revoked_at IS NULL",
    "CREATE INDEX audit_log_tenant_created ON audit_log (tenant, created_at DESC, id DESC)",
    "CREATE INDEX api_key_tenant_created ON api_key (tenant, created_at DESC)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS api_key_tenant_created",
    "DROP INDEX IF EXISTS audit_log_tenant_created",
    "DROP INDEX IF EXISTS invitation_pending_email",
    "DROP INDEX IF EXISTS team_member_tenant_team_staff",
    "DROP INDEX IF EXISTS team_tenant_name",
    "ALTER TABLE invitation DROP CONSTRAINT IF EXISTS invitation_role_check",
    "ALTER TABLE staff DROP CONSTRAINT IF EXISTS staff_capacity_check",
    "ALTER TABLE staff DROP CONSTRAINT IF EXISTS staff_tenant_role_check",
    "ALTER TABLE staff DROP CONSTRAINT IF EXISTS staff_role_check",
    "ALTER TABLE tenant DROP CONSTRAINT IF EXISTS tenant_status_check",
    "ALTER TABLE channel_account DROP CONSTRAINT IF EXISTS channel_account_format_check",
    "ALTER TABLE channel_account DROP CONSTRAINT IF EXISTS channel_account_mode_check",
    "ALTER TABLE channel_account DROP CONSTRAINT IF EXISTS channel_account_kind_check",
    "DROP INDEX IF EXISTS channel_account_tenant_kind",
]


forwards = sql_migration(ID, "tenants", DESCRIPTION, FORWARDS, BACKWARDS)
