"""History imports: a brand arriving with years of orders loads them from a CSV file (docs/purchase-import.md),
from `siyu purchases import SLUG FILE.csv` or the upload page, with the same result as reporting each order
through the API, only fast.

1. stage: the file is COPYed as it is into an unlogged staging table (import_file.stage);
2. check: one statement types and checks every line and groups the lines into orders; what is wrong is
   recorded by line and column (the first MAX_STORED_ERRORS problems), and an order with a wrong line is
   left out whole;
3. import, in batches of orders, each one transaction that ends by moving the checkpoint: buyers found or
   created in bulk (contacts.bulk), their contacts share-locked, then set-based statements insert the new
   purchases, their refunds, timeline events (by source key) and products, and recompute the figures of
   every contact touched. Orders Siyu knows already (the backend or WeChat Pay reported them) are noted;
4. merge: those few go one by one through the purchases' own writer (`do_record_payment`), so their merging
   rules are exactly the API's;
5. done: the staging tables are dropped.

Idempotent: an order imported before (same amount and currency) changes nothing, so the same file twice
imports nothing the second time. Resumable: a run that stops (a crash, a deadline) continues from the
checkpoint; the CLI finds the unfinished import of the same file by its checksum and, if the staged lines
are gone (a PostgreSQL crash empties unlogged tables), stages them again and starts over, which the
idempotence makes safe. One batch at a time per tenant (a transaction-level advisory lock), so the figures
recomputed by each batch see every other's purchases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from siyu.commerce import buyers, import_file, merchants, products, purchases, stats
from siyu.commerce.import_file import Problem
from siyu.commerce.schemas import MAX_FEN, iso_currencies
from siyu.contacts import bulk
from siyu.core import clock, db, effects
from siyu.core.errors import Conflict, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.tenants import services as tenants
from siyu.tenants.services import Actor, record_audit
from siyu.timeline import services as timeline

log = logging.getLogger("siyu.commerce.imports")

RUN_IMPORT = "commerce.run_import"
RUN_IMPORT_TRIES = 20
SWEEP_IMPORTS = "commerce.sweep_imports"
SLICE_SECONDS = 40.0  # a job works this long, then hands over to the next (the worker's job timeout is 60 s)
SWEEP_AFTER_SECONDS = 120  # an unfinished import nobody moved for this long is picked up again
# An import still reading its file this long after it last moved lost its reader (the upload request or the
# CLI died while staging): it fails saying to import again (the CLI's re-run would start a new one anyway).
ABANDONED_STAGING_SECONDS = 3600
BATCH_LINES = 100_000  # a batch is the orders whose first line falls in a range of this many lines
MERGE_BATCH = 200
MAX_STORED_ERRORS = 50_000
MAX_UPLOAD_BYTES = 1024**3
UNFINISHED = ("staging", "checking", "importing", "merging")
READ_CHUNK = 1024 * 1024

_COLUMNS = ("id, filename, sha256, size_bytes, encoding, staging, status, lines_total, orders_total, lines_done, "
            "orders_done, created, merged, unchanged, refunds, failed_orders, error_lines, checkpoint, failure, "
            "created_by, created_at, updated_at, finished_at")


def run_job_id(import_id: int, step: int) -> str:
    return f"{RUN_IMPORT}:{import_id}:{step}"


@dataclass
class Progress:
    """How an import stands (a row of commerce_import)."""

    id: int
    filename: str
    status: str
    lines_total: int
    lines_done: int
    orders_total: int
    orders_done: int
    created: int
    merged: int
    unchanged: int
    refunds: int
    failed_orders: int
    error_lines: int
    failure: str
    created_at: datetime
    finished_at: datetime | None
    created_by: str = ""
    staging: str = ""
    checkpoint: int = 0
    sha256: str = ""
    encoding: str = "utf-8"
    size_bytes: int = 0

    def failure_message(self, translate: Callable[[str], str] = str) -> str:
        """Why the import failed, in the reader's words ("" unless it failed)."""
        if not self.failure:
            return ""
        code, _, detail = self.failure.partition(":")
        return import_file.message(code, detail, translate)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        if self.status in ("staging", "checking") or not self.lines_total:
            return 0
        return min(99, int(100 * self.lines_done / self.lines_total))


def _progress(row: Any) -> Progress:
    return Progress(id=int(row["id"]), filename=row["filename"], status=row["status"],
                    lines_total=int(row["lines_total"]), lines_done=int(row["lines_done"]),
                    orders_total=int(row["orders_total"]), orders_done=int(row["orders_done"]),
                    created=int(row["created"]), merged=int(row["merged"]), unchanged=int(row["unchanged"]),
                    refunds=int(row["refunds"]), failed_orders=int(row["failed_orders"]),
                    error_lines=int(row["error_lines"]), failure=row["failure"], created_at=row["created_at"],
                    finished_at=row["finished_at"], created_by=row["created_by"], staging=row["staging"],
                    checkpoint=int(row["checkpoint"]), sha256=row["sha256"], encoding=row["encoding"],
                    size_bytes=int(row["size_bytes"]))


async def get_import(tenant_id: int, import_id: int) -> Progress:
    if not 0 < import_id < 2**63:
        raise NotFound()
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM commerce_import WHERE tenant = $1 AND id = $2", tenant_id, import_id)
    if row is None:
        raise NotFound()
    return _progress(row)


async def list_imports(tenant_id: int, limit: int = 20) -> list[Progress]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM commerce_import WHERE tenant = $1 ORDER BY created_at DESC, id DESC "
                          "LIMIT $2", tenant_id, limit)
    return [_progress(r) for r in rows]


async def problems(tenant_id: int, import_id: int, after: tuple[int, int] = (0, 0),
                   limit: int = 1000) -> list[dict[str, Any]]:
    """The import's recorded problems in line order, in keyset pages (`after`: the (line, id) of the last
    problem of the previous page)."""
    rows = await db.fetch(
        "SELECT id, line, column_name, code, detail FROM commerce_import_error WHERE tenant = $1 "
        "AND purchase_import = $2 AND (line, id) > ($3, $4) ORDER BY line, id LIMIT $5",
        tenant_id, import_id, after[0], after[1], limit)
    return [dict(r) for r in rows]


