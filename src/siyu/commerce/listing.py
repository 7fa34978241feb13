"""The purchases list of a tenant: filters (paid between two dates in the tenant's time zone, amount, source,
refunded, flagged), search by order id (or WeChat Pay's transaction id), newest first in keyset pages; and the
same rows for a CSV export, read in batches."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from siyu.core import db
from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_

PAGE = 50
EXPORT_BATCH = 1000
SOURCES = ("api", "pay", "import")
REFUNDED = ("any", "no", "partly", "fully")
YUAN_RE = re.compile(r"^[0-9]{1,10}(?:\.[0-9]{1,2})?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Filters:
    q: str = ""
    date_from: date | None = None
    date_to: date | None = None
    min_fen: int | None = None
    max_fen: int | None = None
    source: str = ""
    refunded: str = "any"
    flagged: bool = False

    def as_query(self) -> dict[str, str]:
        """The filters as the page's query string (what "load more" and the export link carry)."""
        out = {"q": self.q, "from": self.date_from.isoformat() if self.date_from else "",
               "to": self.date_to.isoformat() if self.date_to else "",
               "min": _yuan(self.min_fen), "max": _yuan(self.max_fen), "source": self.source,
               "refunded": "" if self.refunded == "any" else self.refunded, "flagged": "1" if self.flagged else ""}
        return {k: v for k, v in out.items() if v}


def _yuan(fen: int | None) -> str:
    return "" if fen is None else f"{Decimal(fen) / 100:.2f}"


def parse_filters(query: Mapping[str, str]) -> Filters:
    """The list's filters from a query string; InvalidInput names every wrong one."""
    errors: list[FieldError] = []

    def day(name: str) -> date | None:
        raw = (query.get(name) or "").strip()
        if not raw:
            return None
        try:
            if len(raw) != 10:
                raise ValueError(raw)
            return date.fromisoformat(raw)
        except ValueError:
            errors.append(FieldError(name, N_("Enter a date as YYYY-MM-DD.")))
            return None

    def fen(name: str) -> int | None:
        raw = (query.get(name) or "").strip()
        if not raw:
            return None
        if not YUAN_RE.match(raw):
            errors.append(FieldError(name, N_("Enter an amount in yuan, like 128 or 99.90.")))
            return None
        return int(Decimal(raw) * 100)

    q = (query.get("q") or "").strip()
    if len(q) > 64 or not q.isprintable():
        errors.append(FieldError("q", N_("Search by an order id of up to 64 characters.")))
        q = ""
    source = query.get("source") or ""
    if source and source not in SOURCES:
        errors.append(FieldError("source", N_("Choose one of: {choices}."), {"choices": ", ".join(SOURCES)}))
    refunded = query.get("refunded") or "any"
    if refunded not in REFUNDED:
        errors.append(FieldError("refunded", N_("Choose one of: {choices}."), {"choices": ", ".join(REFUNDED)}))
    found = Filters(q=q, date_from=day("from"), date_to=day("to"), min_fen=fen("min"), max_fen=fen("max"),
                    source=source, refunded=refunded, flagged=bool(query.get("flagged")))
    if errors:
        raise InvalidInput(errors)
    return found


def encode_cursor(paid_at: datetime, purchase_id: int) -> str:
    micros = (paid_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{purchase_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, purchase_id = (int(part) for part in raw.split("."))
        return _EPOCH + timedelta(microseconds=micros), purchase_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidInput.one("cursor", N_("This cursor is not one Siyu gave out.")) from None


def _where(tenant_id: int, f: Filters, zone: str) -> tuple[str, list[Any]]:
    args: list[Any] = [tenant_id]

    def add(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = ["tenant = $1"]
    tz = ZoneInfo(zone)
    if f.q:
        like = f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append(f"(order_id LIKE {add(like)} OR transaction_id = {add(f.q)} OR out_trade_no = {add(f.q)})")
    if f.date_from:
        clauses.append(f"paid_at >= {add(datetime.combine(f.date_from, datetime.min.time(), tz))}")
    if f.date_to:
        clauses.append(f"paid_at < {add(datetime.combine(f.date_to + timedelta(days=1), datetime.min.time(), tz))}")
    if f.min_fen is not None:
        clauses.append(f"amount_fen >= {add(f.min_fen)}")
    if f.max_fen is not None:
        clauses.append(f"amount_fen <= {add(f.max_fen)}")
    if f.source:
        clauses.append(f"{add(f.source)} = ANY(sources)")
    if f.refunded == "no":
        clauses.append("refunded_fen = 0")
    elif f.refunded == "partly":
        clauses.append("refunded_fen > 0 AND refunded_fen < amount_fen")
    elif f.refunded == "fully":
        clauses.append("refunded_fen > 0 AND refunded_fen >= amount_fen")
    if f.flagged:
        clauses.append("flags <> '{}'")
    return " AND ".join(clauses), args


_COLUMNS = ("id, order_id, transaction_id, contact, amount_fen, currency, api_amount_fen, paid_at, refunded_fen, "
            "sources, flags, items::text AS items, attach")


async def page(tenant_id: int, f: Filters, zone: str, cursor: str | None = None,
               limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    import json

    where, args = _where(tenant_id, f, zone)
    if cursor:
        at, pid = decode_cursor(cursor)
        args += [at, pid]
        where += f" AND (paid_at, id) < (${len(args) - 1}, ${len(args)})"
    args.append(limit + 1)
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM commerce_purchase WHERE {where} "
                          f"ORDER BY paid_at DESC, id DESC LIMIT ${len(args)}", *args)
    found = [{**dict(r), "items": json.loads(r["items"])} for r in rows[:limit]]
    more = len(rows) > limit
    return found, encode_cursor(found[-1]["paid_at"], found[-1]["id"]) if more else None


CSV_HEADER = ["order_id", "transaction_id", "paid_at", "amount", "currency", "refunded", "reported_amount",
              "sources", "flags", "contact_id", "items", "attach"]


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_csv(tenant_id: int, f: Filters, zone: str) -> AsyncIterator[bytes]:
    """Every purchase the filters select, newest first, as CSV (UTF-8 with a BOM, so spreadsheets read
    Chinese), read in keyset batches so memory stays flat whatever the number of rows."""
    tz = ZoneInfo(zone)
    yield "\ufeff".encode()
    cursor: str | None = None
    first = True
    while True:
        rows, cursor = await page(tenant_id, f, zone, cursor, EXPORT_BATCH)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if first:
            writer.writerow(CSV_HEADER)
            first = False
        for r in rows:
            items = "; ".join(f"{i.get('sku')} x{i.get('quantity', 1)}" for i in r["items"])
            writer.writerow([_cell(v) for v in (
                r["order_id"], r["transaction_id"], r["paid_at"].astimezone(tz).isoformat(), _yuan(r["amount_fen"]),
                r["currency"], _yuan(r["refunded_fen"]), _yuan(r["api_amount_fen"]), "+".join(r["sources"]),
                "+".join(r["flags"]), r["contact"], items, r["attach"])])
        yield buffer.getvalue().encode()
        if cursor is None:
            return
