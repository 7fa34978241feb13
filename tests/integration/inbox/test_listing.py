"""The inbox list query: each box holds exactly the conversations of its statuses that the viewer's scope
allows (checked against `Viewer.sees`, row by row), in order, across pages; search; the counts; and two
queries a page whatever the box, the viewer or the page size."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.core import db
from siyu.core.errors import InvalidInput
from siyu.inbox import listing
from siyu.inbox.config import do_set_team_route
from siyu.inbox.conversations import Viewer
from siyu.tenants import staff as staff_svc
from tests.conftest import TenantFixture
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep, viewer

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def world(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> dict[str, Any]:
    """Two teams, a rep in each, a manager of the first; conversations of every status spread over them."""
    north = await staff_svc.do_create_team(ACTOR, acme.id, "North")
    south = await staff_svc.do_create_team(ACTOR, acme.id, "South")
    rep_n, rep_s = await make_rep("Rep N", teams=(north,)), await make_rep("Rep S", teams=(south,))
    boss = await make_rep("Boss")
    await do_set_team_route(acme.id, north, [], [], [], [boss], ACTOR)
    await do_set_team_route(acme.id, south, [], [], [], [], ACTOR)
    shapes = itertools.cycle([
        ("queued", None, (north,)), ("queued", None, (south,)), ("queued", None, ()), ("assigned", rep_n, (north,)),
        ("assigned", rep_s, (south,)), ("snoozed", rep_n, (north,)), ("bot", None, ()), ("resolved", None, (north,)),
        ("resolved", None, (south,)), ("assigned", rep_s, (north,)), ("bot", None, (south,))])
    for k in range(44):
        status, assignee, teams = next(shapes)
        identity, contact = await make_person()
        if k == 7:
            await db.execute("UPDATE contact SET display_name = '王小明' WHERE id = $1", contact)
        at = None if k in (6, 17) else T0 + timedelta(minutes=(k * 7) % 44)  # never a message: listed first
        await db.execute(
            "INSERT INTO inbox_conversation (tenant, identity, channel, status, assignee, teams, vip, handoff_reason, "
            "unanswered, unread, preview, queued_at, last_message_at, created_at, updated_at) "
            "VALUES ($1, $2, 'oa', $3, $4, $5, $6, '', 0, $7, '', $8, $9, now(), now())",
            acme.id, identity, status, assignee, list(teams), k % 5 == 0 and status == "queued", k % 3,
            T0 + timedelta(seconds=(k * 13) % 44) if status == "queued" else None, at)
    return {"rep_n": rep_n, "rep_s": rep_s, "boss": boss}


async def everything(tenant_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM inbox_conversation WHERE tenant = $1", tenant_id)]


def expected(rows: list[dict[str, Any]], v: Viewer, box: str) -> list[int]:
    chosen = [r for r in rows if r["status"] in listing.BOX_STATUSES[box] and v.sees(r)
              and (box != "mine" or r["assignee"] == v.staff_id)]
    if box == "queued":
        chosen.sort(key=lambda r: (not r["vip"], r["queued_at"], r["id"]))
    else:  # newest message first; never a message sorts first (NULLS FIRST, as the index)
        chosen.sort(key=lambda r: (r["last_message_at"] is None, r["last_message_at"] or T0, r["id"]), reverse=True)
    return [int(r["id"]) for r in chosen]


async def paged(tenant_id: int, v: Viewer, box: str, limit: int, search: str = "") -> list[int]:
    seen: list[int] = []
    cursor = None
    for _ in range(100):
        page = await listing.list_page(tenant_id, v, box, search, cursor, limit)
        seen += [int(c["id"]) for c in page.conversations]
        assert len(page.conversations) <= limit
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize("who", ["rep_n", "rep_s", "boss", "admin"])
async def test_each_box_holds_what_the_scope_allows_in_order_across_pages(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson, who: str) -> None:
    people = await world(acme, make_rep, make_person)
    v = await viewer(acme.id, acme.admin_id if who == "admin" else people[who])
    rows = await everything(acme.id)
    for box in listing.boxes_for(v):
        want = expected(rows, v, box)
        for limit in (1, 3, 25):
            assert await paged(acme.id, v, box, limit) == want, (box, limit)
    if who.startswith("rep"):
        assert listing.boxes_for(v) == ("mine", "unassigned", "queued")
        with pytest.raises(InvalidInput):
            await listing.list_page(acme.id, v, "all")
        # A rep's unassigned box is the queue of their teams (and the team-less), newest first.
        assert set(await paged(acme.id, v, "unassigned", 5)) == set(expected(rows, v, "queued"))
    else:
        assert len(expected(rows, v, "all")) > len(expected(rows, v, "unassigned")) > 0


async def test_counts_and_search(acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson) -> None:
    people = await world(acme, make_rep, make_person)
    rows = await everything(acme.id)
    for who in ("rep_n", "boss"):
        v = await viewer(acme.id, people[who])
        counts = await listing.box_counts(acme.id, v)
        for box in listing.boxes_for(v):
            assert getattr(counts, box) == len(expected(rows, v, box)), (who, box)
        mine = [r for r in rows if r["assignee"] == v.staff_id and r["status"] in ("assigned", "snoozed")]
        assert counts.mine_unread == sum(1 for r in mine if r["unread"] > 0)
        assert (counts.all is None) == (who == "rep_n")
    admin = await viewer(acme.id, acme.admin_id)
    assert listing.BoxCounts(1000, 0, 3, 3, 1000).label("all") == "999+"
    found = await listing.list_page(acme.id, admin, "all", "小明")
    assert [c["display_name"] for c in found.conversations] == ["王小明"]
    openid = found.conversations[0]["external_id"]
    by_id = await listing.list_page(acme.id, admin, "all", openid)
    assert [c["id"] for c in by_id.conversations] == [found.conversations[0]["id"]]
    assert (await listing.list_page(acme.id, admin, "all", "100%_nobody")).conversations == []
    with pytest.raises(InvalidInput) as bad:
        await listing.list_page(acme.id, admin, "queued", cursor=(await listing.list_page(acme.id, admin, "all",
                                                                                         limit=1)).next_cursor)
    assert bad.value.errors[0].field == "cursor"


async def test_a_page_costs_two_queries_whatever_its_box_viewer_or_size(
        acme: TenantFixture, make_rep: MakeRep, make_person: MakePerson, monkeypatch: pytest.MonkeyPatch) -> None:
    people = await world(acme, make_rep, make_person)
    sent: list[str] = []
    real_fetch = db.fetch

    async def counting(sql: str, *args: Any) -> list[Any]:
        sent.append(sql)
        return await real_fetch(sql, *args)

    monkeypatch.setattr(db, "fetch", counting)
    for staff in (people["rep_n"], people["boss"], acme.admin_id):
        monkeypatch.setattr(db, "fetch", real_fetch)
        v = await viewer(acme.id, staff)
        monkeypatch.setattr(db, "fetch", counting)
        for box in listing.boxes_for(v):
            for limit in (2, 25):
                sent.clear()
                page = await listing.list_page(acme.id, v, box, "", None, limit)
                await listing.box_counts(acme.id, v)
                if page.next_cursor:
                    await listing.list_page(acme.id, v, box, "", page.next_cursor, limit)
                    assert len(sent) == 3
                else:
                    assert len(sent) == 2
