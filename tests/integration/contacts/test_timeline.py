"""The timeline: idempotent by source key, newest first with a cursor, filtered by channel and kind."""

from __future__ import annotations

from datetime import timedelta

import pytest

from siyu.contacts import services as contacts
from siyu.core.clock import now
from siyu.core.errors import InvalidInput, NotFound
from siyu.tenants.services import Actor
from siyu.timeline import services as timeline
from tests.conftest import TenantFixture
from tests.integration.contacts.rows import table


async def test_append_is_idempotent_by_source_key(acme: TenantFixture) -> None:
    contact = await contacts.resolve_identity(acme.id, "oa", "oT")
    at = now()
    first = await timeline.append(acme.id, contact, "message_in", "oa", at, {"Content": "hi"}, "wechat:1")
    assert first is not None
    again = await timeline.append(acme.id, contact, "message_in", "oa", at, {"Content": "changed"}, "wechat:1")
    assert again is None
    [event] = await table("timeline_event", acme.id)
    assert event["payload"] == {"Content": "hi"}
    assert (await contacts.get_contact(acme.id, contact))["last_interaction_at"] == at
    # Source keys are per tenant.
    other = await contacts.resolve_identity(acme.id, "mp", "oT2")
    assert await timeline.append(acme.id, other, "note", "siyu", at, {}, "wechat:1") is None


async def test_pages_newest_first_with_a_cursor_and_filters(acme: TenantFixture) -> None:
    contact = await contacts.resolve_identity(acme.id, "oa", "oPaged")
    start = now() - timedelta(days=1)
    plan = [("oa", "message_in"), ("mp", "message_in"), ("oa", "menu_click"), ("wecom", "wecom_added"),
            ("siyu", "note")] * 5
    for i, (channel, kind) in enumerate(plan):
        # Two events share each timestamp: the id breaks the tie, and the cursor must too.
        await timeline.append(acme.id, contact, kind, channel, start + timedelta(minutes=i // 2), {"i": i}, f"k{i}")
    seen: list[int] = []
    cursor = None
    while True:
        page = await timeline.page(acme.id, contact, cursor=cursor, limit=7)
        seen += [e.payload["i"] for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(range(len(plan)), key=lambda i: (i // 2, i), reverse=True)

    oa_messages = await timeline.page(acme.id, contact, channels=["oa"], kinds=["message_in"], limit=3)
    assert [e.payload["i"] for e in oa_messages.events] == [20, 15, 10]
    rest = await timeline.page(acme.id, contact, channels=["oa"], kinds=["message_in"], cursor=oa_messages.next_cursor)
    assert [e.payload["i"] for e in rest.events] == [5, 0] and rest.next_cursor is None
    both = await timeline.page(acme.id, contact, channels=["mp", "wecom"])
    assert {e.channel for e in both.events} == {"mp", "wecom"} and len(both.events) == 10


async def test_bad_page_requests_name_their_field(acme: TenantFixture) -> None:
    contact = await contacts.resolve_identity(acme.id, "oa", "oBad")
    cases = [({"cursor": "not-a-cursor"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 201}, "limit"),
             ({"channels": ["sms"]}, "channel"), ({"kinds": ["liked"]}, "kind"), ({"kinds": []}, "kind")]
    for kwargs, field in cases:
        with pytest.raises(InvalidInput) as caught:
            await timeline.page(acme.id, contact, **kwargs)  # type: ignore[arg-type]
        assert list(caught.value.by_field()) == [field]
    with pytest.raises(InvalidInput) as kind:
        await timeline.append(acme.id, contact, "liked", "oa", now(), {}, "x")
    assert list(kind.value.by_field()) == ["kind"]


async def test_another_tenants_contact_is_not_found(acme: TenantFixture, globex: TenantFixture) -> None:
    contact = await contacts.resolve_identity(acme.id, "oa", "oMine")
    await timeline.append(acme.id, contact, "note", "siyu", now(), {"text": "private"}, "n1")
    with pytest.raises(NotFound):
        await timeline.page(globex.id, contact)
    with pytest.raises(NotFound):
        await timeline.append(globex.id, contact, "note", "siyu", now(), {}, "n2")
    with pytest.raises(NotFound):
        await timeline.page(acme.id, 987654)
    assert len(await table("timeline_event", acme.id)) == 1 and await table("timeline_event", globex.id) == []


async def test_an_append_to_a_merged_contact_lands_on_the_survivor(acme: TenantFixture) -> None:
    a = await contacts.resolve_identity(acme.id, "oa", "oA")
    b = await contacts.resolve_identity(acme.id, "mp", "oB")
    await contacts.do_merge(acme.id, a, b, "manual", Actor(None, "agent"))
    event_id = await timeline.append(acme.id, b, "note", "siyu", now(), {}, "after-merge")
    [row] = [e for e in await table("timeline_event", acme.id) if e["id"] == event_id]
    assert row["contact"] == a
