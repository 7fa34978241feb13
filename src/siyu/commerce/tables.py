"""Commerce: the tenant's WeChat Pay merchant and the keys that sign its notifications, the notifications as
received, purchases and refunds (whatever source told Siyu about them), the products learned from their items,
and each contact's purchase figures.

Every table carries `tenant` and starts its unique keys with it (Citus-ready); the composite and partial
unique indexes and the CHECKs are created in the hand-written migration (migrations/commerce).
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    Array,
    BigInt,
    BigSerial,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from siyu.contacts.tables import Contact, Identity
from siyu.tenants.tables import Tenant


class PayMerchant(Table, tablename="commerce_pay_merchant"):
    """The tenant's WeChat Pay merchant (one per tenant): what its notifications must name, the APIv3 key
    that decrypts them (sealed), and how the last ones went, for the channels page."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    mchid = Varchar(length=32)
    app_id = Varchar(length=32)  # the Mini Program (or Official Account) the payments are made in
    apiv3_key_sealed = Text()  # siyu.core.crypto, bound to tenant and column
    last_success_at = Timestamptz(null=True, default=None)
    # Since when notifications have been refused without one accepted in between (None: not failing).
    failing_since = Timestamptz(null=True, default=None)
    last_failure_at = Timestamptz(null=True, default=None)
    last_failure = Varchar(length=32, default="")  # decrypt | unknown_key | merchant | app | stale | signature
    last_failure_detail = Text(default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()


class PayKey(Table, tablename="commerce_pay_key"):
    """A key WeChat Pay signs notifications with, by the id `Wechatpay-Serial` names: a WeChat Pay public key
    (`PUB_KEY_ID_…`) or a platform certificate (its serial, upper-case hex). Several may be live at once
    while WeChat switches a merchant from certificates to the public key. Public material, not a secret."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    merchant = ForeignKey(PayMerchant, null=False, on_delete=OnDelete.cascade)
    key_id = Varchar(length=64)
    kind = Varchar(length=16)  # public_key | platform_cert
    pem = Text()
    not_after = Timestamptz(null=True, default=None)  # a certificate's expiry
    created_at = Timestamptz()


class PayNotification(Table, tablename="commerce_pay_notification"):
    """One WeChat Pay notification, verified and decrypted, stored before Siyu answers. Unique on (tenant,
    mchid, resource key, event type): WeChat's retries land on the same row and count as deliveries."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    mchid = Varchar(length=32)
    resource_key = Varchar(length=64)  # transaction_id (payments) or WeChat's refund_id (refunds)
    event_type = Varchar(length=32)
    notification_id = Varchar(length=64, default="")  # the envelope's `id`
    resource = JSONB(default={})  # the decrypted resource
    received_at = Timestamptz()
    deliveries = Integer(default=1)
    processed_at = Timestamptz(null=True, default=None)
    outcome = Varchar(length=32, default="")  # what processing did: recorded | ignored:<why>
    attempts = Integer(default=0)
    last_error = Text(default="")


class Purchase(Table, tablename="commerce_purchase"):
    """One order, whichever sources told Siyu about it (`sources`: api, pay, import). Items come from the
    brand's backend; the payment facts from WeChat Pay, which is authoritative for the amount (a different
    amount reported by the backend is kept in `api_amount_fen` and flagged, never silently overwritten)."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    order_id = Varchar(length=64)  # the brand's order id (= WeChat Pay's out_trade_no when Pay was used)
    out_trade_no = Varchar(length=64, null=True, default=None)  # as WeChat Pay named the order
    transaction_id = Varchar(length=64, null=True, default=None)  # WeChat Pay's payment id
    contact = ForeignKey(Contact, null=True, default=None, on_delete=OnDelete.set_null)
    identity = ForeignKey(Identity, null=True, default=None, on_delete=OnDelete.set_null)
    amount_fen = BigInt()
    currency = Varchar(length=3, default="CNY")
    api_amount_fen = BigInt(null=True, default=None)  # what the backend reported
    api_currency = Varchar(length=3, null=True, default=None)
    pay_amount_fen = BigInt(null=True, default=None)  # WeChat Pay's amount.total
    payer_total_fen = BigInt(null=True, default=None)  # what the payer paid after coupons
    items = JSONB(default=[])  # [{"sku", "name", "quantity", "unit_price_fen"}]
    skus = Array(base_column=Varchar(length=64), default=[])
    sources = Array(base_column=Varchar(length=8), default=[])
    paid_at = Timestamptz()
    refunded_fen = BigInt(default=0)  # the sum of its successful refunds
    flags = Array(base_column=Varchar(length=32), default=[])  # amount_mismatch | currency_mismatch | buyer_mismatch
    attach = Varchar(length=128, default="")
    buyer = JSONB(default={})  # how the sources named the buyer: openid + app_id | unionid | contact_id
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Refund(Table, tablename="commerce_refund"):
    """A refund of a purchase, by the brand's refund number (WeChat Pay's out_refund_no). A refund WeChat Pay
    reports before Siyu knows its purchase waits here (`purchase` empty) and is attached when it arrives."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    refund_id = Varchar(length=64)
    wechat_refund_id = Varchar(length=64, null=True, default=None)
    purchase = ForeignKey(Purchase, null=True, default=None, on_delete=OnDelete.cascade)
    order_id = Varchar(length=64, null=True, default=None)  # out_trade_no (Pay) or order_id (API)
    transaction_id = Varchar(length=64, null=True, default=None)
    amount_fen = BigInt()
    status = Varchar(length=16)  # success | abnormal | closed
    refunded_at = Timestamptz(null=True, default=None)
    sources = Array(base_column=Varchar(length=8), default=[])
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Product(Table, tablename="commerce_product"):
    """A product as the purchases' items named it: the newest name and unit price, and how often a customer
    runs out of it (set by an admin; the re-engagement rules read it)."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    sku = Varchar(length=64)
    name = Varchar(length=200, default="")
    last_price_fen = BigInt(null=True, default=None)
    currency = Varchar(length=3, default="CNY")
    price_at = Timestamptz()  # the purchase time the name and price come from
    replenish_days = Integer(null=True, default=None)
    first_sold_at = Timestamptz()
    created_at = Timestamptz()
    updated_at = Timestamptz()


class ContactStats(Table, tablename="commerce_contact_stats"):
    """A contact's purchase figures, recomputed from their purchases whenever one of them changes (and on
    merges), so segments can filter on them without aggregating every contact's orders."""

    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    contact = ForeignKey(Contact, null=False, on_delete=OnDelete.cascade)
    orders = Integer(default=0)  # purchases not wholly refunded
    spent_fen = BigInt(default=0)  # CNY paid, net of refunds
    first_purchase_at = Timestamptz(null=True, default=None)
    last_purchase_at = Timestamptz(null=True, default=None)
    skus = Array(base_column=Varchar(length=64), default=[])  # bought and not wholly refunded
    updated_at = Timestamptz()


