from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.segments import tables

APP_CONFIG = AppConfig(
    app_name="segments",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "segments"),
    table_classes=[tables.Segment],
    migration_dependencies=["siyu.contacts.piccolo_app"],
)
