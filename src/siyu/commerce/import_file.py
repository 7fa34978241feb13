"""The history-import file (docs/purchase-import.md): one CSV line per order line, its header, its encoding,
the COPY of its lines into a staging table, and the checks that turn them into orders.

Speed comes from letting PostgreSQL do the reading: the file goes as it is into `COPY … (FORMAT csv)`; the
per-line checks and the grouping into orders are one statement over the staged lines. Only a file PostgreSQL
cannot read as CSV (an unclosed quote, a line with more values than the header, bytes that are not text)
is read again by Python, which names each such line and stages the others.

Line numbers count the header as line 1 and each CSV record as one line (a quoted value spanning several
physical lines counts once).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

import asyncpg

from siyu.commerce.schemas import MAX_FEN, iso_currencies
from siyu.core import clock, db
from siyu.core.errors import InvalidInput
from siyu.core.i18n import N_

log = logging.getLogger("siyu.commerce.import_file")

COLUMNS = ("order_id", "paid_at", "amount_fen", "currency", "sku", "name", "quantity", "unit_price_fen", "openid",
           "app_id", "unionid", "contact_id", "transaction_id", "attach", "refund_id", "refunded_fen", "refunded_at")
REQUIRED = ("order_id", "paid_at", "amount_fen", "sku")
BUYER_COLUMNS = ("openid", "unionid", "contact_id")
ENCODINGS = {"utf-8": "UTF8", "gb18030": "GB18030"}  # Python's name → PostgreSQL's
MAX_HEADER_BYTES = 16 * 1024
EARLIEST = datetime(2000, 1, 1).astimezone()  # older "payments" are typos
FUTURE_SLACK = timedelta(minutes=10)
MAX_QUANTITY = 1_000_000
FALLBACK_CHUNK = 5000

# What each problem code means, for the page and the downloadable report ({detail} fills in).
MESSAGES = {
    "empty_file": N_("The file is empty: it needs a header line and at least one order line."),
    "header": N_("The first line must name the columns (order_id, paid_at, amount_fen, sku, and the buyer)."),
    "missing_column": N_("The header lacks the required column {detail}."),
    "unknown_column": N_("The header names a column this format does not have: {detail}."),
    "duplicate_column": N_("The header names the column {detail} twice."),
    "no_buyer_column": N_("The header needs a buyer column: openid (with app_id), unionid or contact_id."),
    "malformed": N_("This line is not valid CSV: {detail}."),
    "field_count": N_("This line has {detail} values; the header has a different number."),
    "not_text": N_("This line has bytes that are not {detail} text."),
    "required": N_("This value is required."),
    "order_id": N_("An order id is 1 to 64 printable ASCII characters."),
    "time": N_("Not a time: use 2024-03-05T14:30:00+08:00 (or 2024-03-05 14:30:00 in the brand's time zone)."),
    "time_range": N_("This time is in the future or before the year 2000."),
    "whole_fen": N_("Use a whole number of fen from 0 to 1000000000000 (no decimal point: 12.50 yuan is 1250)."),
    "currency": N_("Use an ISO 4217 currency code in use today, such as CNY."),
    "text": N_("Too long, or it holds control characters."),
    "quantity": N_("Use a whole number from 1 to 1000000."),
    "wechat_id": N_("A WeChat id is 6 to 64 letters, digits, _ or -."),
    "app_id": N_("This is not the app id of one of this brand's linked Mini Program, Official Account or WeChat Pay merchant."),
    "contact_id": N_("A contact id is a whole number."),
    "buyer_missing": N_("Name the buyer: openid with app_id, unionid, or contact_id."),
    "buyer_one_way": N_("Name the buyer one way: openid with app_id, unionid, or contact_id."),
    "app_without_openid": N_("Send the openid that goes with the app_id."),
    "transaction_id": N_("A WeChat Pay transaction id is 1 to 64 letters, digits, _ or -."),
    "refund_fields": N_("A refund needs refund_id, refunded_fen and refunded_at together."),
    "differs": N_("The lines of one order must agree: this differs from line {detail}."),
    "refund_differs": N_("The refund {detail} appears with another amount or time on another line."),
    "refund_too_much": N_("The order's refunds add up to more than its amount."),
    "refund_elsewhere": N_("The refund number {detail} belongs to another order."),
    "imported_differently": N_("This order was imported before with another amount or currency."),
    "reported_differently": N_("The Mini Program backend reported this order with another amount or currency."),
    "unknown_contact": N_("There is no contact with this id."),
    "unknown_unionid": N_("No contact has this unionid yet: give the buyer's openid with the app id instead."),
    "refused": N_("Not imported: {detail}"),
    "not_imported": N_("The order was not imported: see the error on line {detail}."),
    "staging_lost": N_("The file's lines were lost (the database restarted): import the file again; what was "
                       "imported already is not imported twice."),
}


def code_of(template: str) -> str:
    """The problem code of a message template of MESSAGES (what InvalidInput carries)."""
    return next((code for code, text in MESSAGES.items() if text == template), "header")


def message(code: str, detail: str, translate: Callable[[str], str] = str) -> str:
    """A problem in words (`translate`: the reader's gettext); `refused` carries the writer's own message."""
    if code == "refused":
        detail = translate(detail)
    template = translate(MESSAGES.get(code, code))
    return template.replace("{detail}", detail)


@dataclass
class Problem:
    line: int
    column: str
    code: str
    detail: str = ""


@dataclass
class Staged:
    lines: int
    problems: list[Problem] = field(default_factory=list)  # lines Python had to leave out


def printable(text: str) -> str:
    """Text as it may be stored and shown: control characters (NUL, which PostgreSQL refuses, among them) and
    undecodable bytes become "?"."""
    return "".join(ch if ch.isprintable() and not "\udc80" <= ch <= "\udcff" else "?" for ch in text)


def _header_problem(code: str, detail: str = "") -> InvalidInput:
    return InvalidInput.one("file", MESSAGES[code], detail=detail)


def detect_encoding(sample: bytes) -> str:
    """UTF-8 (with or without a BOM) unless the start of the file cannot be UTF-8: then GB18030, what
    spreadsheets in China save as "CSV"."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


def read_header(head: bytes, encoding: str) -> list[str]:
    """The column names of the first line (lower-cased), checked against the format. InvalidInput names the
    problem (field `file`)."""
    if not head.strip():
        raise _header_problem("empty_file")
    first = head.split(b"\n", 1)[0]
    if len(first) >= MAX_HEADER_BYTES or b"\n" not in head and len(head) >= MAX_HEADER_BYTES:
        raise _header_problem("header")
    try:
        text = first.decode(encoding).lstrip("\ufeff").rstrip("\r")
    except UnicodeDecodeError:
        raise _header_problem("header") from None
    names = [n.strip().lower() for n in next(csv.reader([text]), [])]
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            raise _header_problem("unknown_column", printable(name[:40]) or '""')
        if name in seen:
            raise _header_problem("duplicate_column", printable(name[:40]))
        seen.add(name)
    for name in REQUIRED:
        if name not in seen:
            raise _header_problem("missing_column", name)
    if not seen & set(BUYER_COLUMNS):
        raise _header_problem("no_buyer_column")
    return names


# --- staging ------------------------------------------------------------------------------------------------

def lines_table(staging: str) -> str:
    return f"{staging}_lines"


def orders_table(staging: str) -> str:
    return f"{staging}_orders"


async def create_lines_table(staging: str) -> None:
    table = lines_table(staging)
    await db.execute(f"DROP TABLE IF EXISTS {table}")
    # Unlogged: the staged lines need no crash safety (the file is the source; a PostgreSQL crash empties
    # the table and the import says to run it again), and they are written without WAL.
    await db.execute(f"CREATE UNLOGGED TABLE {table} (rec bigserial, "
                     + ", ".join(f"{c} text" for c in COLUMNS) + ")")


Opener = Callable[[], AsyncIterator[bytes]]  # the file's bytes from the start, as often as asked


async def stage(staging: str, columns: list[str], opener: Opener, encoding: str,
                binary: Callable[[], IO[bytes]] | None = None) -> Staged:
    """COPY the file's lines into the staging table (created afresh). `opener` streams the file's bytes;
    `binary` opens it as a file object for the rare re-read when PostgreSQL cannot parse it as CSV."""
    table = lines_table(staging)
    try:
        async with db.transaction():
            await create_lines_table(staging)
            await db.copy_to_table(table, source=opener(), columns=columns, format="csv", header=True,
                                   encoding=ENCODINGS[encoding])
    except (asyncpg.exceptions.DataError, asyncpg.exceptions.ProgramLimitExceededError) as exc:
        log.info("COPY could not read the file as CSV (%s); reading it line by line", exc)
        return await _stage_slowly(staging, columns, binary, encoding)
    row = await db.fetchrow(f"SELECT count(*) AS n FROM {table}")
    return Staged(int(row["n"]))


async def _stage_slowly(staging: str, columns: list[str], binary: Callable[[], IO[bytes]] | None,
                        encoding: str) -> Staged:
    if binary is None:
        raise InvalidInput.one("file", MESSAGES["malformed"], detail="the file cannot be read again")
    problems: list[Problem] = []
    staged = 0
    async with db.transaction():
        await create_lines_table(staging)
        with binary() as fh:
            rows = _records(fh, encoding, columns, problems)
            while True:
                chunk = [r for _, r in zip(range(FALLBACK_CHUNK), rows, strict=False)]
                if not chunk:
                    break
                await db.copy_records(lines_table(staging), chunk, ["rec", *columns])
                staged += len(chunk)
    return Staged(staged, problems)


def _records(fh: IO[bytes], encoding: str, columns: list[str], problems: list[Problem]) -> Iterator[tuple[Any, ...]]:
    """Each CSV record of the file after the header as (rec, values…); what cannot be staged becomes a
    problem naming its line."""
    text = io.TextIOWrapper(fh, encoding=encoding, errors="surrogateescape", newline="")
    reader = csv.reader(text, strict=True)
    try:
        next(reader)
    except (StopIteration, csv.Error):
        return
    rec = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            rec += 1
            problems.append(Problem(rec + 1, "", "malformed", str(exc)[:200]))
            continue
        rec += 1
        if not values or values == [""] and len(columns) > 1:
            continue  # a blank line, which COPY would refuse but is harmless
        if len(values) != len(columns):
            problems.append(Problem(rec + 1, "", "field_count", str(len(values))))
            continue
        bad = next((c for c, v in zip(columns, values, strict=True) if "\x00" in v or _undecoded(v)), None)
        if bad is not None:
            problems.append(Problem(rec + 1, bad, "not_text", encoding.upper()))
            continue
        yield (rec, *[v if v != "" else None for v in values])


def _undecoded(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


# --- checks and orders --------------------------------------------------------------------------------------

def _typed(lines: str) -> str:
    """Each staged line with its values typed (NULL where absent or unreadable) and `ok`: every check of the
    format holds. Parameters: $1 earliest time, $2 latest time, $3 currencies, $4 the brand's app ids."""
    return f"""
    SELECT rec, order_id, paid, amount, currency, sku, name, qty, price, price_raw, openid, app_id, unionid,
        contact, contact_raw, txn, attach, refund_id, refunded, refunded_raw, refunded_at, refunded_at_raw,
        COALESCE(
            length(order_id) <= 64 AND order_id !~ '[^!-~]'
            AND paid BETWEEN $1 AND $2
            AND amount BETWEEN 0 AND {MAX_FEN}
            AND currency = ANY($3::text[])
            AND sku IS NOT NULL AND length(sku) <= 64 AND sku !~ '[[:cntrl:]]'
            AND (name = '' OR (length(name) <= 200 AND name !~ '[[:cntrl:]]'))
            AND qty BETWEEN 1 AND {MAX_QUANTITY}
            AND (price_raw IS NULL OR price BETWEEN 0 AND {MAX_FEN})
            AND CASE WHEN contact_raw IS NOT NULL THEN contact > 0 AND openid IS NULL AND unionid IS NULL
                          AND app_id IS NULL
                     WHEN openid IS NOT NULL THEN length(openid) BETWEEN 6 AND 64 AND openid !~ '[^A-Za-z0-9_-]' AND app_id = ANY($4::text[])
                          AND (unionid IS NULL OR (length(unionid) BETWEEN 6 AND 64 AND unionid !~ '[^A-Za-z0-9_-]'))
                     WHEN unionid IS NOT NULL THEN length(unionid) BETWEEN 6 AND 64 AND unionid !~ '[^A-Za-z0-9_-]' AND app_id IS NULL
                     ELSE false END
            AND (txn IS NULL OR (length(txn) <= 64 AND txn !~ '[^A-Za-z0-9_-]'))
            AND (attach IS NULL OR (length(attach) <= 128 AND attach !~ '[[:cntrl:]]'))
            AND CASE WHEN refund_id IS NULL THEN refunded_raw IS NULL AND refunded_at_raw IS NULL
                     ELSE length(refund_id) <= 64 AND refund_id !~ '[^!-~]' AND refunded BETWEEN 0 AND {MAX_FEN}
                          AND refunded_at BETWEEN $1 AND $2 END,
            false) AS ok
    FROM (
        SELECT rec, NULLIF(order_id, '') AS order_id,
            CASE WHEN left(ltrim(paid_at), 1) BETWEEN '0' AND '9' AND pg_input_is_valid(paid_at, 'timestamptz')
                 THEN paid_at::timestamptz END AS paid,
            CASE WHEN pg_input_is_valid(amount_fen, 'bigint') THEN amount_fen::bigint END AS amount,
            COALESCE(NULLIF(upper(btrim(currency)), ''), 'CNY') AS currency,
            NULLIF(sku, '') AS sku, COALESCE(name, '') AS name,
            CASE WHEN NULLIF(btrim(quantity), '') IS NULL THEN 1
                 WHEN pg_input_is_valid(quantity, 'integer') THEN quantity::int END AS qty,
            NULLIF(btrim(unit_price_fen), '') AS price_raw,
            CASE WHEN pg_input_is_valid(unit_price_fen, 'bigint') THEN unit_price_fen::bigint END AS price,
            NULLIF(btrim(openid), '') AS openid, NULLIF(btrim(app_id), '') AS app_id,
            NULLIF(btrim(unionid), '') AS unionid, NULLIF(btrim(contact_id), '') AS contact_raw,
            CASE WHEN pg_input_is_valid(contact_id, 'integer') THEN contact_id::int END AS contact,
            NULLIF(btrim(transaction_id), '') AS txn, NULLIF(attach, '') AS attach,
            NULLIF(btrim(refund_id), '') AS refund_id, NULLIF(btrim(refunded_fen), '') AS refunded_raw,
            CASE WHEN pg_input_is_valid(refunded_fen, 'bigint') THEN refunded_fen::bigint END AS refunded,
            NULLIF(btrim(refunded_at), '') AS refunded_at_raw,
            CASE WHEN left(ltrim(refunded_at), 1) BETWEEN '0' AND '9' AND pg_input_is_valid(refunded_at, 'timestamptz')
                 THEN refunded_at::timestamptz END AS refunded_at
        FROM {lines}
    ) v
    """


# The order-level values all lines of an order must agree on, written the same way on each line; the
# optional ones may be left blank on an order's other lines.
AGREE = ("paid_at", "amount_fen", "currency", "openid", "app_id", "contact_id")
MAY_BE_BLANK = ("transaction_id", "attach", "unionid")
_BLANK_AS = {"transaction_id": "txn", "attach": "attach", "unionid": "unionid"}


def _build_orders(lines: str, orders: str) -> str:
    """The lines grouped into orders in one pass, with only what must be seen line by line: the item's own
    checks (the order-level values are typed and checked once per order, by the batches), whether the lines
    agree, and the items as JSON text (parsed once, by the INSERT of the purchase). An order is numbered by
    its first line."""
    key = " || E'\\x1f' || ".join(f"COALESCE(btrim({c}), '')" for c in AGREE)
    blanks = ", ".join(f'min(NULLIF(btrim({c}), \'\') COLLATE "C") AS {a}, max(NULLIF(btrim({c}), \'\') COLLATE "C") AS {a}_max'
                       for c, a in _BLANK_AS.items())
    return f"""
    CREATE UNLOGGED TABLE {orders} AS
    SELECT any_value(order_id) AS order_id, min(rec) AS first_rec, count(*)::int AS n_lines,
        bool_and(item_ok) AS items_ok, array_agg(rec) FILTER (WHERE NOT item_ok) AS bad_recs,
        min(okey COLLATE "C") <> max(okey COLLATE "C") AS key_differs,
        any_value(paid_at) AS paid_raw, any_value(amount_fen) AS amount_raw, any_value(currency) AS currency_raw,
        any_value(openid) AS openid_raw, any_value(app_id) AS app_raw, any_value(contact_id) AS contact_raw,
        {blanks},
        '[' || string_agg(item, ',') || ']' AS items,
        json_agg(json_build_array(refund_id, refunded, refunded_at, rec)) FILTER (WHERE refund_id IS NOT NULL) AS refunds,
        NULL::text AS state
    FROM (
        SELECT rec, order_id, paid_at, amount_fen, currency, openid, app_id, contact_id, transaction_id, attach, unionid,
            refund_id, refunded, refunded_at,
            COALESCE(sku IS NOT NULL AND length(sku) <= 64 AND sku !~ '[[:cntrl:]]'
                     AND (name IS NULL OR (length(name) <= 200 AND name !~ '[[:cntrl:]]'))
                     AND qty BETWEEN 1 AND {MAX_QUANTITY} AND (price_raw IS NULL OR price BETWEEN 0 AND {MAX_FEN})
                     AND (refund_id IS NULL AND refunded_fen IS NULL AND refunded_at_raw IS NULL
                          OR length(refund_id) <= 64 AND refund_id !~ '[^!-~]' AND refunded BETWEEN 0 AND {MAX_FEN}
                             AND refunded_at BETWEEN $1 AND $2), false) AS item_ok,
            {key} AS okey,
            '{{"sku":' || to_json(COALESCE(sku, '')) || ',"name":' || to_json(COALESCE(name, '')) || ',"quantity":'
                || COALESCE(qty::text, 'null') || ',"unit_price_fen":' || COALESCE(price::text, 'null') || '}}' AS item
        FROM (
            SELECT rec, NULLIF(order_id, '') AS order_id, paid_at, amount_fen, currency, openid, app_id, contact_id,
                transaction_id, attach, unionid, NULLIF(sku, '') AS sku, NULLIF(name, '') AS name,
                CASE WHEN NULLIF(btrim(quantity), '') IS NULL THEN 1
                     WHEN pg_input_is_valid(quantity, 'integer') THEN quantity::int END AS qty,
                NULLIF(btrim(unit_price_fen), '') AS price_raw,
                CASE WHEN pg_input_is_valid(unit_price_fen, 'bigint') THEN unit_price_fen::bigint END AS price,
                NULLIF(btrim(refund_id), '') AS refund_id, NULLIF(btrim(refunded_fen), '') AS refunded_fen,
                NULLIF(btrim(refunded_at), '') AS refunded_at_raw,
                CASE WHEN NULLIF(btrim(refund_id), '') IS NOT NULL AND pg_input_is_valid(refunded_fen, 'bigint')
                     THEN refunded_fen::bigint END AS refunded,
                CASE WHEN NULLIF(btrim(refund_id), '') IS NOT NULL AND left(ltrim(refunded_at), 1) BETWEEN '0' AND '9'
                          AND pg_input_is_valid(refunded_at, 'timestamptz') THEN refunded_at::timestamptz END AS refunded_at
            FROM {lines}
        ) v
    ) l
    GROUP BY order_id COLLATE "C"
    """


async def check(staging: str, zone: str, now: datetime | None = None) -> int:
    """Group the staged lines into orders (the orders table, numbered by their first line). Times without an
    offset are in the brand's time zone `zone`. Returns the number of orders."""
    now = now or clock.now()
    orders = orders_table(staging)
    async with db.transaction():
        # Grouped by sorting on the order id's bytes (the same groups: equality is bytewise): a hash aggregate
        # keeps every order's aggregates in memory at once (about 75 MB per 100,000 lines) and, spilling past
        # a few hundred thousand lines, took twice as long as the sort at a million lines.
        await db.execute("SELECT set_config('TimeZone', $1, true), set_config('work_mem', '256MB', true), "
                         "set_config('enable_hashagg', 'off', true)", zone)
        await db.execute(f"DROP TABLE IF EXISTS {orders}")
        await db.execute(_build_orders(lines_table(staging), orders), EARLIEST, now + FUTURE_SLACK)
        await db.execute(f"CREATE UNIQUE INDEX ON {orders} (first_rec)")
        row = await db.fetchrow(f"SELECT count(*) AS n FROM {orders}")
    return int(row["n"])


def bad_orders_sql(orders: str) -> str:
    """The orders the check found a problem in (their lines are looked at one by one)."""
    blanks = " OR ".join(f"{a} <> {a}_max" for a in _BLANK_AS.values())
    return f"SELECT * FROM {orders} WHERE NOT items_ok OR key_differs OR {blanks}"


def _problem_cases() -> list[tuple[str, str]]:
    """(column, SQL expression giving a problem code or NULL) for one typed line `t` with raw values `l`."""
    cntrl = "~ '[[:cntrl:]]'"
    return [
        ("order_id", "CASE WHEN t.order_id IS NULL THEN 'required' WHEN length(t.order_id) > 64 OR t.order_id ~ '[^!-~]' THEN 'order_id' END"),
        ("paid_at", "CASE WHEN NULLIF(btrim(l.paid_at), '') IS NULL THEN 'required' WHEN t.paid IS NULL THEN 'time' "
                    "WHEN NOT t.paid BETWEEN $1 AND $2 THEN 'time_range' END"),
        ("amount_fen", f"CASE WHEN NULLIF(btrim(l.amount_fen), '') IS NULL THEN 'required' "
                       f"WHEN t.amount IS NULL OR NOT t.amount BETWEEN 0 AND {MAX_FEN} THEN 'whole_fen' END"),
        ("currency", "CASE WHEN NOT t.currency = ANY($3::text[]) THEN 'currency' END"),
        ("sku", f"CASE WHEN t.sku IS NULL THEN 'required' WHEN length(t.sku) > 64 OR t.sku {cntrl} THEN 'text' END"),
        ("name", f"CASE WHEN length(t.name) > 200 OR t.name {cntrl} THEN 'text' END"),
        ("quantity", f"CASE WHEN t.qty IS NULL OR NOT t.qty BETWEEN 1 AND {MAX_QUANTITY} THEN 'quantity' END"),
        ("unit_price_fen", f"CASE WHEN t.price_raw IS NOT NULL AND (t.price IS NULL OR NOT t.price BETWEEN 0 AND {MAX_FEN}) "
                           "THEN 'whole_fen' END"),
        ("contact_id", "CASE WHEN t.contact_raw IS NOT NULL AND (t.openid IS NOT NULL OR t.unionid IS NOT NULL "
                       "OR t.app_id IS NOT NULL) THEN 'buyer_one_way' "
                       "WHEN t.contact_raw IS NOT NULL AND NOT COALESCE(t.contact > 0, false) THEN 'contact_id' END"),
        ("openid", "CASE WHEN t.contact_raw IS NULL AND t.openid IS NULL AND t.unionid IS NULL AND t.app_id IS NULL "
                   "THEN 'buyer_missing' WHEN t.openid IS NOT NULL AND (length(t.openid) NOT BETWEEN 6 AND 64 OR t.openid ~ '[^A-Za-z0-9_-]') "
                   "THEN 'wechat_id' END"),
        ("app_id", "CASE WHEN t.contact_raw IS NULL AND t.openid IS NOT NULL AND t.app_id IS NULL THEN 'required' "
                   "WHEN t.contact_raw IS NULL AND t.openid IS NULL AND t.app_id IS NOT NULL THEN 'app_without_openid' "
                   "WHEN t.contact_raw IS NULL AND t.app_id IS NOT NULL AND NOT t.app_id = ANY($4::text[]) THEN 'app_id' END"),
        ("unionid", "CASE WHEN t.unionid IS NOT NULL AND (length(t.unionid) NOT BETWEEN 6 AND 64 OR t.unionid ~ '[^A-Za-z0-9_-]') THEN 'wechat_id' END"),
        ("transaction_id", "CASE WHEN t.txn IS NOT NULL AND (length(t.txn) > 64 OR t.txn ~ '[^A-Za-z0-9_-]') THEN 'transaction_id' END"),
        ("attach", f"CASE WHEN length(t.attach) > 128 OR t.attach {cntrl} THEN 'text' END"),
        ("refund_id", "CASE WHEN t.refund_id IS NULL AND (t.refunded_raw IS NOT NULL OR t.refunded_at_raw IS NOT NULL) "
                      "THEN 'refund_fields' WHEN t.refund_id IS NOT NULL AND (length(t.refund_id) > 64 OR t.refund_id ~ '[^!-~]') "
                      "THEN 'order_id' END"),
        ("refunded_fen", f"CASE WHEN t.refund_id IS NOT NULL AND t.refunded_raw IS NULL THEN 'refund_fields' "
                         f"WHEN t.refunded_raw IS NOT NULL AND (t.refunded IS NULL OR NOT t.refunded BETWEEN 0 AND {MAX_FEN}) "
                         "THEN 'whole_fen' END"),
        ("refunded_at", "CASE WHEN t.refund_id IS NOT NULL AND t.refunded_at_raw IS NULL THEN 'refund_fields' "
                        "WHEN t.refunded_at_raw IS NOT NULL AND t.refunded_at IS NULL THEN 'time' "
                        "WHEN t.refunded_at IS NOT NULL AND NOT t.refunded_at BETWEEN $1 AND $2 THEN 'time_range' END"),
    ]


async def line_problems(staging: str, zone: str, app_ids: list[str], limit: int,
                        now: datetime | None = None) -> list[Problem]:
    """What is wrong with the lines of the orders the check found a problem in (at most `limit`, by line),
    column by column; and where an order's lines disagree, the first line that differs."""
    now = now or clock.now()
    lines, orders = lines_table(staging), orders_table(staging)
    cases = ", ".join(f"('{col}', {expr})" for col, expr in _problem_cases())
    out: list[Problem] = []
    async with db.transaction():
        await db.execute("SELECT set_config('TimeZone', $1, true)", zone)
        args = (EARLIEST, now + FUTURE_SLACK, sorted(iso_currencies()), sorted(app_ids))
        rows = await db.fetch(
            f"""SELECT t.rec, p.col, p.code FROM ({_typed(lines)}) t JOIN {lines} l ON l.rec = t.rec
                CROSS JOIN LATERAL (VALUES {cases}) AS p(col, code)
                WHERE t.rec IN (SELECT unnest(bad_recs) FROM {orders} WHERE NOT items_ok) AND p.code IS NOT NULL
                ORDER BY t.rec LIMIT $5""", *args, limit)
        out += [Problem(int(r["rec"]) + 1, r["col"], r["code"]) for r in rows]
        blanks = " OR ".join(f"{a} <> {a}_max" for a in _BLANK_AS.values())
        differing = [r["order_id"] for r in await db.fetch(
            f"SELECT order_id FROM {orders} WHERE key_differs OR {blanks} ORDER BY first_rec LIMIT $1", limit)]
        if differing:
            columns = (*AGREE, *MAY_BE_BLANK)
            exprs = ", ".join(f"('{c}', NULLIF(btrim(l.{c}), ''))" for c in columns)
            rows = await db.fetch(
                f"""SELECT NULLIF(l.order_id, '') AS order_id, l.rec, v.col, v.val FROM {lines} l
                    CROSS JOIN LATERAL (VALUES {exprs}) AS v(col, val)
                    WHERE NULLIF(l.order_id, '') = ANY($1::text[]) ORDER BY l.rec""", differing)
            # Each value is compared with the order's first line (for those that may be blank: with the first
            # line that gives one), in line order; the first line that differs is reported.
            reference: dict[tuple[str, str], tuple[str | None, int]] = {}
            reported: set[tuple[str, str]] = set()
            for r in rows:
                key, value, rec = (r["order_id"], r["col"]), r["val"], int(r["rec"])
                if key in reported or (r["col"] in MAY_BE_BLANK and value is None):
                    continue
                if key not in reference:
                    reference[key] = (value, rec)
                elif value != reference[key][0]:
                    reported.add(key)
                    out.append(Problem(rec + 1, r["col"], "differs", str(reference[key][1] + 1)))
    out.sort(key=lambda p: (p.line, COLUMNS.index(p.column) if p.column in COLUMNS else -1))
    return out[:limit]


async def drop(staging: str) -> None:
    if staging:
        await db.execute(f"DROP TABLE IF EXISTS {orders_table(staging)}, {lines_table(staging)}")
