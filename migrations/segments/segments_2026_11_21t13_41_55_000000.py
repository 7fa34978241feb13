"""Segment keys and checks: one name per tenant (case-insensitive, as people read names), a name that is
not blank, and a definition that is a JSON object."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T13:41:55:000000"
VERSION = "1.38.0"
DESCRIPTION = "segment name key and checks"

FORWARDS = [
    "CREATE UNIQUE INDEX segment_tenant_name ON segment (tenant, lower(name))",
    "CREATE INDEX segment_tenant_id ON segment (tenant, id)",
    "ALTER TABLE segment ADD CONSTRAINT segment_name_not_blank CHECK (length(btrim(name)) BETWEEN 1 AND 80)",
    "ALTER TABLE segment ADD CONSTRAINT segment_description_length CHECK (length(description) <= 500)",
    "ALTER TABLE segment ADD CONSTRAINT segment_definition_object CHECK (jsonb_typeof(definition) = 'object')",
]

BACKWARDS = [
    "ALTER TABLE segment DROP CONSTRAINT IF EXISTS segment_definition_object",
    "ALTER TABLE segment DROP CONSTRAINT IF EXISTS segment_description_length",
    "ALTER TABLE segment DROP CONSTRAINT IF EXISTS segment_name_not_blank",
    "DROP INDEX IF EXISTS segment_tenant_id",
    "DROP INDEX IF EXISTS segment_tenant_name",
]


forwards = sql_migration(ID, "segments", DESCRIPTION, FORWARDS, BACKWARDS)
