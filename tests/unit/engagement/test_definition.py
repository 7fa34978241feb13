"""A journey's JSON is the public contract: strict parsing names the field of every mistake, the canonical
form round-trips (export / import), and WeChat's rule on marketing in service notices is enforced."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from siyu.core.errors import InvalidInput
from siyu.engagement.definition import (
    CHANNELS,
    duration,
    parse,
    parse_broadcast_message,
    parse_duration,
)

POST_PURCHASE: dict[str, Any] = {
    "name": "After an order",
    "trigger": {"kind": "purchase", "skus": ["TEA-1", "TEA-2"], "min_fen": 100, "max_fen": 50000, "order": "first",
                "sources": ["api", "pay"]},
    "steps": [
        {"id": "thanks", "send": {"purpose": "service", "text": "谢谢您的订单",
                                  "template": {"mp": {"template_id": "tplMP_1", "data": {"thing1": "订单"},
                                                      "page": "pages/order"}}}},
        {"id": "w1", "wait": "PT10M"},
        {"id": "tip", "send": {"purpose": "marketing", "text": "冲泡小贴士", "channels": ["window", "mass"]}},
        {"id": "c1", "stop_if": {"purchased": True, "tags_any": [4]}},
        {"id": "w2", "wait": "replenishment"},
        {"id": "again", "send": {"purpose": "marketing", "text": "该补货了"}},
    ],
    "exit": {"purchased": True, "refunded": True, "unfollowed": True, "in_conversation": False, "tags_any": [9],
             "segment_id": None},
    "reentry_days": 30, "holdout_percent": 10, "status": "active",
}


def errors_of(raw: Any) -> dict[str, str]:
    with pytest.raises(InvalidInput) as info:
        parse(raw)
    return {e.field: e.message.format(**e.params) for e in info.value.errors}


def test_a_full_journey_round_trips_through_its_canonical_json() -> None:
    j = parse(POST_PURCHASE)
    exported = j.as_json()
    assert parse(json.loads(json.dumps(exported))) == j  # export → import gives the same journey
    assert [s.id for s in j.steps] == ["thanks", "w1", "tip", "c1", "w2", "again"]
    assert j.steps[1].wait == timedelta(minutes=10) and j.steps[4].until_replenishment
    assert exported["steps"][1] == {"id": "w1", "wait": "PT10M"}
    # Defaults are written out: a service message may use every channel its templates allow …
    assert exported["steps"][0]["send"]["channels"] == ["window", "wecom_task", "subscribe", "mass"]
    # … a marketing one never a service-only channel.
    assert exported["steps"][5]["send"]["channels"] == ["window", "wecom_task", "mass"]
    assert j.exit.tags_any == (9,) and not j.exit.in_conversation
    assert j.tag_ids() == {4, 9}


def test_missing_step_ids_are_given_fresh_ones_and_kept_afterwards() -> None:
    raw = {"name": "x", "trigger": {"kind": "follow"}, "steps": [{"send": {"purpose": "service", "text": "hi"}}]}
    first = parse(raw)
    assert first.steps[0].id.startswith("s")
    assert parse(first.as_json()).steps[0].id == first.steps[0].id
    assert parse(raw).steps[0].id != first.steps[0].id  # a step without an id is a new step


def test_defaults_of_a_minimal_journey() -> None:
    j = parse({"name": "  Welcome   series ", "trigger": {"kind": "follow"},
               "steps": [{"id": "hi", "send": {"purpose": "service", "text": " 欢迎 "}}]})
    assert j.name == "Welcome series" and j.status == "draft" and j.holdout_percent == 0 and j.reentry_days is None
    assert j.trigger.channels == ("oa", "wecom")
    assert j.exit.purchased and j.exit.refunded and j.exit.unfollowed and j.exit.in_conversation
    assert j.sends()[0].send.text == "欢迎"  # type: ignore[union-attr]
    seg = parse({"name": "s", "trigger": {"kind": "segment_entry", "segment_id": 7}, "exit": {"tags_any": [1]},
                 "steps": [{"id": "a", "send": {"purpose": "marketing", "text": "t"}}]})
    assert seg.exit.segment_id == 7  # leaving the segment ends the journey unless said otherwise
    assert seg.segment_ids() == {7}


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"),
    ({"name": "x" * 81}, "name"),
    ({"trigger": {"kind": "birthday"}}, "trigger.kind"),
    ({"trigger": {"kind": "purchase", "colour": "red"}}, "trigger"),
    ({"trigger": {"kind": "purchase", "min_fen": -1}}, "trigger.min_fen"),
    ({"trigger": {"kind": "purchase", "min_fen": 500, "max_fen": 100}}, "trigger.max_fen"),
    ({"trigger": {"kind": "purchase", "order": "second"}}, "trigger.order"),
    ({"trigger": {"kind": "purchase", "sources": ["shop"]}}, "trigger.sources"),
    ({"trigger": {"kind": "purchase", "skus": ["x" * 65]}}, "trigger.skus"),
    ({"trigger": {"kind": "inactivity"}}, "trigger.days"),
    ({"trigger": {"kind": "inactivity", "days": 10, "since": "birth"}}, "trigger.since"),
    ({"trigger": {"kind": "segment_entry", "segment_id": "7"}}, "trigger.segment_id"),
    ({"trigger": {"kind": "follow", "channels": ["mp"]}}, "trigger.channels"),
    ({"steps": []}, "steps"),
    ({"steps": [{"wait": "P1D"}]}, "steps"),
    ({"steps": [{"wait": "P1D", "send": {}}]}, "steps[0]"),
    ({"steps": [{"id": "A!", "send": {"purpose": "service", "text": "t"}}]}, "steps[0].id"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "t"}},
                {"id": "a", "send": {"purpose": "service", "text": "t"}}]}, "steps[1].id"),
    ({"steps": [{"id": "a", "wait": "P1M"}, {"id": "b", "send": {"purpose": "service", "text": "t"}}]}, "steps[0].wait"),
    ({"steps": [{"id": "a", "wait": "P400D"}, {"id": "b", "send": {"purpose": "service", "text": "t"}}]},
     "steps[0].wait"),
    ({"steps": [{"id": "a", "send": {"purpose": "ads", "text": "t"}}]}, "steps[0].send.purpose"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "  "}}]}, "steps[0].send.text"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "t" * 601}}]}, "steps[0].send.text"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "t", "channels": ["sms"]}}]},
     "steps[0].send.channels"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "t", "channels": ["template"]}}]},
     "steps[0].send.template.oa"),
    ({"steps": [{"id": "a", "send": {"purpose": "service", "text": "t",
                                      "template": {"mp": {"template_id": "bad id!"}}}}]},
     "steps[0].send.template.mp.template_id"),
    ({"steps": [{"id": "a", "stop_if": {"bought": True}}, {"id": "b", "send": {"purpose": "service", "text": "t"}}]},
     "steps[0].stop_if"),
    ({"exit": {"purchased": "yes"}}, "exit.purchased"),
    ({"exit": {"tags_any": [0]}}, "exit.tags_any"),
    ({"reentry_days": 0}, "reentry_days"),
    ({"holdout_percent": 95}, "holdout_percent"),
    ({"holdout_percent": True}, "holdout_percent"),
    ({"status": "running"}, "status"),
    ({"colour": "red"}, "colour"),
])
def test_every_mistake_is_named_by_its_field(change: dict[str, Any], field: str) -> None:
    raw = {**POST_PURCHASE, **change}
    assert field in errors_of(raw), errors_of(raw)


def test_replenishment_waits_only_in_purchase_journeys() -> None:
    raw = {**POST_PURCHASE, "trigger": {"kind": "follow"}}
    assert "only journeys started by a purchase" in errors_of(raw)["steps[4].wait"].lower()


def test_a_marketing_message_with_only_service_channels_is_refused_with_the_reason() -> None:
    raw = {**POST_PURCHASE, "steps": [{"id": "a", "send": {
        "purpose": "marketing", "text": "大促", "channels": ["subscribe", "template"],
        "template": {"oa": {"template_id": "t1"}, "mp": {"template_id": "t2"}}}}]}
    message = errors_of(raw)["steps[0].send.channels"]
    assert "forbids marketing" in message
    with pytest.raises(InvalidInput) as info:
        parse_broadcast_message({"purpose": "marketing", "text": "大促", "channels": ["template"]})
    assert info.value.errors[0].field == "message.channels"
    # With another channel beside them it is accepted: the service-only ones are passed over at send time.
    ok = parse_broadcast_message({"purpose": "marketing", "text": "大促", "channels": ["template", "mass"],
                                  "template": {"oa": {"template_id": "t1"}}})
    assert ok.channels == ("template", "mass")


def test_every_mistake_at_once() -> None:
    found = errors_of({"name": "", "trigger": {"kind": "nope"}, "steps": "x", "status": 1})
    assert {"name", "trigger.kind", "steps", "status"} <= set(found)


@pytest.mark.parametrize("junk", [None, [], "x", 5, {"steps": [None] * 1000},
                                  {"name": "a" * 10**6}, {"trigger": {"kind": "purchase", "skus": ["\x00"]}}])
def test_junk_is_refused_not_crashed_on(junk: Any) -> None:
    with pytest.raises(InvalidInput):
        parse(junk)


@pytest.mark.parametrize(("text", "value"), [("P7D", timedelta(days=7)), ("PT30M", timedelta(minutes=30)),
                                             ("P1W", timedelta(weeks=1)), ("P1DT2H", timedelta(days=1, hours=2)),
                                             ("PT90S", timedelta(seconds=90)), ("PT0S", timedelta())])
def test_durations(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert parse_duration(duration(value)) == value


@pytest.mark.parametrize("bad", ["", "P", "PT", "P1DT", "P1Y", "P1M", "1D", "P-1D", "PT1.5H", "p1d", "P99999D", 7, None])
def test_bad_durations(bad: Any) -> None:
    assert parse_duration(bad) is None


def test_the_ladder_names() -> None:
    assert CHANNELS == ("window", "wecom_task", "subscribe", "template", "mass")
