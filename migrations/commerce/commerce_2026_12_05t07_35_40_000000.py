"""Tenant-first keys of commerce: one merchant per tenant, one key per id, one stored notification per
(mchid, resource, event type), one purchase per order id and per WeChat Pay transaction, one refund per refund
number, one product per SKU, one figures row per contact; the indexes the pages and segments read, and CHECKs."""

from siyu.core.migrations import sql_migration

ID = "2026-12-05T07:35:40:000000"
VERSION = "1.38.0"
DESCRIPTION = "commerce keys, indexes and checks"

FORWARDS = [
    "CREATE UNIQUE INDEX commerce_pay_merchant_tenant ON commerce_pay_merchant (tenant)",
    "ALTER TABLE commerce_pay_merchant ADD CONSTRAINT commerce_pay_merchant_mchid CHECK (mchid ~ '^[0-9]{6,32}$')",
    "CREATE UNIQUE INDEX commerce_pay_key_id ON commerce_pay_key (tenant, key_id)",
    "ALTER TABLE commerce_pay_key ADD CONSTRAINT commerce_pay_key_kind CHECK (kind IN ('public_key', 'platform_cert'))",
    # What makes a notification's processing idempotent: WeChat's retries hit this key.
    "CREATE UNIQUE INDEX commerce_pay_notification_key ON commerce_pay_notification "
    "(tenant, mchid, resource_key, event_type)",
    "CREATE INDEX commerce_pay_notification_unprocessed ON commerce_pay_notification (received_at) "
    "WHERE processed_at IS NULL",
    "CREATE UNIQUE INDEX commerce_purchase_order ON commerce_purchase (tenant, order_id)",
    "CREATE UNIQUE INDEX commerce_purchase_transaction ON commerce_purchase (tenant, transaction_id) "
    "WHERE transaction_id IS NOT NULL",
    "CREATE INDEX commerce_purchase_out_trade_no ON commerce_purchase (tenant, out_trade_no) "
    "WHERE out_trade_no IS NOT NULL",
    # The purchases page's search by the start of an order id (LIKE 'abc%').
    "CREATE INDEX commerce_purchase_order_prefix ON commerce_purchase (tenant, order_id varchar_pattern_ops)",
    "CREATE INDEX commerce_purchase_contact ON commerce_purchase (tenant, contact, paid_at DESC, id DESC)",
    "CREATE INDEX commerce_purchase_identity ON commerce_purchase (tenant, identity) WHERE identity IS NOT NULL",
    "CREATE INDEX commerce_purchase_page ON commerce_purchase (tenant, paid_at DESC, id DESC)",
    "CREATE INDEX commerce_purchase_flagged ON commerce_purchase (tenant, paid_at DESC, id DESC) "
    "WHERE flags <> '{}'",
    "ALTER TABLE commerce_purchase ADD CONSTRAINT commerce_purchase_amounts CHECK (amount_fen >= 0 "
    "AND refunded_fen >= 0 AND (api_amount_fen IS NULL OR api_amount_fen >= 0) "
    "AND (pay_amount_fen IS NULL OR pay_amount_fen >= 0))",
    "ALTER TABLE commerce_purchase ADD CONSTRAINT commerce_purchase_currency CHECK (currency ~ '^[A-Z]{3}$')",
    "ALTER TABLE commerce_purchase ADD CONSTRAINT commerce_purchase_sources "
    "CHECK (sources <@ ARRAY['api', 'pay', 'import']::varchar[] AND cardinality(sources) > 0)",
    "ALTER TABLE commerce_purchase ADD CONSTRAINT commerce_purchase_items CHECK (jsonb_typeof(items) = 'array')",
    "CREATE UNIQUE INDEX commerce_refund_key ON commerce_refund (tenant, refund_id)",
    "CREATE UNIQUE INDEX commerce_refund_wechat ON commerce_refund (tenant, wechat_refund_id) "
    "WHERE wechat_refund_id IS NOT NULL",
    "CREATE INDEX commerce_refund_purchase ON commerce_refund (tenant, purchase)",
    "CREATE INDEX commerce_refund_waiting ON commerce_refund (tenant, order_id) WHERE purchase IS NULL",
    "ALTER TABLE commerce_refund ADD CONSTRAINT commerce_refund_status "
    "CHECK (status IN ('success', 'abnormal', 'closed'))",
    "ALTER TABLE commerce_refund ADD CONSTRAINT commerce_refund_amount CHECK (amount_fen >= 0)",
    "CREATE UNIQUE INDEX commerce_product_sku ON commerce_product (tenant, sku)",
    "ALTER TABLE commerce_product ADD CONSTRAINT commerce_product_replenish "
    "CHECK (replenish_days IS NULL OR replenish_days BETWEEN 1 AND 3650)",
    "CREATE UNIQUE INDEX commerce_contact_stats_contact ON commerce_contact_stats (tenant, contact)",
    "CREATE INDEX commerce_contact_stats_spent ON commerce_contact_stats (tenant, spent_fen)",
    "CREATE INDEX commerce_contact_stats_skus ON commerce_contact_stats USING gin (skus)",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS commerce_contact_stats_skus",
    "DROP INDEX IF EXISTS commerce_contact_stats_spent",
    "DROP INDEX IF EXISTS commerce_contact_stats_contact",
    "ALTER TABLE commerce_product DROP CONSTRAINT IF EXISTS commerce_product_replenish",
    "DROP INDEX IF EXISTS commerce_product_sku",
    "ALTER TABLE commerce_refund DROP CONSTRAINT IF EXISTS commerce_refund_amount",
    "ALTER TABLE commerce_refund DROP CONSTRAINT IF EXISTS commerce_refund_status",
    "DROP INDEX IF EXISTS commerce_refund_waiting",
    "DROP INDEX IF EXISTS commerce_refund_purchase",
    "DROP INDEX IF EXISTS commerce_refund_wechat",
    "DROP INDEX IF EXISTS commerce_refund_key",
    "ALTER TABLE commerce_purchase DROP CONSTRAINT IF EXISTS commerce_purchase_items",
    "ALTER TABLE commerce_purchase DROP CONSTRAINT IF EXISTS commerce_purchase_sources",
    "ALTER TABLE commerce_purchase DROP CONSTRAINT IF EXISTS commerce_purchase_currency",
    "ALTER TABLE commerce_purchase DROP CONSTRAINT IF EXISTS commerce_purchase_amounts",
    "DROP INDEX IF EXISTS commerce_purchase_flagged",
    "DROP INDEX IF EXISTS commerce_purchase_page",
    "DROP INDEX IF EXISTS commerce_purchase_identity",
    "DROP INDEX IF EXISTS commerce_purchase_contact",
    "DROP INDEX IF EXISTS commerce_purchase_order_prefix",
    "DROP INDEX IF EXISTS commerce_purchase_out_trade_no",
    "DROP INDEX IF EXISTS commerce_purchase_transaction",
    "DROP INDEX IF EXISTS commerce_purchase_order",
    "DROP INDEX IF EXISTS commerce_pay_notification_unprocessed",
    "DROP INDEX IF EXISTS commerce_pay_notification_key",
    "ALTER TABLE commerce_pay_key DROP CONSTRAINT IF EXISTS commerce_pay_key_kind",
    "DROP INDEX IF EXISTS commerce_pay_key_id",
    "ALTER TABLE commerce_pay_merchant DROP CONSTRAINT IF EXISTS commerce_pay_merchant_mchid",
    "DROP INDEX IF EXISTS commerce_pay_merchant_tenant",
]


forwards = sql_migration(ID, "commerce", DESCRIPTION, FORWARDS, BACKWARDS)
