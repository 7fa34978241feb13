from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.timeline import tables

APP_CONFIG = AppConfig(
    app_name="timeline",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "timeline"),
    table_classes=[tables.TimelineEvent],
    migration_dependencies=["siyu.contacts.piccolo_app"],
)
