"""Tenant-first keys of the identity graph: one live contact per unionid, one identity per (channel,
external id), one owner row per (identity, rep), tags unique by lower-cased name, and CHECKs."""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T12:58:10:000000"
VERSION = "1.38.0"
DESCRIPTION = "contacts keys, partial unionid index and checks"

FORWARDS = [
    # The key that makes unionid convergence race-safe: a second live contact with the same unionid
    # cannot be committed, so concurrent resolutions collide here and retry.
    "CREATE UNIQUE INDEX contact_tenant_unionid ON contact (tenant, unionid) "
    "WHERE unionid IS NOT NULL AND merged_into IS NULL",
    "CREATE INDEX contact_tenant_id ON contact (tenant, id)",
    "CREATE INDEX contact_merged_into ON contact (tenant, merged_into) WHERE merged_into IS NOT NULL",
    "ALTER TABLE contact ADD CONSTRAINT contact_not_merged_into_itself CHECK (merged_into IS DISTINCT FROM id)",
    "CREATE UNIQUE INDEX identity_tenant_channel_external ON identity (tenant, channel, external_id)",
    "CREATE INDEX identity_tenant_contact ON identity (tenant, contact)",
    "CREATE INDEX identity_tenant_unionid ON identity (tenant, unionid) WHERE unionid IS NOT NULL",
    "ALTER TABLE identity ADD CONSTRAINT identity_channel_check CHECK (channel IN ('oa', 'mp', 'wecom'))",
    "CREATE INDEX contact_merge_tenant_survivor ON contact_merge (tenant, survivor, created_at DESC)",
    "CREATE INDEX contact_merge_tenant_merged ON contact_merge (tenant, merged, created_at DESC)",
    "ALTER TABLE contact_merge ADD CONSTRAINT contact_merge_reason_check CHECK (reason IN ('unionid', 'manual'))",
    "ALTER TABLE contact_merge ADD CONSTRAINT contact_merge_distinct CHECK (survivor <> merged)",
    "CREATE UNIQUE INDEX tag_tenant_name ON tag (tenant, lower(name))",
    "CREATE UNIQUE INDEX contact_tag_key ON contact_tag (tenant, contact, tag)",
    "CREATE INDEX contact_tag_tenant_tag ON contact_tag (tenant, tag)",
    "CREATE UNIQUE INDEX owner_tenant_identity_staff ON owner (tenant, identity, staff_userid)",
    "CREATE INDEX owner_tenant_contact ON owner (tenant, contact)",
    "CREATE INDEX owner_tenant_staff_active ON owner (tenant, staff_userid) WHERE removed_at IS NULL",
    "CREATE UNIQUE INDEX contact_settings_tenant ON contact_settings (tenant)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS contact_settings_tenant",
    "DROP INDEX IF EXISTS owner_tenant_staff_active",
    "DROP INDEX IF EXISTS owner_tenant_contact",
    "DROP INDEX IF EXISTS owner_tenant_identity_staff",
    "DROP INDEX IF EXISTS contact_tag_tenant_tag",
    "DROP INDEX IF EXISTS contact_tag_key",
    "DROP INDEX IF EXISTS tag_tenant_name",
    "ALTER TABLE contact_merge DROP CONSTRAINT IF EXISTS contact_merge_distinct",
    "ALTER TABLE contact_merge DROP CONSTRAINT IF EXISTS contact_merge_reason_check",
    "DROP INDEX IF EXISTS contact_merge_tenant_merged",
    "DROP INDEX IF EXISTS contact_merge_tenant_survivor",
    "ALTER TABLE identity DROP CONSTRAINT IF EXISTS identity_channel_check",
    "DROP INDEX IF EXISTS identity_tenant_unionid",
    "DROP INDEX IF EXISTS identity_tenant_contact",
    "DROP INDEX IF EXISTS identity_tenant_channel_external",
    "ALTER TABLE contact DROP CONSTRAINT IF EXISTS contact_not_merged_into_itself",
    "DROP INDEX IF EXISTS contact_merged_into",
    "DROP INDEX IF EXISTS contact_tenant_id",
    "DROP INDEX IF EXISTS contact_tenant_unionid",
]


forwards = sql_migration(ID, "contacts", DESCRIPTION, FORWARDS, BACKWARDS)