async def report_csv(tenant_id: int, import_id: int, translate: Callable[[str], str] = str) -> AsyncIterator[bytes]:
    """The import's problems as CSV (UTF-8 with a BOM, so spreadsheets read Chinese): line, column, problem,
    read in pages so memory stays flat."""
    import csv
    import io

    yield "\ufeff".encode()
    after = (0, 0)
    first = True
    while True:
        rows = await problems(tenant_id, import_id, after, 5000)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if first:
            writer.writerow([translate(N_("line")), translate(N_("column")), translate(N_("problem"))])
            first = False
        for r in rows:
            writer.writerow([r["line"], r["column_name"], import_file.message(r["code"], r["detail"], translate)])
        yield buffer.getvalue().encode()
        if len(rows) < 5000:
            return
        after = (int(rows[-1]["line"]), int(rows[-1]["id"]))


# --- starting -----------------------------------------------------------------------------------------------

async def _new_import(tenant_id: int, filename: str, encoding: str, actor: Actor, sha256: str = "",
                      size: int = 0) -> Progress:
    row = await db.fetchrow(
        "INSERT INTO commerce_import (tenant, filename, sha256, size_bytes, encoding, staging, status, lines_total, "
        "orders_total, lines_done, orders_done, created, merged, unchanged, refunds, failed_orders, error_lines, "
        "checkpoint, failure, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, '', 'staging', 0, 0, "
        f"0, 0, 0, 0, 0, 0, 0, 0, 0, '', $6, now(), now()) RETURNING {_COLUMNS}",
        tenant_id, import_file.printable(filename)[:200], sha256, size, encoding, actor.label[:254])
    return _progress(row)


async def _set(tenant_id: int, import_id: int, **values: Any) -> None:
    names = sorted(values)
    sets = ", ".join(f"{n} = ${i + 3}" for i, n in enumerate(names))
    await db.execute(f"UPDATE commerce_import SET {sets}, updated_at = now() WHERE tenant = $1 AND id = $2",
                     tenant_id, import_id, *[values[n] for n in names])


async def _record_problems(tenant_id: int, import_id: int, found: Sequence[Problem], stored: int) -> int:
    """Keep the problems while fewer than MAX_STORED_ERRORS are kept; returns how many are kept now."""
    room = max(0, MAX_STORED_ERRORS - stored)
    keep = list(found)[:room]
    if keep:
        await db.copy_records("commerce_import_error", [
            (tenant_id, import_id, p.line, p.column[:32], p.code, import_file.printable(p.detail)[:500]) for p in keep],
            ("tenant", "purchase_import", "line", "column_name", "code", "detail"))
    return stored + len(keep)


async def _stored(tenant_id: int, import_id: int) -> int:
    row = await db.fetchrow("SELECT count(*) AS n FROM commerce_import_error WHERE tenant = $1 AND purchase_import = $2",
                            tenant_id, import_id)
    return int(row["n"])


async def _apps(tenant_id: int) -> dict[str, str]:
    """The brand's app ids a buyer's openid may belong to → the channel of that identity."""
    channels = await tenants.list_channels(tenant_id)
    found = {channels[k].app_id: k for k in ("oa", "mp") if k in channels}
    for app in await merchants.app_ids(tenant_id):
        found.setdefault(app, "mp")
    return found


@dataclass
class Source:
    """The file to import: its first bytes (for the header and the encoding), a way to stream it from the start
    and one to open it as a file (for the rare line-by-line reading)."""

    head: bytes
    opener: Callable[[], AsyncIterator[bytes]]
    binary: Callable[[], IO[bytes]] | None = None

    @classmethod
    def from_path(cls, path: Path) -> Source:
        with open(path, "rb") as fh:
            head = fh.read(import_file.MAX_HEADER_BYTES)

        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(READ_CHUNK):
                    yield chunk

        return cls(head, chunks, lambda: open(path, "rb"))  # noqa: SIM115 (closed by the reader's `with`)

    @classmethod
    def from_file(cls, fh: IO[bytes]) -> Source:
        """An uploaded (spooled) file, read from its start each time."""
        fh.seek(0)
        head = fh.read(import_file.MAX_HEADER_BYTES)

        async def chunks() -> AsyncIterator[bytes]:
            fh.seek(0)
            while chunk := fh.read(READ_CHUNK):
                yield chunk

        class _Shared:
            def __enter__(self) -> IO[bytes]:
                fh.seek(0)
                return fh

            def __exit__(self, *exc: object) -> None:
                return None

        return cls(head, chunks, lambda: _Shared())  # type: ignore[return-value]


async def stage(tenant_id: int, imp: Progress, source: Source, encoding: str = "auto") -> Progress:
    """Read the header, COPY the lines into staging and check them; the import is then ready to run (or
    failed, with the reason in words). The sha256 and size of what was staged are recorded."""
    if encoding == "auto":
        encoding = import_file.detect_encoding(source.head)
    if encoding not in import_file.ENCODINGS:
        raise InvalidInput.one("encoding", N_("Choose utf-8, gb18030 or auto."))
    staging = imp.staging or f"commerce_import_{imp.id}_{secrets.token_hex(4)}"
    await _set(tenant_id, imp.id, status="staging", staging=staging, encoding=encoding, checkpoint=0, lines_done=0,
               orders_done=0, created=0, merged=0, unchanged=0, refunds=0, failed_orders=0, error_lines=0)
    await db.execute("DELETE FROM commerce_import_error WHERE tenant = $1 AND purchase_import = $2", tenant_id, imp.id)
    try:
        columns = import_file.read_header(source.head, encoding)
    except InvalidInput as exc:
        await _refuse_file(tenant_id, imp.id, exc, staging)
        raise
    digest = hashlib.sha256()
    size = 0

    async def hashed() -> AsyncIterator[bytes]:
        nonlocal size
        digest.__init__()  # type: ignore[misc]  (a re-read starts the sum again)
        size = 0
        async for chunk in source.opener():
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    try:
        staged = await import_file.stage(staging, columns, hashed, encoding, source.binary)
    except InvalidInput as exc:
        await _refuse_file(tenant_id, imp.id, exc, staging)
        raise
    await _set(tenant_id, imp.id, status="checking", lines_total=staged.lines + len(staged.problems),
               sha256=digest.hexdigest() if size else imp.sha256, size_bytes=size or imp.size_bytes)
    zone = (await tenants.get_tenant(tenant_id)).timezone
    orders = await import_file.check(staging, zone)
    found = list(staged.problems)
    bad = await db.fetchrow(f"SELECT count(*) AS n, COALESCE(sum(n_lines), 0) AS lines FROM "
                            f"({import_file.bad_orders_sql(import_file.orders_table(staging))}) b")
    if int(bad["n"]):
        found += await import_file.line_problems(staging, zone, list(await _apps(tenant_id)), MAX_STORED_ERRORS)
    kept = await _record_problems(tenant_id, imp.id, sorted(found, key=lambda p: p.line), 0)
    await _set(tenant_id, imp.id, status="importing", orders_total=orders, error_lines=kept,
               lines_done=len(staged.problems))
    return await get_import(tenant_id, imp.id)


