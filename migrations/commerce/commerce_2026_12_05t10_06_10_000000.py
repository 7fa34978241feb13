"""Keys of the history imports: the page lists a tenant's imports newest first, a re-run of the same file
finds its unfinished import by checksum, the error report reads an import's errors by line; CHECKs."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T10:06:10:000000"
VERSION = "1.38.0"
DESCRIPTION = "purchase import keys, indexes and checks"

FORWARDS = [
    "CREATE INDEX commerce_import_recent ON commerce_import (tenant, created_at DESC, id DESC)",
    "CREATE INDEX commerce_import_file ON commerce_import (tenant, sha256) WHERE status NOT IN ('done', 'failed')",
    "CREATE INDEX commerce_import_unfinished ON commerce_import (updated_at) WHERE status NOT IN ('done', 'failed')",
    "ALTER TABLE commerce_import ADD CONSTRAINT commerce_import_status "
    "CHECK (status IN ('staging', 'checking', 'importing', 'merging', 'done', 'failed'))",
    "CREATE INDEX commerce_import_error_line ON commerce_import_error (tenant, purchase_import, line, id)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS commerce_import_error_line",
    "ALTER TABLE commerce_import DROP CONSTRAINT IF EXISTS commerce_import_status",
    "DROP INDEX IF EXISTS commerce_import_unfinished",
    "DROP INDEX IF EXISTS commerce_import_file",
    "DROP INDEX IF EXISTS commerce_import_recent",
]


forwards = sql_migration(ID, "commerce", DESCRIPTION, FORWARDS, BACKWARDS)
