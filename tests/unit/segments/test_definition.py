"""A segment's definition is checked strictly, every mistake named by its field; the SQL it compiles to
carries every value as a parameter, so its text depends only on which filters are set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.core.errors import InvalidInput
from siyu.segments.definition import Definition, OwnerRule, Params, Recency, parse, where

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

FULL = {"tags": {"ids": [3, 7], "match": "all"}, "exclude_tags": [9], "channels": ["wecom", "oa"],
        "owner": {"op": "is", "userid": "zhang.san@sh"}, "last_interaction": {"op": "within", "days": 30},
        "last_purchase": {"op": "never"}, "include_erased": True}


def test_a_full_definition_parses_to_its_canonical_form() -> None:
    d = parse(FULL)
    assert d == Definition(tags=(3, 7), tag_match="all", exclude_tags=(9,), channels=("oa", "wecom"),
                           owner=OwnerRule("is", "zhang.san@sh"), last_interaction=Recency("within", 30),
                           last_purchase=Recency("never"), include_erased=True)
    assert parse(d.as_json()) == d
    assert d.as_json()["channels"] == ["oa", "wecom"]  # canonical order


def test_the_empty_definition_selects_every_live_contact() -> None:
    empty = parse({})
    assert empty.is_empty() and empty == Definition()
    assert empty.as_json() == {"tags": None, "exclude_tags": [], "channels": [], "owner": None,
                               "last_interaction": None, "last_purchase": None, "include_erased": False,
                               "spent": None, "orders": None, "bought": None, "not_bought": [],
                               "first_purchase": None}
    # Nulls and empty lists mean "no filter", as the API returns them.
    assert parse(empty.as_json()) == empty
    assert parse({"tags": {"ids": [], "match": "all"}}).is_empty()
    assert parse({"tags": {"ids": [4, 4, 2]}}).tags == (4, 2)


@pytest.mark.parametrize(("raw", "field"), [
    ("everyone", "definition"),
    ([], "definition"),
    ({"colour": "red"}, "colour"),
    ({"tags": [1]}, "tags"),
    ({"tags": {"ids": ["1"]}}, "tags"),
    ({"tags": {"ids": [True]}}, "tags"),
    ({"tags": {"ids": [0]}}, "tags"),
    ({"tags": {"ids": [2**31]}}, "tags"),
    ({"tags": {"ids": list(range(1, 52))}}, "tags"),
    ({"tags": {"ids": [1], "weight": 2}}, "tags"),
    ({"tags": {"ids": [1], "match": "most"}}, "tags.match"),
    ({"exclude_tags": "1"}, "exclude_tags"),
    ({"exclude_tags": [1.5]}, "exclude_tags"),
    ({"tags": {"ids": [1, 2]}, "exclude_tags": [2]}, "exclude_tags"),
    ({"channels": ["sms"]}, "channels"),
    ({"channels": "oa"}, "channels"),
    ({"owner": "any"}, "owner"),
    ({"owner": {"op": "boss"}}, "owner"),
    ({"owner": {"op": "is"}}, "owner.userid"),
    ({"owner": {"op": "is", "userid": "  "}}, "owner.userid"),
    ({"owner": {"op": "is", "userid": "zhang san"}}, "owner.userid"),
    ({"owner": {"op": "is", "userid": "张三"}}, "owner.userid"),
    ({"owner": {"op": "is", "userid": "x" * 65}}, "owner.userid"),
    ({"owner": {"op": "is", "userid": "x'; DROP TABLE contact; --"}}, "owner.userid"),
    ({"owner": {"op": "none", "userid": "rep1"}}, "owner.userid"),
    ({"last_interaction": {"op": "lately"}}, "last_interaction"),
    ({"last_interaction": {"op": "within"}}, "last_interaction.days"),
    ({"last_interaction": {"op": "within", "days": 0}}, "last_interaction.days"),
    ({"last_interaction": {"op": "more_than", "days": "30"}}, "last_interaction.days"),
    ({"last_purchase": {"op": "not_within", "days": 3651}}, "last_purchase.days"),
    ({"last_purchase": {"op": "within", "days": 7.5}}, "last_purchase.days"),
    ({"last_purchase": {"op": "never", "days": 3}}, "last_purchase.days"),
    ({"last_purchase": {"op": "never", "since": 3}}, "last_purchase"),
    ({"last_purchase": 30}, "last_purchase"),
    ({"include_erased": "yes"}, "include_erased"),
    ({"include_erased": 1}, "include_erased"),
])
def test_every_mistake_is_named_by_its_field(raw: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(raw)
    assert list(exc.value.by_field()) == [field]


def test_all_mistakes_are_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse({"channels": ["fax"], "owner": {"op": "is"}, "last_purchase": {"op": "within", "days": -1},
               "include_erased": "no"})
    assert sorted(exc.value.by_field()) == ["channels", "include_erased", "last_purchase.days", "owner.userid"]


def _compiled(raw: dict[str, Any]) -> tuple[str, list[Any]]:
    params = Params(1)
    return where(parse(raw), params, "$1", NOW), params.values


def test_values_travel_as_parameters_never_in_the_sql_text() -> None:
    one_sql, one_args = _compiled(FULL)
    other = {**FULL, "tags": {"ids": [11, 12, 13], "match": "all"}, "exclude_tags": [14],
             "owner": {"op": "is", "userid": "li-si"}, "last_interaction": {"op": "within", "days": 365}}
    other_sql, other_args = _compiled(other)
    assert one_sql == other_sql
    assert one_args != other_args
    assert "zhang.san@sh" not in one_sql and "zhang.san@sh" in one_args
    assert [3, 7] in one_args and [9] in one_args and ["oa", "wecom"] in one_args
    assert one_sql.count("$") == len(one_args)


def test_only_the_filters_that_are_set_reach_the_sql() -> None:
    bare, args = _compiled({})
    assert bare == "c.tenant = $1 AND c.merged_into IS NULL AND c.erased_at IS NULL"
    assert args == [1]
    with_erased, _ = _compiled({"include_erased": True})
    assert "erased_at" not in with_erased and "merged_into IS NULL" in with_erased
    never, args = _compiled({"last_purchase": {"op": "never"}})
    assert never.endswith("c.last_purchase_at IS NULL") and args == [1]
    within, args = _compiled({"last_interaction": {"op": "within", "days": 30}})
    assert within.endswith("c.last_interaction_at >= $2")
    assert args[1] == datetime(2026, 10, 22, 12, 0, tzinfo=UTC)