async def _refuse_file(tenant_id: int, import_id: int, exc: InvalidInput, staging: str) -> None:
    """The whole file is refused (its header, or it cannot be read again): the import fails saying why, and
    the reason is its one problem, on line 1."""
    e = exc.errors[0]
    code, detail = import_file.code_of(e.message), str(e.params.get("detail", ""))
    await _fail(tenant_id, import_id, code, detail, staging)
    await _record_problems(tenant_id, import_id, [Problem(1, "", code, detail)], 0)


async def _fail(tenant_id: int, import_id: int, code: str, detail: str = "", staging: str = "") -> None:
    """The import ends failed; `failure` keeps the problem's code and detail (put in the reader's words when
    shown, see Progress.failure_message)."""
    await import_file.drop(staging)
    why = f"{code}:{import_file.printable(detail)}"[:1000]
    await db.execute("UPDATE commerce_import SET status = 'failed', failure = $3, finished_at = now(), updated_at = now() "
                     "WHERE tenant = $1 AND id = $2", tenant_id, import_id, why)


async def staging_intact(imp: Progress) -> bool:
    """The staged lines and orders are still there, all of them (a PostgreSQL crash empties unlogged tables)."""
    if not imp.staging:
        return False
    row = await db.fetchrow("SELECT to_regclass($1) AS l, to_regclass($2) AS o",
                            import_file.lines_table(imp.staging), import_file.orders_table(imp.staging))
    if row["l"] is None or row["o"] is None:
        return False
    lines = await db.fetchrow(f"SELECT count(*) AS n FROM {import_file.lines_table(imp.staging)}")
    orders = await db.fetchrow(f"SELECT count(*) AS n FROM {import_file.orders_table(imp.staging)}")
    staged = imp.lines_total - (await _structural(imp))
    return int(lines["n"]) == staged and int(orders["n"]) == imp.orders_total and imp.orders_total > 0


async def _structural(imp: Progress) -> int:
    """Lines the staging left out (unreadable as CSV): counted in lines_total, never staged."""
    row = await db.fetchrow("SELECT count(DISTINCT line) AS n FROM commerce_import_error WHERE purchase_import = $1 "
                            "AND code IN ('malformed', 'field_count', 'not_text')", imp.id)
    return int(row["n"])


# --- the batches --------------------------------------------------------------------------------------------

@dataclass
class _Order:
    seq: int  # the order's first line: its number in the staging
    order_id: str
    first_rec: int
    n_lines: int
    paid_at: datetime
    amount: int
    currency: str
    openid: str | None
    app_id: str | None
    unionid: str | None
    contact: int | None
    txn: str | None
    attach: str | None
    refunds: list[tuple[str, int, datetime, int]] = field(default_factory=list)  # refund_id, fen, at, rec
    state: str = ""
    identity_id: int | None = None
    contact_id: int | None = None
    channel: str = "mp"


def _refund_list(raw: str | None, o: _Order, found: list[Problem]) -> list[tuple[str, int, datetime, int]] | None:
    """The order's distinct refunds, or None when they contradict each other or exceed the order."""
    if not raw:
        return []
    seen: dict[str, tuple[str, int, datetime, int]] = {}
    for refund_id, fen, at, rec in json.loads(raw):
        when = datetime.fromisoformat(at)
        if refund_id in seen:
            if (seen[refund_id][1], seen[refund_id][2]) != (fen, when):
                found.append(Problem(int(rec) + 1, "refunded_fen", "refund_differs", refund_id))
                return None
            continue
        seen[refund_id] = (refund_id, int(fen), when, int(rec))
        if sum(r[1] for r in seen.values()) > o.amount:
            found.append(Problem(int(rec) + 1, "refunded_fen", "refund_too_much"))
            return None
    return list(seen.values())


async def _resolve_buyers(tenant_id: int, orders: list[_Order], apps: dict[str, str], found: list[Problem]) -> None:
    """Each order's identity and contact as read now (the batch's transaction locks and re-reads them)."""
    now = clock.now()
    by_channel: dict[str, dict[str, bulk.Sighting]] = {}
    for o in orders:
        if o.openid is None:
            continue
        o.channel = apps[o.app_id or ""]
        seen = by_channel.setdefault(o.channel, {})
        s = seen.get(o.openid)
        at = min(o.paid_at, now)
        if s is None:
            seen[o.openid] = bulk.Sighting(o.openid, o.unionid, at, at)
        else:
            seen[o.openid] = bulk.Sighting(o.openid, s.unionid or o.unionid, min(s.first_at, at), max(s.last_at, at))
    identities: dict[tuple[str, str], bulk.Found] = {}
    for channel, sightings in by_channel.items():
        for key, f in (await bulk.resolve_many(tenant_id, channel, list(sightings.values()))).items():
            identities[(channel, key)] = f
    unionids = await bulk.by_unionids(tenant_id, [o.unionid for o in orders if o.openid is None and o.unionid])
    contacts = await bulk.live_contacts(tenant_id, [o.contact for o in orders if o.contact is not None])
    for o in orders:
        if o.openid is not None:
            f = identities[(o.channel, o.openid)]
            o.identity_id, o.contact_id = f.identity_id, f.contact_id
        elif o.contact is not None:
            o.contact_id = contacts.get(o.contact)
            if o.contact_id is None:
                o.state = "error"
                found.append(Problem(o.first_rec + 1, "contact_id", "unknown_contact"))
        else:
            o.contact_id = unionids.get(o.unionid or "")
            if o.contact_id is None:
                o.state = "error"
                found.append(Problem(o.first_rec + 1, "unionid", "unknown_unionid"))


