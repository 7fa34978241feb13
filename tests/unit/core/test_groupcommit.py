"""siyu.core.groupcommit: what arrives together is written together, each caller gets its own result, and one
bad item fails only itself."""

from __future__ import annotations

import asyncio
from typing import Any

from siyu.core.groupcommit import GroupCommit, hand_over, settle


async def test_items_arriving_together_share_one_write_and_each_gets_its_own_result() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[Any]:
        writes.append(items)
        return [i * 10 if i != 3 else ValueError("three") for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write, "test")
    results = await asyncio.gather(*(gc.submit(i) for i in range(6)), return_exceptions=True)
    await gc.stop()
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError)
    assert writes == [[0, 1, 2, 3, 4, 5]]  # one write for the six


async def test_a_batch_that_fails_is_written_one_by_one_and_only_the_bad_item_fails() -> None:
    writes: list[list[str]] = []

    async def write(items: list[str]) -> list[Any]:
        writes.append(items)
        if "bad" in items:
            raise RuntimeError("constraint violated")
        return [s.upper() for s in items]

    gc: GroupCommit[str, str] = GroupCommit(write, "test")
    results = await asyncio.gather(*(gc.submit(s) for s in ("a", "bad", "c")), return_exceptions=True)
    await gc.stop()
    assert results[0] == "A" and results[2] == "C" and isinstance(results[1], RuntimeError)
    assert writes == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_an_unreachable_database_fails_the_whole_batch_at_once() -> None:
    writes = 0

    async def write(items: list[int]) -> list[Any]:
        nonlocal writes
        writes += 1
        raise ConnectionRefusedError("database away")

    gc: GroupCommit[int, int] = GroupCommit(write, "test")
    results = await asyncio.gather(*(gc.submit(i) for i in range(4)), return_exceptions=True)
    await gc.stop()
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert writes == 1  # not retried one by one: that cannot help


async def test_the_writer_does_not_run_in_its_first_callers_context() -> None:
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="clean")
    seen: list[str] = []

    async def write(items: list[int]) -> list[Any]:
        seen.append(marker.get())
        return items

    gc: GroupCommit[int, int] = GroupCommit(write, "test")
    marker.set("caller's transaction")
    assert await gc.submit(1) == 1
    await gc.stop()
    assert seen == ["clean"]


async def test_a_failed_hand_over_is_logged_not_raised_and_settle_waits_for_them() -> None:
    done: list[str] = []

    async def ok() -> None:
        await asyncio.sleep(0.01)
        done.append("ok")

    async def fails() -> None:
        raise ConnectionError("redis away")

    hand_over(ok(), "ok")
    hand_over(fails(), "fails")
    await settle()
    assert done == ["ok"]


async def test_stop_waits_for_the_batch_being_written() -> None:
    """The batch in the writer's hands is no longer in its queue: a stop that only watched the queue cancelled the
    write and left its callers waiting forever."""
    started = asyncio.Event()

    async def write(items: list[int]) -> list[Any]:
        started.set()
        await asyncio.sleep(0.3)
        return [i + 1 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write, "test")
    caller = asyncio.create_task(gc.submit(1))
    await started.wait()
    await gc.stop()
    assert await asyncio.wait_for(caller, 2) == 2


async def test_an_item_handed_in_while_the_writer_stops_is_still_written() -> None:
    async def write(items: list[int]) -> list[Any]:
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write, "test")
    assert await gc.submit(1) == 10  # the writer runs
    stopping = asyncio.create_task(gc.stop())  # runs first: an empty queue, so it cancels the writer…
    late = asyncio.create_task(gc.submit(5))  # …and this one is handed to the writer being cancelled
    await stopping
    assert await asyncio.wait_for(late, 2) == 50
