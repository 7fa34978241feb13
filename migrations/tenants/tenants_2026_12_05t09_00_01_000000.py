"""Seal every callback Token kept in clear (it lets anyone forge plain-mode callbacks), then drop the
clear column. The sealing needs SIYU_SECRET_KEY, like everything else that opens a secret; tokens are
bound to their tenant, account kind and column as the other sealed values are."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from siyu.core import db
from siyu.core.crypto import box

ID = "2026-12-05T09:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "the callback Token sealed like the other secrets: seal the stored ones, drop the clear column"


async def seal_tokens() -> None:
    b = box()
    for row in await db.fetch("SELECT id, tenant, kind, callback_token FROM channel_account "
                              "WHERE token_encrypted = '' ORDER BY id FOR UPDATE"):
        sealed = b.seal(row["callback_token"], f"channel_account:{row['tenant']}:{row['kind']}:token")
        await db.execute("UPDATE channel_account SET token_encrypted = $1 WHERE id = $2", sealed, row["id"])


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="tenants", description=DESCRIPTION
    )

    manager.add_raw(seal_tokens)  # Piccolo runs raw steps before the column operations below

    manager.drop_column(
        table_class_name="ChannelAccount",
        tablename="channel_account",
        column_name="callback_token",
        db_column_name="callback_token",
        schema=None,
    )

    return manager
