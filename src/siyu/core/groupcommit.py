"""Group commit: requests that must each be durable before they are answered share one statement and one
commit.

Under concurrent load, one INSERT and one commit per request costs a round trip, a connection and an fsync
each, and the requests queue for the pool. A `GroupCommit` takes what arrives together (up to `max_batch`,
waiting at most `max_wait` once the first item is in) and hands the list to its `write` coroutine, which
stores it in one transaction and returns one result per item (a value, or an exception for that item alone);
each caller waits only for its own result, so it still answers after its row is committed.

One bad item never fails the others: a batch whose write raises is written again item by item, and only an
item that cannot be stored on its own gets the exception. When the database is unreachable, the whole batch
fails at once (writing the items one by one cannot help).

The writer lives on the event loop of its first `submit`; a new loop (tests, a restarted server) gets a new
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from siyu.core import db

log = logging.getLogger("siyu.core.groupcommit")

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256
MAX_WAIT = 0.002  # seconds a batch waits for company once its first item arrived


def is_connection_error(exc: BaseException) -> bool:
    """The database is unreachable (not this data)."""
    import asyncpg

    return isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]], name: str,
                 max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT) -> None:
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self.max_wait = max_wait  # may be changed while it runs (tests wait longer to batch what they send)
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False  # a batch taken from the queue is being written

    def _ensure_started(self) -> asyncio.Queue[_Pending[T, R]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            # A context of its own: the first caller's (an open transaction, say) must not leak into the writer.
            self._task = loop.create_task(self._run(self._queue), name=f"siyu-groupcommit-{self._name}",
                                          context=contextvars.Context())
        return self._queue

    async def submit(self, item: T) -> R:
        """Store `item` with whatever arrives with it; returns once it is committed (or raises its error)."""
        queue = self._ensure_started()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(item, future))
        return await future

    async def write(self, item: T) -> R:
        """`submit`, except inside the caller's open transaction: there the item is written alone, in it (the
        shared writer commits on its own connection, which the caller's rollback could not undo)."""
        if not db.in_transaction():
            return await self.submit(item)
        [result] = await self._write([item])
        if isinstance(result, BaseException):
            raise result
        return result

    async def stop(self) -> None:
        """Stop the writer (after the items handed in are written: callers are waiting for them)."""
        queue, task = self._queue, self._task
        if task is None or queue is None or self._loop is not asyncio.get_running_loop():
            return
        # The batch being written is off the queue already: cancelling it would leave its callers waiting.
        while not queue.empty() or self._writing:
            await asyncio.sleep(0.001)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = self._queue = None
        # Handed in between the last look and the cancel: written here, so no caller is left waiting.
        leftovers = []
        while not queue.empty():
            leftovers.append(queue.get_nowait())
        if leftovers:
            await self._write_batch(leftovers)

    async def _run(self, queue: asyncio.Queue[_Pending[T, R]]) -> None:
        while True:
            batch = [await queue.get()]
            self._writing = True
            try:
                await asyncio.sleep(self.max_wait)
                while len(batch) < self._max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
                await self._write_batch(batch)
            finally:
                self._writing = False

    async def _write_batch(self, batch: list[_Pending[T, R]]) -> None:
        try:
            await self._deliver(batch)
        except Exception as exc:
            if len(batch) == 1 or is_connection_error(exc):
                self._fail(batch, exc)
            else:
                log.warning("%s: writing %s together failed (%r); writing them one by one", self._name,
                            len(batch), exc)
                await self._one_by_one(batch)

    async def _deliver(self, batch: list[_Pending[T, R]]) -> None:
        results = await self._write([p.item for p in batch])
        for p, result in zip(batch, results, strict=True):
            if p.future.done():  # its caller went away
                continue
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    def _fail(self, batch: list[_Pending[T, R]], exc: BaseException) -> None:
        log.error("%s: writing %s failed: %r", self._name, len(batch), exc)
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    async def _one_by_one(self, batch: list[_Pending[T, R]]) -> None:
        for i, p in enumerate(batch):
            try:
                await self._deliver([p])
            except Exception as exc:
                if is_connection_error(exc):
                    self._fail(batch[i:], exc)
                    return
                self._fail([p], exc)


def pending_tasks() -> set[asyncio.Task[Any]]:
    """Background hand-overs still running (see `hand_over`)."""
    return _background


_background: set[asyncio.Task[Any]] = set()


def hand_over(work: Awaitable[Any], what: str) -> None:
    """Run `work` (an enqueue after commit) in the background: the callers are answered without waiting for
    it; what it fails to do the caller's sweeper does from PostgreSQL."""
    async def guarded() -> None:
        try:
            await work
        except Exception:
            log.exception("%s failed; the sweeper will pick it up", what)

    task = asyncio.get_running_loop().create_task(guarded())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def settle() -> None:
    """Wait for the background hand-overs (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
