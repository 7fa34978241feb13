"""Typed JSON edges of the purchases API (msgspec Structs, documented in the OpenAPI schema).

Bodies are decoded strictly (no "100" for 100, no 1.0 for 1, no unknown fields) and every mistake becomes a
400 naming the field the way the client wrote it (`amount_fen`, `items[2].sku`, `buyer.app_id`)."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, Struct

from siyu.core.errors import FieldError, InvalidInput
from siyu.core.i18n import N_

MAX_FEN = 10**12  # ten billion yuan: far above any order, far below bigint
MAX_ITEMS = 200
MAX_BODY = 256 * 1024

OrderId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                              description="The brand's order id (WeChat Pay's out_trade_no): printable ASCII")]
Fen = Annotated[int, Meta(ge=0, le=MAX_FEN, description="A whole number of fen (0.01 CNY)")]
Plain = r"^[^\x00-\x1f\x7f]*$"  # no control characters (NUL cannot be stored)
WeChatId = Annotated[str, Meta(min_length=6, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY")]
Time = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a time zone offset")]


class Item(Struct, forbid_unknown_fields=True):
    sku: Annotated[str, Meta(min_length=1, max_length=64, pattern=Plain)]
    name: Annotated[str, Meta(max_length=200, pattern=Plain)] = ""
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    unit_price_fen: Fen | None = None


class BuyerIn(Struct, forbid_unknown_fields=True):
    """Who paid: `openid` with the `app_id` it belongs to (a unionid may come along), or `unionid`, or the
    Siyu `contact_id`."""

    openid: WeChatId | None = None
    app_id: Annotated[str, Meta(pattern=r"^wx[0-9a-f]{16}$")] | None = None
    unionid: WeChatId | None = None
    contact_id: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None


class PurchaseIn(Struct, forbid_unknown_fields=True):
    order_id: OrderId
    paid_at: Time
    amount_fen: Fen
    currency: Currency
    items: Annotated[list[Item], Meta(max_length=MAX_ITEMS)]
    buyer: BuyerIn
    transaction_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    attach: Annotated[str, Meta(max_length=128, pattern=Plain)] | None = None


class RefundIn(Struct, forbid_unknown_fields=True):
    refund_id: OrderId
    amount_fen: Fen
    refunded_at: Time


class ItemOut(Struct):
    sku: str
    name: str
    quantity: int
    unit_price_fen: int | None


class RefundOut(Struct):
    refund_id: str
    amount_fen: int
    status: str  # success | abnormal | closed
    refunded_at: datetime | None
    sources: list[str]


class PurchaseOut(Struct):
    id: int
    order_id: str
    contact_id: int | None
    transaction_id: str | None
    amount_fen: int  # WeChat Pay's when it reported the order, else the backend's
    currency: str
    paid_at: datetime
    items: list[ItemOut]
    sources: list[str]  # api | pay | import
    refunded_fen: int
    flags: list[str]  # amount_mismatch, currency_mismatch, buyer_mismatch, transaction_mismatch
    reported_amount_fen: int | None  # what the backend reported
    attach: str
    refunds: list[RefundOut]
    created_at: datetime


class PurchasePage(Struct):
    purchases: list[PurchaseOut]
    next_cursor: str | None


class FieldErrors(Struct):
    """What every 4xx of the API looks like."""

    error: str
    status: int
    fields: dict[str, str] | None = None


# --- strict decoding -------------------------------------------------------------------------------------------

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")
S = TypeVar("S")


def _field_of(message: str) -> str:
    path = ""
    at = _AT.search(message)
    if at:
        path = at.group("path").lstrip(".")
    named = _NAMED.match(message)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or "body"


def _explain(message: str) -> str:
    # Messages are formatted with str.format later: the braces of a regex must survive it.
    return _AT.sub("", message).replace("`", "").replace("{", "{{").replace("}", "}}")


def decode(body: bytes, model: type[S]) -> S:
    """`body` as `model`, strictly; InvalidInput naming the first wrong field (`body` when it is not JSON)."""
    if len(body) > MAX_BODY:
        raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=MAX_BODY)
    try:
        return msgspec.json.decode(body, type=model, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidInput([FieldError(_field_of(message), _explain(message))]) from None
    except msgspec.DecodeError:
        raise InvalidInput.one("body", N_("Send a JSON object.")) from None


@lru_cache(maxsize=1)
def iso_currencies() -> frozenset[str]:
    """The ISO 4217 codes some territory uses as legal tender today (from Babel's CLDR data)."""
    from babel.core import get_global
    from babel.numbers import get_territory_currencies

    found: set[str] = set()
    for territory in get_global("territory_currencies"):
        found.update(get_territory_currencies(territory, tender=True))
    return frozenset(found)


def check_currency(code: str, field: str = "currency") -> None:
    if code not in iso_currencies():
        raise InvalidInput.one(field, N_("Use an ISO 4217 currency code in use today, such as CNY."))


def purchase_out(p: dict[str, Any], refunds: list[dict[str, Any]]) -> PurchaseOut:
    return PurchaseOut(
        id=p["id"], order_id=p["order_id"], contact_id=p["contact"], transaction_id=p["transaction_id"],
        amount_fen=p["amount_fen"], currency=p["currency"], paid_at=p["paid_at"],
        items=[ItemOut(i["sku"], i.get("name", ""), i.get("quantity", 1), i.get("unit_price_fen")) for i in p["items"]],
        sources=p["sources"], refunded_fen=p["refunded_fen"], flags=p["flags"], reported_amount_fen=p["api_amount_fen"],
        attach=p["attach"], refunds=[refund_out(r) for r in refunds], created_at=p["created_at"])


def refund_out(r: dict[str, Any]) -> RefundOut:
    return RefundOut(r["refund_id"], r["amount_fen"], r["status"], r["refunded_at"], list(r["sources"] or []))
