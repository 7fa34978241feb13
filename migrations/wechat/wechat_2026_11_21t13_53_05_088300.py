from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar

ID = "2026-11-21T13:53:05:088300"
VERSION = "1.38.0"
DESCRIPTION = ""


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="wechat", description=DESCRIPTION
    )

    manager.alter_column(
        table_class_name="Outbound",
        tablename="wechat_outbound",
        column_name="window_slot",
        db_column_name="window_slot",
        params={"length": 16},
        old_params={"length": 8},
        column_class=Varchar,
        old_column_class=Varchar,
        schema=None,
    )

    return manager
