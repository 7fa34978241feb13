"""Group commit for inbound callbacks.

Every callback must be durable in PostgreSQL before Siyu answers `success`. Under load, one INSERT and
one commit per callback costs a round trip and an fsync each; here the callbacks that arrive together
are written with one multi-row `INSERT … ON CONFLICT` in one transaction, and each request waits only
for its own row. Their processing is handed to the worker as one arq job per batch (ids only). If the
process dies between the commit and the enqueue, the sweeper enqueues the events from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from siyu.core import db
from siyu.wechat.protocol import Account, Normalized
from siyu.wechat.services import Recorded

log = logging.getLogger("siyu.wechat.ingest")

MAX_BATCH = 256
MAX_WAIT = 0.002  # seconds a batch waits for company once the first callback arrived

# Tenant and account are resolved here, not taken from the gateway's short-lived copy of the account:
# an account unlinked (or relinked) a moment ago can never receive a row under a stale id.
_INSERT = """
INSERT INTO wechat_inbound_event (tenant, channel_account, channel, dedup_key, kind, msg_type, event,
    external_id, occurred_at, payload, received_at, deliveries, attempts, last_error)
SELECT t.id, ca.id, u.c, u.k, u.kd, u.mt, u.ev, u.x, u.o, u.p::jsonb, now(), u.n, 0, ''
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::text[], $10::int[]) AS u(slug, c, k, kd, mt, ev, x, o, p, n)
JOIN tenant t ON t.slug = u.slug
JOIN channel_account ca ON ca.tenant = t.id AND ca.kind = u.c
ON CONFLICT (tenant, channel, dedup_key)
DO UPDATE SET deliveries = wechat_inbound_event.deliveries + EXCLUDED.deliveries
RETURNING id, tenant, (SELECT slug FROM tenant WHERE id = wechat_inbound_event.tenant) AS slug, channel, dedup_key,
    (xmax = 0) AS inserted
"""


class AccountGone(Exception):
    """The account was unlinked between the lookup and the write: the callback is refused (404)."""


@dataclass
class _Pending:
    account: Account
    event: Normalized
    payload: str
    future: asyncio.Future[Recorded]


class Ingestor:
    def __init__(self, enqueue: Any) -> None:
        self._enqueue = enqueue  # async callable(list[int])
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="siyu-ingest")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def settle(self) -> None:
        """Wait until everything handed in is written and handed over (tests, shutdown)."""
        while not self._queue.empty() or self._background:
            await asyncio.sleep(0.001)
            if self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)

    async def store(self, account: Account, event: Normalized, fields: dict[str, Any]) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        payload = json.dumps({"fields": fields, "details": event.details}, ensure_ascii=False)
        await self._queue.put(_Pending(account, event, payload, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Give the callbacks that arrive together a moment to join, then take what is there.
            await asyncio.sleep(MAX_WAIT)
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception as exc:  # each waiting request answers 500; WeChat retries
                log.exception("storing %s inbound events failed", len(batch))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        # Retries of one message can arrive in the same batch: write each key once, count its deliveries.
        by_key: dict[tuple[str, str, str], list[_Pending]] = {}
        for p in batch:
            by_key.setdefault((p.account.slug, p.account.channel, p.event.dedup_key), []).append(p)
        columns: list[list[Any]] = [[] for _ in range(10)]
        for group in by_key.values():
            p = group[0]
            e = p.event
            for i, value in enumerate((p.account.slug, p.account.channel, e.dedup_key, e.kind, e.msg_type, e.event,
                                       e.external_id, e.occurred_at, p.payload, len(group))):
                columns[i].append(value)
        pool = db.engine().pool
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_INSERT, *columns)
        results = {(r["slug"], r["channel"], r["dedup_key"]): r for r in rows}
        new_ids: list[int] = []
        for key, group in by_key.items():
            row = results.get(key)
            if row is None:
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(AccountGone(key[0]))
                continue
            inserted = bool(row["inserted"])
            if inserted:
                new_ids.append(int(row["id"]))
            for i, p in enumerate(group):
                if not p.future.done():
                    p.future.set_result(Recorded(int(row["id"]), inserted and i == 0, int(row["tenant"])))
        if new_ids:
            task = asyncio.create_task(self._hand_over(new_ids))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _hand_over(self, ids: list[int]) -> None:
        try:
            await self._enqueue(ids)
        except Exception:  # the events are durable; the sweeper enqueues them
            log.exception("could not enqueue %s inbound events; the sweeper will pick them up", len(ids))