_EXISTING = """
SELECT u.seq, p.id, p.sources, p.api_amount_fen, p.api_currency FROM unnest($2::bigint[], $3::varchar[], $4::varchar[])
    AS u(seq, order_id, txn) JOIN commerce_purchase p ON p.tenant = $1 AND p.order_id = u.order_id
UNION
SELECT u.seq, p.id, p.sources, p.api_amount_fen, p.api_currency FROM unnest($2::bigint[], $3::varchar[], $4::varchar[])
    AS u(seq, order_id, txn) JOIN commerce_purchase p ON p.tenant = $1 AND u.txn IS NOT NULL AND p.transaction_id = u.txn
"""

_INSERT = """
INSERT INTO commerce_purchase (tenant, order_id, transaction_id, contact, identity, amount_fen, currency, api_amount_fen,
    api_currency, items, skus, sources, paid_at, refunded_fen, flags, attach, buyer, created_at, updated_at)
SELECT $1, o.order_id, u.txn, u.contact, u.identity, u.amount, u.currency, u.amount, u.currency, j.items,
    ARRAY(SELECT DISTINCT e->>'sku' FROM jsonb_array_elements(j.items) e ORDER BY 1), ARRAY['import']::varchar[],
    u.paid_at, 0, '{{}}', COALESCE(u.attach, ''),
    jsonb_strip_nulls(jsonb_build_object('openid', u.openid, 'app_id', u.app_id, 'unionid', u.unionid,
                                         'contact_id', u.named_contact)), now(), now()
FROM unnest($2::bigint[], $3::int[], $4::int[], $5::timestamptz[], $6::bigint[], $7::varchar[], $8::varchar[],
            $9::varchar[], $10::varchar[], $11::varchar[], $12::varchar[], $13::int[])
    AS u(seq, contact, identity, paid_at, amount, currency, txn, attach, openid, app_id, unionid, named_contact)
JOIN {orders} o ON o.first_rec = u.seq
CROSS JOIN LATERAL (SELECT o.items::jsonb AS items) j
ON CONFLICT DO NOTHING
RETURNING id, order_id
"""

_PURCHASE_EVENTS = """
SELECT p.contact, p.identity, p.paid_at AS occurred_at, u.channel,
    jsonb_build_object('order_id', p.order_id, 'amount_fen', p.amount_fen, 'currency', p.currency,
        'items', (SELECT COALESCE(jsonb_agg(jsonb_build_object('sku', e->'sku', 'name', e->'name', 'quantity', e->'quantity')),
                                  '[]'::jsonb) FROM jsonb_array_elements(p.items) e),
        'source', 'import', 'refunded_fen', p.refunded_fen) AS payload,
    'purchase:' || p.id AS source_key
FROM commerce_purchase p JOIN unnest($2::bigint[], $3::varchar[]) AS u(id, channel) ON p.id = u.id
WHERE p.tenant = $1
"""

_REFUND_EVENTS = """
SELECT p.contact, p.identity, COALESCE(r.refunded_at, r.created_at) AS occurred_at, 'mp' AS channel,
    jsonb_build_object('order_id', p.order_id, 'refund_id', r.refund_id, 'amount_fen', r.amount_fen,
                       'currency', p.currency, 'status', r.status, 'source', 'import') AS payload,
    'refund:' || r.id || ':' || r.status AS source_key
FROM commerce_refund r JOIN commerce_purchase p ON p.tenant = r.tenant AND p.id = r.purchase
WHERE r.tenant = $1 AND r.id = ANY($2::bigint[])
"""

_SALES = """
SELECT DISTINCT ON (sku) sku, name, price, currency, at, first_at FROM (
    SELECT e->>'sku' AS sku, e->>'name' AS name, (e->>'unit_price_fen')::bigint AS price, p.currency, p.paid_at AS at,
        min(p.paid_at) OVER (PARTITION BY e->>'sku') AS first_at
    FROM commerce_purchase p CROSS JOIN LATERAL jsonb_array_elements(p.items) e
    WHERE p.tenant = $1 AND p.id = ANY($2::bigint[])) s
ORDER BY sku, at DESC
"""


_READ = """
SELECT first_rec, order_id, n_lines, items_ok,
    key_differs OR COALESCE(txn <> txn_max OR attach <> attach_max OR unionid <> unionid_max, false) AS differs,
    NULLIF(btrim(paid_raw), '') AS paid_raw, NULLIF(btrim(amount_raw), '') AS amount_raw,
    CASE WHEN left(ltrim(paid_raw), 1) BETWEEN '0' AND '9' AND pg_input_is_valid(paid_raw, 'timestamptz')
         THEN paid_raw::timestamptz END AS paid_at,
    CASE WHEN pg_input_is_valid(amount_raw, 'bigint') THEN amount_raw::bigint END AS amount,
    COALESCE(NULLIF(upper(btrim(currency_raw)), ''), 'CNY') AS currency,
    NULLIF(btrim(openid_raw), '') AS openid, NULLIF(btrim(app_raw), '') AS app_id,
    NULLIF(btrim(contact_raw), '') AS contact_raw,
    CASE WHEN pg_input_is_valid(contact_raw, 'integer') THEN contact_raw::int END AS contact,
    unionid, txn, attach, refunds::text AS refunds
FROM {orders} WHERE first_rec > $1 AND first_rec <= $2 ORDER BY first_rec
"""

