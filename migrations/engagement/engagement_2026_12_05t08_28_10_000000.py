"""Tenant-first keys of re-engagement: one settings row per tenant, one entry per (journey, person, trigger
key), one ledger row per (source, step, person, trigger key), one conversion per message (and per message and
purchase), one mass batch per slot; the partial indexes the sweepers walk (due rows, stale claims, tasks
waiting for a rep), the per-person index the caps count on, and CHECKs on every state column."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T08:28:10:000000"
VERSION = "1.38.0"
DESCRIPTION = "engagement keys, indexes and checks"

STATES = ("'scheduled', 'due', 'sending', 'waiting_for_rep', 'sent', 'skipped', 'failed', 'unknown', 'held_out', "
          "'not_sent'")

FORWARDS = [
    "CREATE UNIQUE INDEX engagement_settings_tenant ON engagement_settings (tenant)",
    "ALTER TABLE engagement_settings ADD CONSTRAINT engagement_settings_ranges CHECK (cap_count BETWEEN 0 AND 100 "
    "AND cap_days BETWEEN 1 AND 90 AND quiet_start BETWEEN 0 AND 1439 AND quiet_end BETWEEN 0 AND 1439 "
    "AND conversion_days BETWEEN 1 AND 90)",
    "CREATE UNIQUE INDEX engagement_journey_name ON engagement_journey (tenant, lower(name))",
    "CREATE INDEX engagement_journey_trigger ON engagement_journey (tenant, trigger_kind) WHERE status = 'active'",
    "CREATE INDEX engagement_journey_active ON engagement_journey (trigger_kind, evaluated_at) WHERE status = 'active'",
    "ALTER TABLE engagement_journey ADD CONSTRAINT engagement_journey_status "
    "CHECK (status IN ('draft', 'active', 'paused', 'archived'))",
    "ALTER TABLE engagement_journey ADD CONSTRAINT engagement_journey_holdout CHECK (holdout_percent BETWEEN 0 AND 90)",
    "ALTER TABLE engagement_journey ADD CONSTRAINT engagement_journey_definition "
    "CHECK (jsonb_typeof(definition) = 'object')",
    "CREATE INDEX engagement_broadcast_tenant ON engagement_broadcast (tenant, id DESC)",
    "CREATE INDEX engagement_broadcast_fanout ON engagement_broadcast (send_at) "
    "WHERE status IN ('scheduled', 'sending') AND NOT fanned_out",
    "ALTER TABLE engagement_broadcast ADD CONSTRAINT engagement_broadcast_status "
    "CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'cancelled', 'done'))",
    "ALTER TABLE engagement_broadcast ADD CONSTRAINT engagement_broadcast_numbers CHECK (holdout_percent BETWEEN 0 AND 90 "
    "AND (rate_per_minute IS NULL OR rate_per_minute BETWEEN 1 AND 1000000))",
    "CREATE UNIQUE INDEX engagement_entry_key ON engagement_entry (tenant, journey, contact, trigger_key)",
    "CREATE INDEX engagement_entry_recent ON engagement_entry (tenant, journey, contact, entered_at DESC)",
    "CREATE INDEX engagement_entry_list ON engagement_entry (tenant, journey, id)",
    # The ledger.
    "CREATE UNIQUE INDEX engagement_delivery_key ON engagement_delivery "
    "(tenant, source_kind, source_id, step, contact, trigger_key)",
    "CREATE INDEX engagement_delivery_due ON engagement_delivery (due_at) WHERE state = 'scheduled'",
    "CREATE INDEX engagement_delivery_claimed ON engagement_delivery (claimed_at) WHERE state IN ('due', 'sending')",
    "CREATE INDEX engagement_delivery_waiting ON engagement_delivery (claimed_at) WHERE state = 'waiting_for_rep'",
    "CREATE INDEX engagement_delivery_source ON engagement_delivery (tenant, source_kind, source_id, id)",
    "CREATE INDEX engagement_delivery_entry ON engagement_delivery (tenant, entry) WHERE entry IS NOT NULL",
    "CREATE INDEX engagement_delivery_batch ON engagement_delivery (tenant, batch) WHERE batch IS NOT NULL",
    # Caps and attribution count a person's messages by time.
    "CREATE INDEX engagement_delivery_counted ON engagement_delivery (tenant, contact, counted_at) "
    "WHERE counted_at IS NOT NULL",
    "CREATE INDEX engagement_delivery_settled ON engagement_delivery (tenant, contact, settled_at) "
    "WHERE state IN ('sent', 'held_out')",
    "CREATE INDEX engagement_delivery_timeline ON engagement_delivery (tenant, contact, id DESC)",
    f"ALTER TABLE engagement_delivery ADD CONSTRAINT engagement_delivery_state CHECK (state IN ({STATES}))",
    "ALTER TABLE engagement_delivery ADD CONSTRAINT engagement_delivery_kind "
    "CHECK (source_kind IN ('journey', 'broadcast'))",
    "ALTER TABLE engagement_delivery ADD CONSTRAINT engagement_delivery_purpose "
    "CHECK (purpose IN ('service', 'marketing'))",
    "ALTER TABLE engagement_delivery ADD CONSTRAINT engagement_delivery_skips CHECK (jsonb_typeof(skips) = 'array')",
    "CREATE UNIQUE INDEX engagement_mass_batch_slot ON engagement_mass_batch (tenant, slot_key)",
    "CREATE INDEX engagement_mass_batch_open ON engagement_mass_batch (closes_at) WHERE state IN ('collecting', 'sending')",
    "CREATE INDEX engagement_mass_batch_msg ON engagement_mass_batch (tenant, msg_id) WHERE msg_id <> ''",
    "ALTER TABLE engagement_mass_batch ADD CONSTRAINT engagement_mass_batch_state "
    "CHECK (state IN ('collecting', 'sending', 'sent', 'failed', 'unknown'))",
    "CREATE UNIQUE INDEX engagement_conversion_key ON engagement_conversion (tenant, delivery, purchase_id)",
    "CREATE UNIQUE INDEX engagement_conversion_once ON engagement_conversion (tenant, delivery)",
    "CREATE INDEX engagement_conversion_purchase ON engagement_conversion (tenant, purchase_id)",
    "ALTER TABLE engagement_conversion ADD CONSTRAINT engagement_conversion_kind "
    "CHECK (kind IN ('window', 'last_touch'))",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS engagement_conversion_purchase",
    "DROP INDEX IF EXISTS engagement_conversion_once",
    "DROP INDEX IF EXISTS engagement_conversion_key",
    "DROP INDEX IF EXISTS engagement_mass_batch_msg",
    "DROP INDEX IF EXISTS engagement_mass_batch_open",
    "DROP INDEX IF EXISTS engagement_mass_batch_slot",
    "DROP INDEX IF EXISTS engagement_delivery_timeline",
    "DROP INDEX IF EXISTS engagement_delivery_settled",
    "DROP INDEX IF EXISTS engagement_delivery_counted",
    "DROP INDEX IF EXISTS engagement_delivery_batch",
    "DROP INDEX IF EXISTS engagement_delivery_entry",
    "DROP INDEX IF EXISTS engagement_delivery_source",
    "DROP INDEX IF EXISTS engagement_delivery_waiting",
    "DROP INDEX IF EXISTS engagement_delivery_claimed",
    "DROP INDEX IF EXISTS engagement_delivery_due",
    "DROP INDEX IF EXISTS engagement_delivery_key",
    "DROP INDEX IF EXISTS engagement_entry_list",
    "DROP INDEX IF EXISTS engagement_entry_recent",
    "DROP INDEX IF EXISTS engagement_entry_key",
    "DROP INDEX IF EXISTS engagement_broadcast_fanout",
    "DROP INDEX IF EXISTS engagement_broadcast_tenant",
    "DROP INDEX IF EXISTS engagement_journey_active",
    "DROP INDEX IF EXISTS engagement_journey_trigger",
    "DROP INDEX IF EXISTS engagement_journey_name",
    "DROP INDEX IF EXISTS engagement_settings_tenant",
    "ALTER TABLE engagement_conversion DROP CONSTRAINT IF EXISTS engagement_conversion_kind",
    "ALTER TABLE engagement_mass_batch DROP CONSTRAINT IF EXISTS engagement_mass_batch_state",
    "ALTER TABLE engagement_delivery DROP CONSTRAINT IF EXISTS engagement_delivery_skips",
    "ALTER TABLE engagement_delivery DROP CONSTRAINT IF EXISTS engagement_delivery_purpose",
    "ALTER TABLE engagement_delivery DROP CONSTRAINT IF EXISTS engagement_delivery_kind",
    "ALTER TABLE engagement_delivery DROP CONSTRAINT IF EXISTS engagement_delivery_state",
    "ALTER TABLE engagement_broadcast DROP CONSTRAINT IF EXISTS engagement_broadcast_numbers",
    "ALTER TABLE engagement_broadcast DROP CONSTRAINT IF EXISTS engagement_broadcast_status",
    "ALTER TABLE engagement_journey DROP CONSTRAINT IF EXISTS engagement_journey_definition",
    "ALTER TABLE engagement_journey DROP CONSTRAINT IF EXISTS engagement_journey_holdout",
    "ALTER TABLE engagement_journey DROP CONSTRAINT IF EXISTS engagement_journey_status",
    "ALTER TABLE engagement_settings DROP CONSTRAINT IF EXISTS engagement_settings_ranges",
]


forwards = sql_migration(ID, "engagement", DESCRIPTION, FORWARDS, BACKWARDS)
