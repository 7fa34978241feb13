"""The purchase filters of a segment definition: strict parsing naming the field, the canonical shape, and
the SQL they compile to (values as parameters, commerce's table only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.core.errors import InvalidInput
from siyu.segments.definition import Bounds, Definition, Params, Recency, parse, where

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_purchase_filters_round_trip_in_the_canonical_shape() -> None:
    raw = {"spent": {"at_least": 10000, "at_most": None}, "orders": {"at_most": 3},
           "bought": {"skus": ["TEA-01", " CUP-1 ", "TEA-01"], "match": "all"}, "not_bought": ["GIFT"],
           "first_purchase": {"op": "within", "days": 30}}
    d = parse(raw)
    assert d == Definition(spent=Bounds(10000, None), orders=Bounds(None, 3), bought=("TEA-01", "CUP-1"),
                           bought_match="all", not_bought=("GIFT",), first_purchase=Recency("within", 30))
    assert d.as_json()["bought"] == {"skus": ["TEA-01", "CUP-1"], "match": "all"}
    assert d.as_json()["orders"] == {"at_least": None, "at_most": 3}
    assert parse(d.as_json()) == d
    assert not d.is_empty()


@pytest.mark.parametrize(("raw", "field"), [
    ({"spent": 100}, "spent"),
    ({"spent": {}}, "spent"),
    ({"spent": {"at_least": None, "at_most": None}}, "spent"),
    ({"spent": {"at_least": "100"}}, "spent.at_least"),
    ({"spent": {"at_least": 1.5}}, "spent.at_least"),
    ({"spent": {"at_least": -1}}, "spent.at_least"),
    ({"spent": {"at_most": 10**13}}, "spent.at_most"),
    ({"spent": {"at_least": True}}, "spent.at_least"),
    ({"spent": {"at_least": 500, "at_most": 100}}, "spent.at_most"),
    ({"spent": {"more_than": 1}}, "spent"),
    ({"orders": {"at_least": 2_000_000}}, "orders.at_least"),
    ({"bought": ["A"]}, "bought"),
    ({"bought": {"skus": []}}, "bought.skus"),
    ({"bought": {"skus": "A"}}, "bought.skus"),
    ({"bought": {"skus": ["A\x00"]}}, "bought.skus"),
    ({"bought": {"skus": ["x" * 65]}}, "bought.skus"),
    ({"bought": {"skus": [f"S{i}" for i in range(51)]}}, "bought.skus"),
    ({"bought": {"skus": ["A"], "match": "most"}}, "bought.match"),
    ({"not_bought": "A"}, "not_bought"),
    ({"not_bought": [7]}, "not_bought"),
    ({"bought": {"skus": ["A"]}, "not_bought": ["A"]}, "not_bought"),
    ({"first_purchase": {"op": "within"}}, "first_purchase.days"),
    ({"first_purchase": {"op": "soon", "days": 3}}, "first_purchase"),
])
def test_every_mistake_in_a_purchase_filter_is_named_by_its_field(raw: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(raw)
    assert list(exc.value.by_field()) == [field]


def compiled(raw: dict[str, Any]) -> tuple[str, list[Any]]:
    params = Params(1)
    return where(parse(raw), params, "$1", NOW), params.values


def test_the_sql_takes_every_value_as_a_parameter() -> None:
    sql, args = compiled({"spent": {"at_least": 100, "at_most": 900}, "bought": {"skus": ["X'; DROP"]},
                          "not_bought": ["Y"], "orders": {"at_least": 2}, "first_purchase": {"op": "within", "days": 7}})
    assert "DROP" not in sql and "X'" not in sql
    assert args == [1, 100, 900, 2, ["X'; DROP"], ["Y"], NOW - timedelta(days=7)]
    assert "commerce_contact_stats" in sql


def test_spent_at_most_includes_people_who_never_bought() -> None:
    sql, _ = compiled({"spent": {"at_most": 0}})
    assert "NOT EXISTS" in sql  # no figures row means 0 spent
    never, args = compiled({"first_purchase": {"op": "never"}})
    assert never.endswith("NOT EXISTS (SELECT 1 FROM commerce_contact_stats s WHERE s.tenant = c.tenant AND s.contact = c.id)")
    assert args == [1]