_WECHAT_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")
_TXN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PRINTABLE = re.compile(r"[!-~]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _order_problem(r: Any, apps: dict[str, str], now: datetime) -> tuple[str, str] | None:
    """(column, code) of the first thing wrong with an order's own values (checked once per order; the
    lines' items were checked by the staging's check), or None."""
    if r["order_id"] is None:
        return "order_id", "required"
    if not _PRINTABLE.fullmatch(r["order_id"]):
        return "order_id", "order_id"
    if r["paid_raw"] is None:
        return "paid_at", "required"
    if r["paid_at"] is None:
        return "paid_at", "time"
    if not import_file.EARLIEST <= r["paid_at"] <= now + import_file.FUTURE_SLACK:
        return "paid_at", "time_range"
    if r["amount_raw"] is None:
        return "amount_fen", "required"
    if r["amount"] is None or not 0 <= r["amount"] <= MAX_FEN:
        return "amount_fen", "whole_fen"
    if r["currency"] not in iso_currencies():
        return "currency", "currency"
    openid, app, unionid = r["openid"], r["app_id"], r["unionid"]
    if r["contact_raw"] is not None:
        if openid or unionid or app:
            return "contact_id", "buyer_one_way"
        if r["contact"] is None or r["contact"] <= 0:
            return "contact_id", "contact_id"
    elif openid is not None:
        if not _WECHAT_ID.fullmatch(openid):
            return "openid", "wechat_id"
        if app is None:
            return "app_id", "required"
        if app not in apps:
            return "app_id", "app_id"
        if unionid is not None and not _WECHAT_ID.fullmatch(unionid):
            return "unionid", "wechat_id"
    elif app is not None:
        return "app_id", "app_without_openid"
    elif unionid is not None:
        if not _WECHAT_ID.fullmatch(unionid):
            return "unionid", "wechat_id"
    else:
        return "openid", "buyer_missing"
    if r["txn"] is not None and not _TXN.fullmatch(r["txn"]):
        return "transaction_id", "transaction_id"
    if r["attach"] is not None and (len(r["attach"]) > 128 or _CONTROL.search(r["attach"])):
        return "attach", "text"
    return None


@dataclass
class _Prepared:
    """A batch read, checked and its buyers resolved, ready for its transaction."""

    hi: int
    everyone: list[_Order]
    candidates: list[_Order]
    found: list[Problem]


async def _batch(tenant_id: int, imp: Progress, lo: int, hi: int, apps: dict[str, str], zone: str, stored: int) -> int:
    """Import the orders whose first line is in (lo, hi]; returns how many problems are kept now."""
    return await _write(tenant_id, imp, await _prepare(tenant_id, imp, lo, hi, apps, zone), stored)


async def _prepare(tenant_id: int, imp: Progress, lo: int, hi: int, apps: dict[str, str], zone: str) -> _Prepared:
    """Read the orders whose first line is in (lo, hi], check their own values and find or create their buyers
    (outside the batch's transaction, as any writer would: `_write` locks and re-reads them)."""
    orders_t = import_file.orders_table(imp.staging)
    async with db.transaction():  # times without an offset are the brand's
        await db.execute("SELECT set_config('TimeZone', $1, true)", zone)
        rows = await db.fetch(_READ.format(orders=orders_t), lo, hi)
    found: list[Problem] = []
    everyone: list[_Order] = []
    refund_owner: dict[str, int] = {}
    now = clock.now()
    for r in rows:
        o = _Order(int(r["first_rec"]), r["order_id"] or "", int(r["first_rec"]), int(r["n_lines"]), r["paid_at"],
                   int(r["amount"] or 0), r["currency"], r["openid"], r["app_id"], r["unionid"], r["contact"], r["txn"],
                   r["attach"])
        everyone.append(o)
        if not r["items_ok"] or r["differs"]:
            o.state = "error"  # its lines' problems were recorded by the check
            continue
        problem = _order_problem(r, apps, now)
        if problem is not None:
            o.state = "error"
            found.append(Problem(o.first_rec + 1, *problem))
            continue
        refunds = _refund_list(r["refunds"], o, found)
        if refunds is None:
            o.state = "error"
            continue
        for refund in refunds:
            if refund_owner.setdefault(refund[0], o.seq) != o.seq:
                found.append(Problem(refund[3] + 1, "refund_id", "refund_elsewhere", refund[0]))
                o.state = "error"
        o.refunds = refunds
    candidates = [o for o in everyone if not o.state]
    await _resolve_buyers(tenant_id, candidates, apps, found)
    return _Prepared(hi, everyone, [o for o in candidates if not o.state], found)


async def _write(tenant_id: int, imp: Progress, prepared: _Prepared, stored: int) -> int:
    """The batch's one transaction: its purchases, refunds, events, products and figures, and the checkpoint."""
    orders_t = import_file.orders_table(imp.staging)
    hi, everyone, candidates, found = prepared.hi, prepared.everyone, prepared.candidates, prepared.found
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"commerce:import:{tenant_id}")
        row = await db.fetchrow("SELECT checkpoint FROM commerce_import WHERE tenant = $1 AND id = $2 FOR UPDATE",
                                tenant_id, imp.id)
        if int(row["checkpoint"]) >= hi:
            return stored  # another run of this import did the batch meanwhile
        locked = await bulk.lock_many(tenant_id, [o.identity_id for o in candidates if o.identity_id is not None],
                                      [o.contact_id for o in candidates if o.identity_id is None and o.contact_id])
        for o in candidates:
            o.contact_id = locked.identities[o.identity_id] if o.identity_id is not None \
                else locked.contacts.get(o.contact_id or 0)
        await _classify(tenant_id, candidates, found)
        new = [o for o in candidates if o.state == "new"]
        inserted: dict[str, int] = {}
        if new:
            for r in await db.fetch(
                    _INSERT.format(orders=orders_t), tenant_id, [o.seq for o in new], [o.contact_id for o in new],
                    [o.identity_id for o in new], [o.paid_at for o in new], [o.amount for o in new],
                    [o.currency for o in new], [o.txn for o in new], [o.attach for o in new], [o.openid for o in new],
                    [o.app_id for o in new], [o.unionid for o in new], [o.contact for o in new]):
                inserted[r["order_id"]] = int(r["id"])
        for o in new:  # a report that arrived since the classification: the merging writer takes it
            o.state = "created" if o.order_id in inserted else "merge"
        created = [o for o in new if o.state == "created"]
        refund_ids = await _insert_refunds(tenant_id, created, inserted)
        if created:
            ids = [inserted[o.order_id] for o in created]
            await timeline.insert_many(tenant_id, "purchase", _PURCHASE_EVENTS, ids, [o.channel for o in created])
            if refund_ids:
                await timeline.insert_many(tenant_id, "refund", _REFUND_EVENTS, refund_ids)
            await products.learn_many(tenant_id, [dict(r) for r in await db.fetch(_SALES, tenant_id, ids)])
            await stats.refresh(tenant_id, {o.contact_id for o in created})
        # Only the orders not created are marked: an order row is wide (its items), and rewriting every one of them
        # cost more than any other step but the inserts. Below the checkpoint, no mark means created.
        marked = [o for o in everyone if o.state != "created"]
        if marked:
            await db.execute(f"UPDATE {orders_t} o SET state = u.state FROM unnest($1::bigint[], $2::text[]) "
                             "AS u(seq, state) WHERE o.first_rec = u.seq", [o.seq for o in marked],
                             [o.state for o in marked])
        stored = await _record_problems(tenant_id, imp.id, found, stored)
        done = [o for o in everyone if o.state != "merge"]
        await db.execute(
            "UPDATE commerce_import SET checkpoint = $3, orders_done = orders_done + $4, lines_done = lines_done + $5, "
            "created = created + $6, unchanged = unchanged + $7, failed_orders = failed_orders + $8, "
            "refunds = refunds + $9, error_lines = error_lines + $10, updated_at = now() WHERE tenant = $1 AND id = $2",
            tenant_id, imp.id, hi, len(done), sum(o.n_lines for o in done), len(created),
            sum(o.state == "unchanged" for o in everyone), sum(o.state == "error" for o in everyone), len(refund_ids),
            len(found))
    return stored


