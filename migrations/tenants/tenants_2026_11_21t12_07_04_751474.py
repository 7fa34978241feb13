from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-21T12:07:04:751474"
VERSION = "1.38.0"
DESCRIPTION = "no part of a secret in clear: drop secret_hint"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="tenants", description=DESCRIPTION
    )

    manager.drop_column(
        table_class_name="ChannelAccount",
        tablename="channel_account",
        column_name="secret_hint",
        db_column_name="secret_hint",
        schema=None,
    )

    return manager
