"""PostgreSQL through Piccolo: the engine, the pool, migrations, and after-commit hooks."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from piccolo.engine.finder import engine_finder
from piccolo.engine.postgres import PostgresEngine

log = logging.getLogger(__name__)

# Hooks that must run only once the surrounding transaction has committed (jobs, live updates).
_after_commit: contextvars.ContextVar[list[Callable[[], Awaitable[Any]]] | None] = contextvars.ContextVar(
    "siyu_after_commit", default=None
)


def engine() -> PostgresEngine:
    db = engine_finder()
    assert isinstance(db, PostgresEngine), "Siyu runs on PostgreSQL only"
    return db


async def start_pool(min_size: int = 1, max_size: int = 10) -> None:
    if engine().pool is None:  # one pool per process, whoever asks first
        await engine().start_connection_pool(min_size=min_size, max_size=max_size)


async def close_pool() -> None:
    if engine().pool is not None:
        await engine().close_connection_pool()


@asynccontextmanager
async def transaction() -> AsyncIterator[None]:
    """One transaction for a `do_*` service. Hooks registered with `on_commit` run after it commits;
    nested calls join the outermost transaction and its hooks."""
    if _after_commit.get() is not None:
        yield  # joined the outer transaction
        return
    hooks: list[Callable[[], Awaitable[Any]]] = []
    token = _after_commit.set(hooks)
    try:
        async with engine().transaction():
            yield
    finally:
        _after_commit.reset(token)
    for hook in hooks:
        try:
            await hook()
        except Exception:  # the change is committed; a failed side effect must not undo the answer
            log.exception("after-commit hook failed")


def on_commit(hook: Callable[[], Awaitable[Any]]) -> None:
    hooks = _after_commit.get()
    if hooks is None:
        raise RuntimeError("on_commit() called outside siyu.core.db.transaction()")
    hooks.append(hook)


async def ping() -> None:
    await engine().run_ddl("SELECT 1")


async def migrate(progress: Callable[[str], None] | None = None) -> None:
    """Apply every pending Piccolo migration (all apps, in dependency order)."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    result = await run_forwards(app_name="all", fake=False)
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}")
    if progress:
        progress("migrations applied")
