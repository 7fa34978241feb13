from piccolo.conf.apps import AppConfig

from siyu.contacts import tables
from siyu.core.settings import REPO_ROOT

APP_CONFIG = AppConfig(
    app_name="contacts",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "contacts"),
    table_classes=[tables.Contact, tables.Identity, tables.ContactMerge, tables.Tag, tables.ContactTag,
                   tables.Owner, tables.ContactSettings, tables.ParkedBatch, tables.BulkAction],
    migration_dependencies=["siyu.tenants.piccolo_app"],
)