async def _classify(tenant_id: int, orders: list[_Order], found: list[Problem]) -> None:
    """new, unchanged (imported before, the same), merge (another source reported it: the writer decides) or
    error (reported or imported with another amount), from the purchases as they are under the locks."""
    matches: dict[int, list[Any]] = {}
    if orders:
        for r in await db.fetch(_EXISTING, tenant_id, [o.seq for o in orders], [o.order_id for o in orders],
                                [o.txn for o in orders]):
            matches.setdefault(int(r["seq"]), []).append(r)
    known_refunds: dict[int, dict[str, Any]] = {}
    single = [m[0] for m in matches.values() if len(m) == 1]
    if any(o.refunds for o in orders if o.seq in matches):
        for r in await db.fetch("SELECT purchase, refund_id, amount_fen, sources FROM commerce_refund WHERE tenant = $1 "
                                "AND purchase = ANY($2::bigint[])", tenant_id, [int(m["id"]) for m in single]):
            known_refunds.setdefault(int(r["purchase"]), {})[r["refund_id"]] = r
    # Refund numbers used already: by another order (an error), or waiting for this one (the writer attaches it).
    numbers = [r[0] for o in orders for r in o.refunds]
    taken = {r["refund_id"]: r for r in await db.fetch(
        "SELECT refund_id, purchase, order_id FROM commerce_refund WHERE tenant = $1 AND refund_id = ANY($2::varchar[])",
        tenant_id, numbers)} if numbers else {}
    waiting = {(r["order_id"], r["transaction_id"]) for r in await db.fetch(
        "SELECT order_id, transaction_id FROM commerce_refund WHERE tenant = $1 AND purchase IS NULL "
        "AND (order_id = ANY($2::varchar[]) OR transaction_id = ANY($3::varchar[]))", tenant_id,
        [o.order_id for o in orders], [o.txn for o in orders if o.txn])}
    waiting_names = {n for pair in waiting for n in pair if n}
    for o in orders:
        found_rows = matches.get(o.seq, [])
        if not found_rows:
            if o.order_id in waiting_names or (o.txn and o.txn in waiting_names):
                o.state = "merge"  # WeChat Pay reported its refund before the order: the writer attaches it
                continue
            elsewhere = [r for r in o.refunds if r[0] in taken]
            if elsewhere:
                if all(taken[r[0]]["purchase"] is None and taken[r[0]]["order_id"] == o.order_id for r in elsewhere):
                    o.state = "merge"
                else:
                    o.state = "error"
                    found.append(Problem(elsewhere[0][3] + 1, "refund_id", "refund_elsewhere", elsewhere[0][0]))
                continue
            o.state = "new"
            continue
        if len(found_rows) > 1:
            o.state = "merge"
            continue
        p = found_rows[0]
        sources = list(p["sources"])
        backend = "import" in sources or "api" in sources
        if backend and (p["api_amount_fen"] != o.amount or p["api_currency"] != o.currency):
            o.state = "error"
            column = "amount_fen" if p["api_amount_fen"] != o.amount else "currency"
            found.append(Problem(o.first_rec + 1, column,
                                 "imported_differently" if "import" in sources else "reported_differently"))
            continue
        if "import" in sources:
            mine = known_refunds.get(int(p["id"]), {})
            same = all(r[0] in mine and mine[r[0]]["amount_fen"] == r[1] and "import" in mine[r[0]]["sources"]
                       for r in o.refunds)
            o.state = "unchanged" if same else "merge"
        else:
            o.state = "merge"


async def _insert_refunds(tenant_id: int, created: list[_Order], inserted: dict[str, int]) -> list[int]:
    refunds = [(inserted[o.order_id], o, r) for o in created for r in o.refunds]
    if not refunds:
        return []
    rows = await db.fetch(
        "INSERT INTO commerce_refund (tenant, refund_id, purchase, order_id, transaction_id, amount_fen, status, "
        "refunded_at, sources, created_at, updated_at) SELECT $1, u.refund_id, u.purchase, u.order_id, u.txn, u.fen, "
        "'success', u.at, ARRAY['import']::varchar[], now(), now() FROM unnest($2::varchar[], $3::bigint[], "
        "$4::varchar[], $5::varchar[], $6::bigint[], $7::timestamptz[]) AS u(refund_id, purchase, order_id, txn, fen, at) "
        "RETURNING id", tenant_id, [r[0] for _, _, r in refunds], [p for p, _, _ in refunds],
        [o.order_id for _, o, _ in refunds], [o.txn for _, o, _ in refunds], [r[1] for _, _, r in refunds],
        [r[2] for _, _, r in refunds])
    await db.execute(
        "UPDATE commerce_purchase p SET refunded_fen = r.total FROM (SELECT purchase, sum(amount_fen) AS total "
        "FROM commerce_refund WHERE tenant = $1 AND purchase = ANY($2::bigint[]) AND status = 'success' "
        "GROUP BY purchase) r WHERE p.tenant = $1 AND p.id = r.purchase", tenant_id, sorted({p for p, _, _ in refunds}))
    return [int(r["id"]) for r in rows]


