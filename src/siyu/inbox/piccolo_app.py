from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.inbox import tables

APP_CONFIG = AppConfig(
    app_name="inbox",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "inbox"),
    table_classes=[tables.InboxSettings, tables.TeamRoute, tables.Agent, tables.Conversation, tables.Message,
                   tables.Assignment, tables.CannedReply],
    migration_dependencies=["siyu.contacts.piccolo_app", "siyu.tenants.piccolo_app"],
)
