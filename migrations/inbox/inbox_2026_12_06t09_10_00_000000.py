from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Boolean
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-06T09:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "a rep's alerts: a sound and desktop notifications, each switchable"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="inbox", description=DESCRIPTION
    )
    for name in ("alert_sound", "alert_desktop"):
        manager.add_column(
            table_class_name="Agent",
            tablename="inbox_agent",
            column_name=name,
            db_column_name=name,
            column_class_name="Boolean",
            column_class=Boolean,
            params={
                "default": True,
                "null": False,
                "primary_key": False,
                "unique": False,
                "index": False,
                "index_method": IndexMethod.btree,
                "choices": None,
                "db_column_name": None,
                "secret": False,
            },
            schema=None,
        )

    return manager