# --- the few orders other sources reported: one by one, through the purchases' writer -----------------------

async def _merge_some(tenant_id: int, imp: Progress, apps: dict[str, str], stored: int) -> tuple[int, bool]:
    orders_t = import_file.orders_table(imp.staging)
    zone = (await tenants.get_tenant(tenant_id)).timezone
    async with db.transaction():
        await db.execute("SELECT set_config('TimeZone', $1, true)", zone)
        rows = await db.fetch(
            f"SELECT r.*, o.items FROM ({_READ.format(orders=orders_t)}) r JOIN {orders_t} o USING (first_rec) "
            "WHERE o.state = 'merge' ORDER BY first_rec LIMIT $3", 0, imp.lines_total, MERGE_BATCH)
    for r in rows:
        found: list[Problem] = []
        o = _Order(int(r["first_rec"]), r["order_id"], int(r["first_rec"]), int(r["n_lines"]), r["paid_at"],
                   int(r["amount"]), r["currency"], r["openid"], r["app_id"], r["unionid"], r["contact"], r["txn"],
                   r["attach"])
        state = "merged"
        try:
            if o.openid is not None:
                buyer = await buyers.by_openid(tenant_id, o.app_id or "", o.openid, o.paid_at, unionid=o.unionid)
            elif o.contact is not None:
                buyer = await buyers.by_contact_id(tenant_id, o.contact)
            else:
                buyer = await buyers.by_unionid(tenant_id, o.unionid or "")
            recorded = await purchases.do_record_payment(tenant_id, purchases.Payment(
                source="import", order_id=o.order_id, amount_fen=o.amount, currency=o.currency, paid_at=o.paid_at,
                transaction_id=o.txn, items=json.loads(r["items"]), attach=o.attach or ""), buyer)
            for refund_id, fen, at, _rec in _refund_list(r["refunds"], o, found) or []:
                await purchases.do_record_refund(tenant_id, purchases.RefundReport(
                    source="import", refund_id=refund_id, amount_fen=fen, status="success", refunded_at=at,
                    order_id=recorded.order_id), purchase_id=recorded.purchase_id)
            if not recorded.first_report:
                state = "unchanged"
        except Conflict as exc:
            state = "error"
            found.append(Problem(o.first_rec + 1, exc.field or "order_id", "refused", exc.message))
        except InvalidInput as exc:
            state = "error"
            e = exc.errors[0]
            found.append(Problem(o.first_rec + 1, e.field.removeprefix("buyer."), "refused",
                                 e.message.format(**e.params) if e.params else e.message))
        except NotFound:
            state = "error"
            found.append(Problem(o.first_rec + 1, "order_id", "refused", "not found"))
        async with db.transaction():
            await db.execute(f"UPDATE {orders_t} SET state = $2 WHERE first_rec = $1", o.seq, state)
            stored = await _record_problems(tenant_id, imp.id, found, stored)
            await db.execute(
                "UPDATE commerce_import SET orders_done = orders_done + 1, lines_done = lines_done + $3, "
                "merged = merged + $4, unchanged = unchanged + $5, failed_orders = failed_orders + $6, "
                "error_lines = error_lines + $7, updated_at = now() WHERE tenant = $1 AND id = $2", tenant_id, imp.id,
                o.n_lines, int(state == "merged"), int(state == "unchanged"), int(state == "error"), len(found))
    return stored, len(rows) == MERGE_BATCH


# --- running ------------------------------------------------------------------------------------------------

Reporter = Callable[[Progress], None]


async def run(tenant_id: int, import_id: int, progress: Reporter | None = None,
              deadline: float | None = None, actor: Actor | None = None) -> Progress:
    """Carry the import on from where it stands until it is done or `deadline` (time.monotonic()) passes."""
    imp = await get_import(tenant_id, import_id)
    if imp.finished:
        return imp
    if imp.status in ("staging", "checking") or not await staging_intact(imp):
        await _fail(tenant_id, imp.id, "staging_lost", "", imp.staging)
        return await get_import(tenant_id, import_id)
    apps = await _apps(tenant_id)
    stored = await _stored(tenant_id, import_id)
    if imp.status == "importing":
        zone = (await tenants.get_tenant(tenant_id)).timezone
        # Two steps in flight: the next batch is read, checked and its buyers resolved (Python, and lookups)
        # while this one's transaction runs in PostgreSQL, so the two cores both work. A prepared batch
        # nobody writes (a deadline, a crash) leaves at most buyers found or created, which the next run finds.
        ahead: asyncio.Task[_Prepared] | None = None
        try:
            lo = imp.checkpoint
            while imp.checkpoint < imp.lines_total:
                hi = min(lo + BATCH_LINES, imp.lines_total)
                prepared = await ahead if ahead is not None else await _prepare(tenant_id, imp, lo, hi, apps, zone)
                ahead = None
                if hi < imp.lines_total and (deadline is None or time.monotonic() < deadline):
                    ahead = asyncio.create_task(_prepare(tenant_id, imp, hi, min(hi + BATCH_LINES, imp.lines_total),
                                                         apps, zone))
                stored = await _write(tenant_id, imp, prepared, stored)
                imp = await get_import(tenant_id, import_id)
                lo = hi
                if progress:
                    progress(imp)
                # Looked at after a batch, so every run moves the import on (the next job's id depends on it).
                if deadline is not None and time.monotonic() > deadline and imp.checkpoint < imp.lines_total:
                    return imp
                if imp.checkpoint != hi:  # another run moved the import meanwhile: follow its checkpoint
                    if ahead is not None:
                        ahead.cancel()
                    ahead, lo = None, imp.checkpoint
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
        await _set(tenant_id, import_id, status="merging")
        imp = await get_import(tenant_id, import_id)
    more = True
    while more:
        stored, more = await _merge_some(tenant_id, imp, apps, stored)
        imp = await get_import(tenant_id, import_id)
        if progress:
            progress(imp)
        if more and deadline is not None and time.monotonic() > deadline:
            return imp
    return await _finish(tenant_id, imp, actor)


