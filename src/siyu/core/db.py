"""PostgreSQL through Piccolo: the engine, the pool, migrations, and after-commit hooks."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from piccolo.engine.finder import engine_finder
from piccolo.engine.postgres import PostgresEngine

log = logging.getLogger(__name__)

# Hooks that must run only once the surrounding transaction has committed (jobs, live updates).
_after_commit: contextvars.ContextVar[list[Callable[[], Awaitable[Any]]] | None] = contextvars.ContextVar(
    "siyu_after_commit", default=None
)


_engine: PostgresEngine | None = None


def engine() -> PostgresEngine:
    """The process's engine (PICCOLO_CONF's `DB`), found once: every statement asks for it."""
    global _engine
    if _engine is None:
        found = engine_finder()
        assert isinstance(found, PostgresEngine), "Siyu runs on PostgreSQL only"
        _engine = found
    return _engine


async def _keep_session(conn: Any) -> None:
    """What a connection needs between two uses: nothing. asyncpg has already rolled back a transaction left
    open; Siyu never changes session state on a pooled connection (settings are `SET LOCAL`, LISTEN has its
    own connection), so asyncpg's default reset query would be one more round trip after every use."""


async def start_pool(min_size: int = 1, max_size: int = 10) -> None:
    if engine().pool is None:  # one pool per process, whoever asks first
        await engine().start_connection_pool(min_size=min_size, max_size=max_size, reset=_keep_session)


async def close_pool(timeout: float = 5.0) -> None:
    """Close the pool; a connection still held after `timeout` (by a cancelled task that never gave it back)
    is cut, so stopping a process never waits on it."""
    pool = engine().pool
    if pool is None:
        return
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("connections still in use after %.0f s: closing them", timeout)
        pool.terminate()
    engine().pool = None


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


def in_transaction() -> bool:
    return _after_commit.get() is not None


def _current_connection() -> Any:
    tx = engine().current_transaction.get()
    return tx.connection if tx is not None else None


@asynccontextmanager
async def _acquire() -> AsyncIterator[Any]:
    pool = engine().pool
    if pool is not None:
        async with pool.acquire() as conn:
            yield conn
        return
    import asyncpg  # no pool (the CLI, a script): a connection for this statement only

    conn = await asyncpg.connect(engine().config["dsn"])
    try:
        yield conn
    finally:
        await conn.close()


async def fetch(sql: str, *args: Any) -> list[Any]:
    """Raw SQL with asyncpg's `$n` parameters, in the current transaction if there is one."""
    conn = _current_connection()
    if conn is not None:
        return list(await conn.fetch(sql, *args))
    async with _acquire() as pooled:
        return list(await pooled.fetch(sql, *args))


async def fetchrow(sql: str, *args: Any) -> Any:
    rows = await fetch(sql, *args)
    return rows[0] if rows else None


async def execute(sql: str, *args: Any) -> str:
    conn = _current_connection()
    if conn is not None:
        return str(await conn.execute(sql, *args))
    async with _acquire() as pooled:
        return str(await pooled.execute(sql, *args))


async def copy_to_table(table: str, **options: Any) -> str:
    """COPY … FROM STDIN into `table` (asyncpg's `copy_to_table` options: source, columns, format, header,
    encoding…), in the current transaction if there is one. Returns the command tag (`COPY n`)."""
    conn = _current_connection()
    if conn is not None:
        return str(await conn.copy_to_table(table, **options))
    async with _acquire() as pooled:
        return str(await pooled.copy_to_table(table, **options))


async def copy_records(table: str, records: Any, columns: Sequence[str]) -> str:
    """Binary COPY of Python rows into `table` (asyncpg's `copy_records_to_table`), in the current transaction
    if there is one."""
    conn = _current_connection()
    if conn is not None:
        return str(await conn.copy_records_to_table(table, records=records, columns=list(columns)))
    async with _acquire() as pooled:
        return str(await pooled.copy_records_to_table(table, records=records, columns=list(columns)))


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


ACCOUNTS_CHANGED = "siyu_accounts_changed"  # payload: tenant id
AUTO_REPLIES_CHANGED = "siyu_auto_replies_changed"  # payload: tenant id


async def notify(channel: str, payload: str = "") -> None:
    """PostgreSQL NOTIFY inside the current transaction: delivered to listeners only if it commits."""
    await engine().run_ddl(f"SELECT pg_notify('{channel}', '{int(payload) if payload.isdigit() else ''}')")


class Listener:
    """LISTEN on a dedicated connection (pooled ones come and go) and call `on_message(channel, payload)`.
    If the connection drops, it reconnects; callers keep a TTL as a safety net meanwhile."""

    def __init__(self, channels: list[str], on_message: Callable[[str, str], None]) -> None:
        self.channels = channels
        self.on_message = on_message
        self._conn: Any = None
        self._task: Any = None

    async def start(self) -> None:
        import asyncio

        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="siyu-db-listener")

    async def _connect(self) -> None:
        import asyncpg

        dsn = engine().config["dsn"]
        self._conn = await asyncpg.connect(dsn)
        for channel in self.channels:
            await self._conn.add_listener(channel, self._received)

    def _received(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.on_message(channel, payload)

    async def _watch(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(5)
            if self._conn is None or self._conn.is_closed():
                try:
                    await self._connect()
                    self.on_message("*", "")  # we may have missed notifications: forget everything
                except Exception:
                    log.warning("LISTEN connection lost; retrying in 5 s")

    async def stop(self) -> None:
        import contextlib

        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
