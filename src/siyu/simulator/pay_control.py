"""The control API of simulated WeChat Pay, under `/_sim/pay` (docs/simulator.md): its key for linking,
merchants, customers paying and refunds, and what was notified."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import FromQuery, JSONBody

from siyu.simulator import pay
from siyu.simulator.state import State


def _bad(message: str, status: int = 400, code: str = "bad_request") -> Response[dict[str, Any]]:
    return Response({"error": message, "code": code}, status_code=status)


def pay_routes(sim: State) -> list[Any]:
    @get("/_sim/pay/key")
    async def key() -> dict[str, Any]:
        """What a merchant downloads to link WeChat Pay: the public key and its id (and the platform
        certificate, for the older mode). Made on first use and kept with the simulator's memory."""
        return pay.desk(sim).key_view()

    @post("/_sim/pay/merchants", status_code=200)
    async def register_merchant(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        merchant = pay.build_merchant(data, sim)
        if isinstance(merchant, str):
            return _bad(merchant)
        d = pay.desk(sim)
        for other in [m for m in d.merchants.values() if m.app_id == merchant.app_id and m.mchid != merchant.mchid]:
            del d.merchants[other.mchid]  # one merchant per Mini Program: the newest registration
        d.merchants[merchant.mchid] = merchant
        d.ensure_key()
        d.changed()
        return Response(merchant.public(), status_code=200)

    @get("/_sim/pay/merchants")
    async def merchants() -> list[dict[str, Any]]:
        return [m.public() for m in pay.desk(sim).merchants.values()]

    @post("/_sim/pay/buy", status_code=200)
    async def buy(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        try:
            return Response(await pay.buy(sim, data), status_code=200)
        except pay.PayRefused as exc:
            return _bad(exc.message, exc.status, exc.code)

    @post("/_sim/pay/refund", status_code=200)
    async def refund(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        try:
            return Response(await pay.refund(sim, data), status_code=200)
        except pay.PayRefused as exc:
            return _bad(exc.message, exc.status, exc.code)

    @get("/_sim/pay/orders")
    async def orders(app_id: FromQuery[str | None] = None, person: FromQuery[str | None] = None,
                     out_trade_no: FromQuery[str | None] = None) -> list[dict[str, Any]]:
        d = pay.desk(sim)
        return [o.view(d) for o in d.orders.values() if (app_id is None or o.app_id == app_id)
                and (person is None or o.person == person) and (out_trade_no is None or o.out_trade_no == out_trade_no)]

    @get("/_sim/pay/notifications")
    async def notifications(pending: FromQuery[bool] = False) -> list[dict[str, Any]]:
        """Every notification and its attempts; `pending=true`: those WeChat Pay still retries."""
        return [n.view() for n in pay.desk(sim).notices.values()
                if not pending or (not n.delivered and not n.gave_up)]

    return [key, register_merchant, merchants, buy, refund, orders, notifications]
