from piccolo.conf.apps import AppConfig

from siyu.commerce import tables
from siyu.core.settings import REPO_ROOT

APP_CONFIG = AppConfig(
    app_name="commerce",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "commerce"),
    table_classes=[tables.PayMerchant, tables.PayKey, tables.PayNotification, tables.Purchase, tables.Refund,
                   tables.Product, tables.ContactStats, tables.PurchaseImport, tables.PurchaseImportError],
    migration_dependencies=["siyu.contacts.piccolo_app", "siyu.tenants.piccolo_app"],
)
