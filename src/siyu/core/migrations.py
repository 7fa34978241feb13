"""Helpers for hand-written Piccolo migrations: what Piccolo's auto-migrations cannot express (composite
unique keys that start with the tenant, partial indexes, CHECK constraints) as plain SQL, reversible."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder


def sql_migration(migration_id: str, app_name: str, description: str, forwards: Sequence[str],
                  backwards: Sequence[str]) -> Callable[[], Awaitable[MigrationManager]]:
    """The `forwards()` coroutine a Piccolo migration module exports, running statements in order."""

    async def run(statements: Sequence[str]) -> None:
        for statement in statements:
            await engine_finder().run_ddl(statement)

    async def migration() -> MigrationManager:
        manager = MigrationManager(migration_id=migration_id, app_name=app_name, description=description)

        async def up() -> None:
            await run(forwards)

        async def down() -> None:
            await run(backwards)

        manager.add_raw(up)
        manager.add_raw_backwards(down)
        return manager

    return migration
