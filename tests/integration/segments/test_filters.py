"""Each filter of a segment selects exactly the right contacts: tags (any / all / excluded), linked channels,
rep owner, last interaction, last purchase, their combinations; merged-away contacts never, erased ones only
when asked; another tenant's contacts and tags never."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from siyu.core.errors import InvalidInput
from siyu.segments import services as svc
from tests.conftest import TenantFixture
from tests.integration.segments.people import Person, person, tag


@dataclass
class World:
    ids: dict[str, int]  # acme's people by letter
    tags: dict[str, int]  # acme's tags by name, and globex's "globex VIP"

    def names(self, contact_ids: list[int]) -> list[str]:
        back = {v: k for k, v in self.ids.items()}
        return sorted(back.get(i, f"?{i}") for i in contact_ids)


@pytest.fixture
async def world(acme: TenantFixture, globex: TenantFixture) -> World:
    vip, gold = await tag(acme.id, "VIP"), await tag(acme.id, "Gold")
    globex_vip = await tag(globex.id, "VIP")
    people = {
        "a": Person(channels={"oa": False, "wecom": False}, tags=[vip], interacted=2, purchased=10,
                    owners={"rep1": False}),
        "b": Person(channels={"oa": False, "mp": False}, tags=[vip, gold], interacted=40, purchased=200),
        "c": Person(channels={"wecom": False}, tags=[gold], owners={"rep1": True}),
        "d": Person(channels={"mp": False, "wecom": False}, interacted=100, owners={"rep1": False, "rep2": False}),
        "e": Person(channels={"oa": True, "mp": False}, interacted=1, purchased=5),  # unfollowed the OA
        "f": Person(channels={"wecom": False}, tags=[vip], interacted=20, purchased=45, owners={"rep2": False}),
        # Erased: personal details removed; left out unless asked for.
        "x": Person(channels={"oa": True}, tags=[vip], interacted=3, purchased=3, erased=True),
    }
    ids = {k: await person(acme.id, p, k) for k, p in people.items()}
    # Merged away into a: whatever it still carries, it is never a member.
    ids["m"] = await person(acme.id, Person(channels={"oa": False, "mp": False, "wecom": False}, tags=[vip, gold],
                                            interacted=1, purchased=1, owners={"rep1": False, "rep2": False},
                                            merged_into=ids["a"]), "m")
    # Globex's look-alike of everything acme filters on.
    await person(globex.id, Person(channels={"oa": False, "mp": False, "wecom": False}, tags=[globex_vip],
                                   interacted=1, purchased=1, owners={"rep1": False, "rep2": False}), "g")
    return World(ids, {"VIP": vip, "Gold": gold, "globex VIP": globex_vip})


def _resolve(raw: dict[str, Any], w: World) -> dict[str, Any]:
    """Tag names in a case's definition → the world's tag ids."""
    out = dict(raw)
    if "tags" in out:
        out["tags"] = {**out["tags"], "ids": [w.tags[n] for n in out["tags"]["ids"]]}
    if "exclude_tags" in out:
        out["exclude_tags"] = [w.tags[n] for n in out["exclude_tags"]]
    return out


def within(days: int) -> dict[str, Any]:
    return {"op": "within", "days": days}


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("everyone live", {}, "abcdef"),
    ("erased included", {"include_erased": True}, "abcdefx"),
    ("any of one tag", {"tags": {"ids": ["VIP"], "match": "any"}}, "abf"),
    ("any of two tags", {"tags": {"ids": ["VIP", "Gold"], "match": "any"}}, "abcf"),
    ("all of two tags", {"tags": {"ids": ["VIP", "Gold"], "match": "all"}}, "b"),
    ("all of one tag", {"tags": {"ids": ["Gold"], "match": "all"}}, "bc"),
    ("excluded tag", {"exclude_tags": ["VIP"]}, "cde"),
    ("tag and excluded tag", {"tags": {"ids": ["Gold"], "match": "any"}, "exclude_tags": ["VIP"]}, "c"),
    ("linked on OA (an unfollowed OA does not count)", {"channels": ["oa"]}, "ab"),
    ("linked on MP", {"channels": ["mp"]}, "bde"),
    ("linked on WeCom", {"channels": ["wecom"]}, "acdf"),
    ("linked on OA and MP", {"channels": ["oa", "mp"]}, "b"),
    ("linked on OA and WeCom", {"channels": ["oa", "wecom"]}, "a"),
    ("linked on MP and WeCom", {"channels": ["mp", "wecom"]}, "d"),
    ("linked on all three", {"channels": ["oa", "mp", "wecom"]}, ""),
    ("has a rep (removed ones do not count)", {"owner": {"op": "any"}}, "adf"),
    ("has no rep", {"owner": {"op": "none"}}, "bce"),
    ("rep1", {"owner": {"op": "is", "userid": "rep1"}}, "ad"),
    ("rep2", {"owner": {"op": "is", "userid": "rep2"}}, "df"),
    ("a rep nobody has", {"owner": {"op": "is", "userid": "rep9"}}, ""),
    ("interacted within 30 days", {"last_interaction": within(30)}, "aef"),
    ("interacted more than 30 days ago", {"last_interaction": {"op": "more_than", "days": 30}}, "bd"),
    ("no interaction within 30 days, or never", {"last_interaction": {"op": "not_within", "days": 30}}, "bcd"),
    ("never interacted", {"last_interaction": {"op": "never"}}, "c"),
    ("purchased within 30 days", {"last_purchase": within(30)}, "ae"),
    ("purchased more than 30 days ago", {"last_purchase": {"op": "more_than", "days": 30}}, "bf"),
    ("no purchase within 30 days, or never", {"last_purchase": {"op": "not_within", "days": 30}}, "bcdf"),
    ("never purchased", {"last_purchase": {"op": "never"}}, "cd"),
    ("VIPs on OA who bought this month",
     {"tags": {"ids": ["VIP"], "match": "any"}, "channels": ["oa"], "last_purchase": within(30)}, "a"),
    ("lapsed without a rep", {"owner": {"op": "none"}, "last_interaction": {"op": "not_within", "days": 30}}, "bc"),
    ("erased VIPs too", {"tags": {"ids": ["VIP"], "match": "any"}, "include_erased": True}, "abfx"),
    ("erased, linked on OA", {"channels": ["oa"], "include_erased": True}, "ab"),
]


@pytest.mark.parametrize(("raw", "expected"), [(r, e) for _, r, e in CASES], ids=[n for n, _, _ in CASES])
async def test_each_filter_selects_exactly_the_right_contacts(acme: TenantFixture, world: World,
                                                             raw: dict[str, Any], expected: str) -> None:
    definition = await svc.validate_definition(acme.id, _resolve(raw, world))
    page = await svc.members_of(acme.id, definition, limit=svc.MAX_PAGE)
    assert world.names([c["id"] for c in page.contacts]) == sorted(expected)
    assert [c["id"] for c in page.contacts] == sorted(world.ids[k] for k in expected)  # lowest id first
    assert page.next_after is None
    assert await svc.count(acme.id, definition) == len(expected)
    assert (await svc.breakdown(acme.id, definition)).total == len(expected)


async def test_breakdown_counts_contacts_linked_on_each_channel(acme: TenantFixture, world: World) -> None:
    everyone = await svc.breakdown(acme.id, {})
    # OA: a, b (e unfollowed); MP: b, d, e; WeCom: a, c, d, f.
    assert (everyone.total, everyone.oa, everyone.mp, everyone.wecom) == (6, 2, 3, 4)
    assert everyone.share("wecom") == pytest.approx(4 / 6)
    vips = await svc.breakdown(acme.id, {"tags": {"ids": [world.tags["VIP"]], "match": "any"}})
    assert (vips.total, vips.oa, vips.mp, vips.wecom) == (3, 2, 1, 2)
    nobody = await svc.breakdown(acme.id, {"owner": {"op": "is", "userid": "rep9"}})
    assert (nobody.total, nobody.oa, nobody.share("oa")) == (0, 0, 0.0)


async def test_members_carry_the_channels_they_are_linked_on(acme: TenantFixture, world: World) -> None:
    page = await svc.members_of(acme.id, await svc.validate_definition(acme.id, {}))
    channels = {world.names([c["id"]])[0]: c["channels"] for c in page.contacts}
    assert channels == {"a": ["oa", "wecom"], "b": ["oa", "mp"], "c": ["wecom"], "d": ["mp", "wecom"],
                        "e": ["mp"], "f": ["wecom"]}


@pytest.mark.parametrize("field", ["tags", "exclude_tags"])
async def test_another_tenants_tag_is_an_unknown_tag(acme: TenantFixture, world: World, field: str) -> None:
    theirs = world.tags["globex VIP"]
    raw = {"tags": {"ids": [theirs], "match": "any"}} if field == "tags" else {"exclude_tags": [theirs]}
    with pytest.raises(InvalidInput) as exc:
        await svc.count(acme.id, raw)
    assert list(exc.value.by_field()) == [field]
    assert exc.value.errors[0].message.startswith("This is an unknown tag")
    # A tag id that exists nowhere is refused the same way.
    missing = {"tags": {"ids": [987654], "match": "any"}} if field == "tags" else {"exclude_tags": [987654]}
    with pytest.raises(InvalidInput) as again:
        await svc.count(acme.id, missing)
    assert again.value.errors[0].message == exc.value.errors[0].message


@pytest.mark.parametrize("column", ["interacted", "purchased"])
async def test_day_windows_are_exact_to_the_moment(acme: TenantFixture, column: str) -> None:
    inside = await person(acme.id, Person(**{column: 30 - 1 / 24}), "inside")  # 29 days 23 hours ago
    outside = await person(acme.id, Person(**{column: 30 + 1 / 24}), "outside")  # 30 days 1 hour ago
    name = "last_interaction" if column == "interacted" else "last_purchase"
    for op, expected in (("within", [inside]), ("more_than", [outside]), ("not_within", [outside])):
        page = await svc.members_of(acme.id, await svc.validate_definition(acme.id, {name: {"op": op, "days": 30}}))
        assert [c["id"] for c in page.contacts] == expected, op
