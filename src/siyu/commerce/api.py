"""JSON API for the brand's Mini Program backend (Authorization: Bearer <API key>): report purchases and
refunds, read them back.

- `POST /api/v1/purchases`: 201 when the backend reports the order for the first time (a WeChat Pay
  notification may have brought it already: they merge), 200 with the same purchase when it reports it again;
  409 naming `amount_fen` (or `currency`) when the same order comes back with another amount.
- `POST /api/v1/purchases/{order_id}/refunds`: 201 / 200 alike; 409 naming `amount_fen` past what is left.
- `GET /api/v1/purchases?contact_id=&cursor=&limit=`: newest first, in keyset pages.
- `GET /api/v1/purchases/{order_id}`.

Bodies are decoded strictly before anything runs (400 naming the field); another tenant's order or contact
answers exactly like a missing one (404).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from siyu.commerce import buyers, purchases
from siyu.commerce.schemas import (
    MAX_BODY,
    FieldErrors,
    PurchaseIn,
    PurchaseOut,
    PurchasePage,
    RefundIn,
    RefundOut,
    check_currency,
    decode,
    purchase_out,
    refund_out,
)
from siyu.contacts import services as contacts
from siyu.core import clock, db
from siyu.core.errors import InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.web.api import BEARER, whole_number
from siyu.web.auth import api_key, api_tenant_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
FUTURE_SLACK = timedelta(minutes=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ERRORS = {400: ResponseSpec(FieldErrors, description="A field is missing or wrong: `fields` names it"),
          404: ResponseSpec(FieldErrors, description="No such order (or contact) for this key's brand")}


# The handlers decode their bodies strictly themselves (Litestar's own decoding coerces "100" to 100). These
# dependencies are never called: they only tell the OpenAPI schema which model the body is (Litestar documents
# a route's body from a `data` parameter of the handler or of one of its dependencies).
async def _purchase_body(data: PurchaseIn) -> None:
    """Documents the body of POST /api/v1/purchases."""


async def _refund_body(data: RefundIn) -> None:
    """Documents the body of POST /api/v1/purchases/{order_id}/refunds."""


async def _body(request: Request[Any, Any, Any]) -> bytes:
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code == 413:
            raise InvalidInput.one("body", N_("The body is larger than {max} bytes."), max=MAX_BODY) from None
        raise


def _order_id(raw: str) -> str:
    if not 1 <= len(raw) <= 64 or not all("\x21" <= ch <= "\x7e" for ch in raw):
        raise InvalidInput.one("order_id", N_("An order id is 1 to 64 printable ASCII characters."))
    return raw


def _not_future(at: datetime, field: str) -> None:
    if at > clock.now() + FUTURE_SLACK:
        raise InvalidInput.one(field, N_("This time is in the future."))


def _cursor(paid_at: datetime, purchase_id: int) -> str:
    micros = (paid_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{purchase_id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, purchase_id = (int(part) for part in raw.split("."))
        return _EPOCH + timedelta(microseconds=micros), purchase_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidInput.one("cursor", N_("This cursor is not one Siyu gave out.")) from None


async def _live_contact(tenant_id: int, contact_id: int) -> int:
    """The contact, or the one it was merged into (its purchases moved there)."""
    current = contact_id
    for _ in range(32):
        contact = await contacts.get_contact(tenant_id, current)  # NotFound for another tenant's, as for none
        if contact["merged_into"] is None:
            return current
        current = int(contact["merged_into"])
    raise NotFound()


async def _buyer(tenant_id: int, body: PurchaseIn) -> buyers.Buyer:
    b = body.buyer
    if b.contact_id is not None:
        if b.openid or b.unionid or b.app_id:
            raise InvalidInput.one("buyer", N_("Name the buyer one way: openid with app_id, unionid, or contact_id."))
        return await buyers.by_contact_id(tenant_id, b.contact_id)
    if b.openid is not None:
        if b.app_id is None:
            raise InvalidInput.one("buyer.app_id", N_("Send the app_id the openid belongs to."))
        return await buyers.by_openid(tenant_id, b.app_id, b.openid, body.paid_at, unionid=b.unionid)
    if b.app_id is not None:
        raise InvalidInput.one("buyer.openid", N_("Send the openid that goes with the app_id."))
    if b.unionid is not None:
        return await buyers.by_unionid(tenant_id, b.unionid)
    raise InvalidInput.one("buyer", N_("Name the buyer: openid with app_id, unionid, or contact_id."))


async def _out(tenant_id: int, purchase: dict[str, Any]) -> PurchaseOut:
    refunds = await purchases.refunds_of(tenant_id, [purchase["id"]])
    return purchase_out(purchase, refunds.get(purchase["id"], []))


class PurchasesApi(Controller):
    path = "/api/v1/purchases"
    guards = [api_key]
    tags = ["purchases"]
    security = BEARER

    @post("/", dependencies={"_body": Provide(_purchase_body)}, status_code=201, request_max_body_size=MAX_BODY,
          responses={200: ResponseSpec(PurchaseOut, description="The order was reported before: the same purchase"),
                     409: ResponseSpec(FieldErrors, description="The order was reported with another amount_fen or currency"),
                     **ERRORS})
    async def report(self, request: Request[Any, Any, Any]) -> Response[PurchaseOut]:
        """Report a paid order. A WeChat Pay notification for the same order (out_trade_no = order_id, or the same
        transaction_id) is the same purchase: items from here, the paid amount from WeChat Pay (a different amount
        here is kept and the purchase flagged amount_mismatch)."""
        tid = api_tenant_id(request)
        body = decode(await _body(request), PurchaseIn)
        check_currency(body.currency)
        _not_future(body.paid_at, "paid_at")
        buyer = await _buyer(tid, body)
        items = [{"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_price_fen": i.unit_price_fen}
                 for i in body.items]
        recorded = await purchases.do_record_payment(tid, purchases.Payment(
            source="api", order_id=body.order_id, amount_fen=body.amount_fen, currency=body.currency,
            paid_at=body.paid_at, transaction_id=body.transaction_id, items=items, attach=body.attach or ""), buyer)
        purchase = await purchases.get_purchase(tid, recorded.purchase_id)
        return Response(await _out(tid, purchase), status_code=201 if recorded.first_report else 200)

    @get("/", responses=ERRORS)
    async def list_purchases(self, request: Request[Any, Any, Any]) -> PurchasePage:
        """Purchases newest first (by payment time); `contact_id` keeps one person's. Pass `next_cursor` back
        as `cursor` for the next page (`limit` 1 to 200, default 50)."""
        tid = api_tenant_id(request)
        q = request.query_params
        limit = whole_number(q.get("limit") or str(DEFAULT_LIMIT), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput.one("limit", N_("Use a number from 1 to {max}."), max=MAX_LIMIT)
        contact = q.get("contact_id") or ""
        contact_id = await _live_contact(tid, whole_number(contact, "contact_id")) if contact else None
        after = _after(q["cursor"]) if q.get("cursor") else None
        rows = await db.fetch(
            "SELECT id FROM commerce_purchase WHERE tenant = $1 AND ($2::int IS NULL OR contact = $2) "
            "AND ($3::timestamptz IS NULL OR (paid_at, id) < ($3, $4)) ORDER BY paid_at DESC, id DESC LIMIT $5",
            tid, contact_id, after[0] if after else None, after[1] if after else None, limit + 1)
        page = [await purchases.get_purchase(tid, int(r["id"])) for r in rows[:limit]]
        refunds = await purchases.refunds_of(tid, [p["id"] for p in page])
        more = len(rows) > limit
        return PurchasePage([purchase_out(p, refunds.get(p["id"], [])) for p in page],
                            _cursor(page[-1]["paid_at"], page[-1]["id"]) if more else None)

    @get("/{order_id:str}", responses=ERRORS)
    async def purchase(self, request: Request[Any, Any, Any], order_id: FromPath[str]) -> PurchaseOut:
        """One purchase by the brand's order id, with its refunds."""
        tid = api_tenant_id(request)
        return await _out(tid, await purchases.get_by_order(tid, _order_id(order_id)))

    @post("/{order_id:str}/refunds", dependencies={"_body": Provide(_refund_body)}, status_code=201,
          request_max_body_size=MAX_BODY,
          responses={200: ResponseSpec(RefundOut, description="The refund was reported before"),
                     409: ResponseSpec(FieldErrors, description="More than is left to refund, or the refund_id "
                                                                "was reported with another amount"), **ERRORS})
    async def refund(self, request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[RefundOut]:
        """Report a refund of the order (`refund_id`: your refund number, WeChat Pay's out_refund_no)."""
        tid = api_tenant_id(request)
        body = decode(await _body(request), RefundIn)
        _not_future(body.refunded_at, "refunded_at")
        purchase = await purchases.get_by_order(tid, _order_id(order_id))
        done = await purchases.do_record_refund(tid, purchases.RefundReport(
            source="api", refund_id=body.refund_id, amount_fen=body.amount_fen, status="success",
            refunded_at=body.refunded_at, order_id=purchase["order_id"]), purchase_id=purchase["id"])
        refunds = (await purchases.refunds_of(tid, [purchase["id"]])).get(purchase["id"], [])
        row = next(r for r in refunds if r["id"] == done.refund_row_id)
        return Response(refund_out(row), status_code=201 if done.first_report else 200)
