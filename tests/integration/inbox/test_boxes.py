"""Box counts are capped (a large tenant does not count every open conversation on each page), and each
status branch of a page keeps the viewer's scope."""

from __future__ import annotations

import pytest

from siyu.inbox import boxes
from siyu.inbox.handoff import do_handoff
from tests.conftest import TenantFixture
from tests.integration.inbox.conftest import MakePerson, MakeRep, viewer


async def test_counts_are_capped_and_pages_keep_the_scope(acme: TenantFixture, make_rep: MakeRep,
                                                          make_person: MakePerson,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    a = await make_rep("A", capacity=2)
    b = await make_rep("B", capacity=0)  # never routed to: sees only the waiting ones
    convs = [await do_handoff(acme.id, (await make_person())[0]) for _ in range(5)]
    assert [c["assignee"] for c in convs[:2]] == [a, a] and all(c["status"] == "queued" for c in convs[2:])
    admin = await viewer(acme.id, acme.admin_id)
    assert (await boxes.counts(acme.id, admin))["all"]["total"] == 5
    monkeypatch.setattr(boxes, "COUNT_CAP", 3)
    assert (await boxes.counts(acme.id, admin))["all"]["total"] == "2+"
    assert (await boxes.counts(acme.id, await viewer(acme.id, a)))["mine"]["total"] == 2

    rep_b = await viewer(acme.id, b)
    page = await boxes.conversations(acme.id, rep_b, boxes.parse_filter(rep_b, "unassigned", "open", ""))
    assert sorted(r["id"] for r in page.rows) == sorted(c["id"] for c in convs[2:])
    mine = await boxes.conversations(acme.id, rep_b, boxes.parse_filter(rep_b, "mine", "any", ""))
    assert mine.rows == []
    first = await boxes.conversations(acme.id, admin, boxes.parse_filter(admin, "all", "open", ""), limit=2)
    rest = await boxes.conversations(acme.id, admin, boxes.parse_filter(admin, "all", "open", ""),
                                     cursor=first.next_cursor, limit=10)
    assert len({r["id"] for r in first.rows + rest.rows}) == 5 and rest.next_cursor is None
