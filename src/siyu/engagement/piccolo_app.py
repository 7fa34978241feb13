from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.engagement import tables

APP_CONFIG = AppConfig(
    app_name="engagement",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "engagement"),
    table_classes=[tables.EngagementSettings, tables.Journey, tables.Broadcast, tables.Entry, tables.Delivery,
                   tables.MassBatch, tables.Conversion],
    migration_dependencies=["siyu.contacts.piccolo_app", "siyu.tenants.piccolo_app"],
)
