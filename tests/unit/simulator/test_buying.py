"""Customers who buy again (simulator/buying.py): a chance a round that a recent message raises, drawn from a
seeded generator; only messages after a person's last purchase and within the window count; bad settings are
named."""

from __future__ import annotations

import pytest

from siyu.simulator import buying, rules
from siyu.simulator.state import SimApp, State

APP = "wx00000000000000b0b0"


def shop(people: int) -> tuple[State, SimApp]:
    sim = State()
    app = SimApp(kind="mp", app_id=APP, secret="s", backend_purchases_url="http://127.0.0.1:9/api/v1/purchases")
    sim.apps[APP] = app
    for n in range(people):
        sim.member(app, f"p{n}")
    return sim, app


def message(sim: State, app: SimApp, person: str, at: float) -> None:
    sim.accept(app, "cgi-bin/message/custom/send", rules.openid(APP, person), {"text": "hi"})
    sim.messages[-1]["accepted_at"] = at


def test_a_message_raises_the_chance_to_buy() -> None:
    sim, app = shop(4000)
    now = sim.now()
    for n in range(0, 4000, 2):  # every other person was messaged a minute ago
        message(sim, app, f"p{n}", now - 60)
    b = buying.Buying(base=0.05, after_message=0.4, seed=7)
    buyers, touched = buying.plan(sim, app, b, now)
    assert len(touched) == 2000
    sent = sum(1 for p in buyers if p in touched) / 2000
    unsent = sum(1 for p in buyers if p not in touched) / 2000
    assert 0.35 < sent < 0.45 and 0.03 < unsent < 0.07
    assert buying.plan(sim, app, b, now)[0] == buyers  # the same seed and round: the same draw
    b.rounds += 1
    assert buying.plan(sim, app, b, now)[0] != buyers


def test_only_messages_after_the_last_purchase_and_within_the_window_count() -> None:
    sim, app = shop(3)
    now = sim.now()
    b = buying.Buying(message_window_seconds=3600)
    message(sim, app, "p0", now - 7200)  # too long ago
    message(sim, app, "p1", now - 600)  # before they bought
    message(sim, app, "p2", now - 60)
    sim.accept(app, "passive_reply", rules.openid(APP, "p0"), {"text": "auto"})  # an answer, not a message
    b.last_bought["p1"] = now - 300
    assert buying.messaged(sim, b, now) == {"p2"}


@pytest.mark.parametrize(("body", "named"), [
    ({"base": 1.5}, "base"), ({"after_message": "x"}, "after_message"), ({"message_window_seconds": 0}, "message_window"),
    ({"every_seconds": True}, "every_seconds"), ({"sku": ""}, "sku"), ({"amount_fen": 0}, "amount_fen"),
    ({"seed": -1}, "seed"), ([], "object")])
def test_bad_settings_are_named(body: object, named: str) -> None:
    problem = buying.parse(body, None)
    assert isinstance(problem, str) and named in problem


def test_settings_again_keep_who_bought() -> None:
    old = buying.Buying()
    old.rounds, old.orders, old.last_bought = 3, 5, {"p1": 1.0}
    new = buying.parse({"base": 0.1, "every_seconds": 30}, old)
    assert isinstance(new, buying.Buying)
    assert (new.base, new.every_seconds, new.rounds, new.orders, new.last_bought) == (0.1, 30.0, 3, 5, {"p1": 1.0})