async def _finish(tenant_id: int, imp: Progress, actor: Actor | None) -> Progress:
    """Counts from the orders' final states (exact whatever the retries), the staging dropped, audited."""
    counts = {r["state"]: (int(r["n"]), int(r["lines"])) for r in await db.fetch(
        f"SELECT COALESCE(state, 'created') AS state, count(*) AS n, sum(n_lines) AS lines "
        f"FROM {import_file.orders_table(imp.staging)} GROUP BY 1")}
    async with db.transaction():
        row = await db.fetchrow("SELECT status FROM commerce_import WHERE tenant = $1 AND id = $2 FOR UPDATE",
                                tenant_id, imp.id)
        if row["status"] != "merging":
            return await get_import(tenant_id, imp.id)
        await _set(tenant_id, imp.id, status="done", created=counts.get("created", (0, 0))[0],
                   merged=counts.get("merged", (0, 0))[0], unchanged=counts.get("unchanged", (0, 0))[0],
                   failed_orders=counts.get("error", (0, 0))[0], orders_done=sum(n for n, _ in counts.values()),
                   lines_done=imp.lines_total, finished_at=clock.now())
        await record_audit(actor or Actor(None, imp.created_by or "system"), tenant_id, "purchases.imported",
                           "purchase_import", imp.id,
                           {"filename": imp.filename, "lines": imp.lines_total,
                            "created": counts.get("created", (0, 0))[0], "merged": counts.get("merged", (0, 0))[0],
                            "unchanged": counts.get("unchanged", (0, 0))[0], "failed": counts.get("error", (0, 0))[0]})
    await import_file.drop(imp.staging)
    return await get_import(tenant_id, imp.id)


async def import_path(tenant_id: int, path: Path, actor: Actor, encoding: str = "auto",
                      progress: Reporter | None = None) -> Progress:
    """The CLI's import: the unfinished import of this same file carries on (staged again when its lines are
    gone), otherwise a new one starts."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    sha = digest.hexdigest()
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM commerce_import WHERE tenant = $1 AND sha256 = $2 "
                            "AND status NOT IN ('done', 'failed') ORDER BY id DESC LIMIT 1", tenant_id, sha)
    imp = _progress(row) if row else None
    if imp is None:
        imp = await _new_import(tenant_id, path.name, encoding, actor, sha, path.stat().st_size)
    if imp.status in ("staging", "checking") or not await staging_intact(imp):
        if progress:
            progress(imp)
        imp = await stage(tenant_id, imp, Source.from_path(path), encoding)
        if progress:
            progress(imp)
    return await run(tenant_id, imp.id, progress, actor=actor)


async def do_upload(tenant_id: int, actor: Actor, filename: str, fh: IO[bytes], encoding: str = "auto") -> Progress:
    """The upload page's import: staged and checked now (the upload request), imported by the job
    `commerce.run_import` after commit."""
    imp = await _new_import(tenant_id, filename or "upload.csv", encoding, actor)
    await record_audit(actor, tenant_id, "purchases.import_started", "purchase_import", imp.id,
                       {"filename": imp.filename})
    try:
        imp = await stage(tenant_id, imp, Source.from_file(fh), encoding)
    except InvalidInput:
        return await get_import(tenant_id, imp.id)
    async with db.transaction():
        await effects.enqueue(RUN_IMPORT, tenant_id, imp.id, job_id=run_job_id(imp.id, 0))
    return imp


# --- the job --------------------------------------------------------------------------------------------------

async def run_import(ctx: dict[str, Any], tenant_id: int, import_id: int) -> str:
    """Work on the import for up to SLICE_SECONDS, then hand over to a new job (so no job outlives the worker's
    timeout); the sweeper starts one again for an import nobody moved for a while."""
    started = time.monotonic()
    imp = await run(tenant_id, import_id, deadline=started + SLICE_SECONDS)
    if not imp.finished:
        step = imp.checkpoint + imp.orders_done
        await ctx["redis"].enqueue_job(RUN_IMPORT, tenant_id, import_id, _job_id=run_job_id(import_id, step))
        return f"continues at {imp.lines_done}/{imp.lines_total} lines"
    return f"{imp.status}: {imp.created} created, {imp.merged} merged, {imp.unchanged} unchanged, " \
           f"{imp.failed_orders} left out"


async def sweep_imports(ctx: dict[str, Any]) -> int:
    """Carry on the imports nobody moved for a while; fail those whose file reading was abandoned."""
    for r in await db.fetch("SELECT tenant, id, staging FROM commerce_import WHERE status IN ('staging', 'checking') "
                            "AND updated_at < now() - make_interval(secs => $1) LIMIT 50", ABANDONED_STAGING_SECONDS):
        await _fail(int(r["tenant"]), int(r["id"]), "staging_lost", "", r["staging"])
    rows = await db.fetch("SELECT tenant, id, checkpoint, orders_done FROM commerce_import WHERE status IN "
                          "('importing', 'merging') AND updated_at < now() - make_interval(secs => $1) LIMIT 50",
                          SWEEP_AFTER_SECONDS)
    # Its own job id per sweep (the stalled step's id may still be taken by a job or result arq keeps); two runs
    # of one import at once are harmless: each batch re-checks the checkpoint under the import's row lock.
    sweep = int(time.time() // SWEEP_AFTER_SECONDS)
    for r in rows:
        step = int(r["checkpoint"]) + int(r["orders_done"])
        await ctx["redis"].enqueue_job(RUN_IMPORT, int(r["tenant"]), int(r["id"]),
                                       _job_id=f"{run_job_id(int(r['id']), step)}:swept:{sweep}")
    return len(rows)
