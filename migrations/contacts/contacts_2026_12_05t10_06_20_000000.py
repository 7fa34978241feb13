"""The bulk actions' keys, and the order of the API's contact list.

- One bulk action per submitted form (`request_key`): a second submit of the same form finds the first.
- The sweeper's view of actions that are not finished.
- `GET /api/v1/contacts` (without `identity`) lists live contacts by (updated_at, id), from `updated_since`:
  an integrator's sync reads the index from its last position and stops after a page.
"""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T10:06:20:000000"
VERSION = "1.38.0"
DESCRIPTION = "bulk action keys, API list order"

FORWARDS = [
    "CREATE UNIQUE INDEX contact_bulk_action_request ON contact_bulk_action (tenant, request_key)",
    "CREATE INDEX contact_bulk_action_unfinished ON contact_bulk_action (updated_at) "
    "WHERE state IN ('queued', 'running')",
    "ALTER TABLE contact_bulk_action ADD CONSTRAINT contact_bulk_action_kind CHECK (action IN ('tag', 'untag'))",
    "ALTER TABLE contact_bulk_action ADD CONSTRAINT contact_bulk_action_state "
    "CHECK (state IN ('queued', 'running', 'done', 'failed'))",
    "CREATE INDEX contact_updated_order ON contact (tenant, updated_at, id) WHERE merged_into IS NULL",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS contact_updated_order",
    "ALTER TABLE contact_bulk_action DROP CONSTRAINT IF EXISTS contact_bulk_action_state",
    "ALTER TABLE contact_bulk_action DROP CONSTRAINT IF EXISTS contact_bulk_action_kind",
    "DROP INDEX IF EXISTS contact_bulk_action_unfinished",
    "DROP INDEX IF EXISTS contact_bulk_action_request",
]


forwards = sql_migration(ID, "contacts", DESCRIPTION, FORWARDS, BACKWARDS)
