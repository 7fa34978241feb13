"""Customers who buy again: the Mini Program's users (those who logged in) buy in rounds, each with a chance per
round that a message raises, so re-engagement has something to prove (the demo's lift against its holdout).

A person "was messaged" when WeChat accepted a message to them (any of the brand's apps: the records name the
person) after their last purchase here and within `message_window_seconds`. Each purchase is paid as any
simulated customer pays (`pay.buy`): the app's WeChat Pay merchant notifies, its backend reports the order to
`backend.purchases_url`, whichever of the two the app has.

The draws come from a seeded generator, so a round is repeatable in tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

from siyu.simulator import pay
from siyu.simulator.state import SimApp, State

MAX_PEOPLE_A_ROUND = 5_000


@dataclass
class Buying:
    base: float = 0.02  # chance a round, for someone not messaged lately
    after_message: float = 0.2  # chance a round, for someone messaged within the window
    message_window_seconds: float = 3600
    sku: str = "SIM-REFILL"
    name: str = "补充装"
    amount_fen: int = 9900
    every_seconds: float | None = None  # play rounds by themselves every so often (None: on request only)
    seed: int = 0
    rounds: int = 0
    orders: int = 0
    last_bought: dict[str, float] = field(default_factory=dict)  # person → when they last bought here
    task: asyncio.Task[Any] | None = None

    def public(self) -> dict[str, Any]:
        return {"base": self.base, "after_message": self.after_message,
                "message_window_seconds": self.message_window_seconds, "sku": self.sku, "name": self.name,
                "amount_fen": self.amount_fen, "every_seconds": self.every_seconds, "seed": self.seed,
                "rounds": self.rounds, "orders": self.orders}


def parse(data: Any, old: Buying | None) -> Buying | str:
    """A Buying from the control body, or what is wrong with it."""
    if not isinstance(data, dict):
        return "the body is an object"
    b = Buying()
    for name in ("base", "after_message"):
        value = data.get(name, getattr(b, name))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return f"{name} is a chance between 0 and 1"
        setattr(b, name, float(value))
    for name, low, high in (("message_window_seconds", 1, 86400 * 30), ("every_seconds", 1, 86400)):
        value = data.get(name, getattr(b, name))
        if value is None and name == "every_seconds":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            return f"{name} is a number of seconds between {low} and {high}"
        setattr(b, name, float(value))
    for name, limit in (("sku", 64), ("name", 64)):
        value = data.get(name, getattr(b, name))
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            return f"{name} is a text of 1 to {limit} characters"
        setattr(b, name, value.strip())
    for name, high in (("amount_fen", 100_000_000), ("seed", 2**31)):
        value = data.get(name, getattr(b, name))
        if isinstance(value, bool) or not isinstance(value, int) or not (1 if name == "amount_fen" else 0) <= value <= high:
            return f"{name} is a whole number up to {high}"
        setattr(b, name, value)
    if old is not None:  # the same shop: who bought when, and the count, carry on
        b.rounds, b.orders, b.last_bought = old.rounds, old.orders, old.last_bought
    return b


def messaged(sim: State, b: Buying, now: float) -> set[str]:
    """People WeChat accepted a message to after their last purchase and within the window."""
    since = now - b.message_window_seconds
    out: set[str] = set()
    for m in reversed(sim.messages):
        at = float(m.get("accepted_at") or 0)
        if at < since:
            break
        person = m.get("person")
        if person and at > b.last_bought.get(person, 0) and m.get("endpoint") != "passive_reply":
            out.add(person)
    return out


def plan(sim: State, app: SimApp, b: Buying, now: float) -> tuple[list[str], set[str]]:
    """Who buys this round (in the app's order), and who was messaged."""
    touched = messaged(sim, b, now)
    draw = random.Random(f"{b.seed}:{app.app_id}:{b.rounds}")
    buyers = [p for p in list(app.members)[:MAX_PEOPLE_A_ROUND]
              if draw.random() < (b.after_message if p in touched else b.base)]
    return buyers, touched


async def buy(sim: State, app: SimApp, b: Buying, person: str) -> dict[str, Any]:
    """One order of the shop's product, paid in the Mini Program; its outcome in short."""
    b.orders += 1
    item = {"sku": b.sku, "name": b.name, "quantity": 1, "unit_price_fen": b.amount_fen}
    try:
        paid = await pay.buy(sim, {"app_id": app.app_id, "person": person, "items": [item],
                                   "sequence": "backend_first", "probe": False})
    except pay.PayRefused as exc:
        return {"person": person, "order_id": None, "error": exc.message}
    if paid["delivered"]:
        b.last_bought[person] = sim.now()
    return {"person": person, "order_id": paid["order"]["out_trade_no"],
            "error": None if paid["delivered"] else "not taken by the brand (backend or WeChat Pay)"}


async def play_round(sim: State, app: SimApp, b: Buying) -> dict[str, Any]:
    buyers, touched = plan(sim, app, b, sim.now())
    b.rounds += 1
    results = [await buy(sim, app, b, p) for p in buyers]
    return {"round": b.rounds, "people": len(app.members), "messaged": len(touched),
            "bought": [r for r in results if r["error"] is None], "errors": [r for r in results if r["error"]]}


def start(sim: State, app: SimApp, b: Buying) -> None:
    """Rounds by themselves every `every_seconds` (until reconfigured or the simulator stops)."""
    if b.every_seconds is None:
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(b.every_seconds or 60)
            with contextlib.suppress(Exception):  # a round that fails (Siyu away) is just a quiet round
                await play_round(sim, app, b)

    b.task = asyncio.get_running_loop().create_task(loop())


def stop(b: Buying | None) -> None:
    if b is not None and b.task is not None:
        b.task.cancel()
        b.task = None
