from piccolo.conf.apps import AppConfig

from siyu.core.settings import REPO_ROOT
from siyu.tenants import tables

APP_CONFIG = AppConfig(
    app_name="tenants",
    migrations_folder_path=str(REPO_ROOT / "migrations" / "tenants"),
    table_classes=[
        tables.Tenant,
        tables.ChannelAccount,
        tables.Staff,
        tables.Team,
        tables.TeamMember,
        tables.Invitation,
        tables.ApiKey,
        tables.AuditLog,
    ],
)
