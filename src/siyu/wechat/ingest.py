"""Group commit for inbound callbacks.

Every callback must be durable in PostgreSQL before Siyu answers `success`. Under load, one INSERT and
one commit per callback costs a round trip and an fsync each; here the callbacks that arrive together
are written with one multi-row `INSERT … ON CONFLICT` in one transaction, and each request waits only
for its own row. The same statement answers what the gateway still needs to decide its reply (is the
tenant suspended, has a rep silenced the bot for this person), so a callback costs no round trip of its
own. Processing is handed to the worker as one arq job per batch (ids only). If the process dies between
the commit and the enqueue, the sweeper enqueues the events from PostgreSQL.

The batching is the core's group commit (`siyu.core.groupcommit`): one bad row never fails the others (a
batch whose write fails is written again row by row, and only a row that cannot be stored on its own answers
500, so WeChat retries it), and an unreachable database fails the batch at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from siyu.core import db, groupcommit
from siyu.core.groupcommit import GroupCommit
from siyu.wechat.protocol import Account, Normalized

log = logging.getLogger("siyu.wechat.ingest")

MAX_BATCH = 256
MAX_WAIT = 0.002  # seconds a batch waits for company once the first callback arrived

# Tenant and account are resolved here, not taken from the gateway's short-lived copy of the account:
# an account unlinked (or relinked) a moment ago can never receive a row under a stale id, and the
# tenant's status is read as of this write.
_INSERT = """
WITH stored AS (
    INSERT INTO wechat_inbound_event (tenant, channel_account, channel, dedup_key, kind, msg_type, event,
        external_id, occurred_at, payload, received_at, deliveries, attempts, last_error)
    SELECT t.id, ca.id, u.c, u.k, u.kd, u.mt, u.ev, u.x, u.o, u.p::jsonb, now(), u.n, 0, ''
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::timestamptz[], $9::text[], $10::int[]) AS u(slug, c, k, kd, mt, ev, x, o, p, n)
    JOIN tenant t ON t.slug = u.slug
    JOIN channel_account ca ON ca.tenant = t.id AND ca.kind = u.c
    ON CONFLICT (tenant, channel, dedup_key)
    DO UPDATE SET deliveries = wechat_inbound_event.deliveries + EXCLUDED.deliveries
    RETURNING id, tenant, channel, dedup_key, external_id, (xmax = 0) AS inserted
)
SELECT s.id, s.tenant, t.slug, s.channel, s.dedup_key, s.inserted, t.status = 'suspended' AS suspended,
    COALESCE(w.bot_silenced, false) AS bot_silenced
FROM stored s JOIN tenant t ON t.id = s.tenant
LEFT JOIN wechat_reply_window w ON w.tenant = s.tenant AND w.channel = s.channel AND w.external_id = s.external_id
"""

_COUNT_HITS = """
UPDATE wechat_auto_reply r SET hits = r.hits + u.n
FROM unnest($1::bigint[], $2::bigint[], $3::int[]) AS u(tenant, id, n)
WHERE r.tenant = u.tenant AND r.id = u.id
"""


class AccountGone(Exception):
    """The account was unlinked between the lookup and the write: the callback is refused (404)."""


@dataclass(frozen=True)
class Stored:
    """A callback's row: what the gateway answers by."""

    event_id: int
    is_new: bool
    tenant_id: int
    suspended: bool = False  # the tenant is suspended: stored, acknowledged, nothing else
    bot_silenced: bool = False  # a rep has this person: the Official Account's keyword rules stay quiet


@dataclass(frozen=True)
class _Item:
    account: Account
    event: Normalized
    payload: str


def _payload(fields: dict[str, Any], details: dict[str, Any], original: str | None) -> str:
    body: dict[str, Any] = {"fields": fields, "details": details}
    if original is not None:  # the text as WeChat sent it, when characters had to be replaced to store it
        body["original_b64"] = original
    return json.dumps(body, ensure_ascii=False)


class Ingestor:
    def __init__(self, enqueue: Any) -> None:
        self._enqueue = enqueue  # async callable(list[int])
        # The writer starts with the first callback, on the loop that serves it. `_write` is looked up at each
        # batch (tests wrap it on a running ingestor).
        self.writer: GroupCommit[_Item, Stored] = GroupCommit(lambda items: self._write(items), "inbound events",
                                                              max_batch=MAX_BATCH, max_wait=MAX_WAIT)
        self._hits: Counter[tuple[int, int]] = Counter()
        self._hits_task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        await self.settle()

    async def settle(self) -> None:
        """Wait until everything handed in is written and handed over (tests, shutdown); the next callback
        starts the writer again."""
        await self.writer.stop()
        await groupcommit.settle()
        await self.flush_hits()

    async def store(self, account: Account, event: Normalized, fields: dict[str, Any],
                    original: str | None = None) -> Stored:
        return await self.writer.submit(_Item(account, event, _payload(fields, event.details, original)))

    # --- auto-reply hits: a counter, not a record. One UPDATE at a time per process, carrying every hit
    # counted while the previous one ran, so a burst of replies to the same keyword does not queue each
    # callback behind one row lock (and an idle process writes a hit at once).

    def count_hit(self, tenant_id: int, rule_id: int) -> None:
        self._hits[(tenant_id, rule_id)] += 1
        if self._hits_task is None or self._hits_task.done():
            self._hits_task = asyncio.create_task(self._write_hits(), name="siyu-auto-reply-hits")

    async def _write_hits(self) -> None:
        while self._hits:
            await self.flush_hits()

    async def flush_hits(self) -> None:
        hits, self._hits = self._hits, Counter()
        if not hits:
            return
        keys = list(hits)
        try:
            await db.execute(_COUNT_HITS, [t for t, _ in keys], [r for _, r in keys], [hits[k] for k in keys])
        except Exception:  # a statistic: losing a few counts beats failing a reply
            log.exception("could not count %s auto-reply hits", sum(hits.values()))

    # --- the writer

    async def _write(self, items: list[_Item]) -> list[Stored | BaseException]:
        """One statement and one commit for a batch; each item's row, or AccountGone for its own."""
        # Retries of one message can arrive in the same batch: write each key once, count its deliveries.
        by_key: dict[tuple[str, str, str], list[int]] = {}
        for n, item in enumerate(items):
            by_key.setdefault((item.account.slug, item.account.channel, item.event.dedup_key), []).append(n)
        columns: list[list[Any]] = [[] for _ in range(10)]
        for group in by_key.values():
            item = items[group[0]]
            e = item.event
            for c, value in enumerate((item.account.slug, item.account.channel, e.dedup_key, e.kind, e.msg_type,
                                       e.event, e.external_id, e.occurred_at, item.payload, len(group))):
                columns[c].append(value)
        async with db.engine().pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_INSERT, *columns)
        found = {(r["slug"], r["channel"], r["dedup_key"]): r for r in rows}
        results: dict[int, Stored | BaseException] = {}
        new_ids: list[int] = []
        for key, group in by_key.items():
            row = found.get(key)
            if row is None:
                for n in group:
                    results[n] = AccountGone(key[0])
                continue
            inserted = bool(row["inserted"])
            if inserted:
                new_ids.append(int(row["id"]))
            for k, n in enumerate(group):
                results[n] = Stored(int(row["id"]), inserted and k == 0, int(row["tenant"]), bool(row["suspended"]),
                                    bool(row["bot_silenced"]))
        if new_ids:
            groupcommit.hand_over(self._enqueue(new_ids), f"enqueueing {len(new_ids)} inbound events")
        return [results[n] for n in range(len(items))]