class PurchaseImport(Table, tablename="commerce_import"):
    """A history import of orders from a CSV file (docs/purchase-import.md): where it stands, so the page shows
    its progress and a re-run continues after a crash. The file's lines wait in staging tables named by
    `staging` (unlogged, dropped when the import ends); `checkpoint` is the last batch of orders committed."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    filename = Varchar(length=200, default="")
    sha256 = Varchar(length=64)
    size_bytes = BigInt(default=0)
    encoding = Varchar(length=16, default="utf-8")
    staging = Varchar(length=63, default="")
    status = Varchar(length=16)  # staging | checking | importing | merging | done | failed
    lines_total = BigInt(default=0)
    orders_total = BigInt(default=0)
    lines_done = BigInt(default=0)
    orders_done = BigInt(default=0)
    created = BigInt(default=0)  # new purchases
    merged = BigInt(default=0)  # orders added to purchases other sources had reported
    unchanged = BigInt(default=0)  # orders imported before, the same
    refunds = BigInt(default=0)
    failed_orders = BigInt(default=0)  # orders left out for an error on one of their lines
    error_lines = BigInt(default=0)  # errors found (the first MAX_STORED_ERRORS are kept)
    checkpoint = BigInt(default=0)
    failure = Text(default="")
    created_by = Varchar(length=254, default="")
    created_at = Timestamptz()
    updated_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)


class PurchaseImportError(Table, tablename="commerce_import_error"):
    """One problem an import found: the line (the header is line 1) and column, and what is wrong as a code
    the pages and the downloadable report put in words."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    purchase_import = ForeignKey(PurchaseImport, null=False, on_delete=OnDelete.cascade)
    line = BigInt()
    column_name = Varchar(length=32, default="")
    code = Varchar(length=32)
    detail = Text(default="")
