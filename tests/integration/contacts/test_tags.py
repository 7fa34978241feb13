"""Tags: per tenant, case-insensitive names, tagging twice changes nothing."""

from __future__ import annotations

import pytest

from siyu.contacts import services as contacts
from siyu.core.errors import InvalidInput, NotFound
from siyu.tenants.services import Actor
from tests.conftest import TenantFixture
from tests.integration.contacts.rows import table

AGENT = Actor(None, "agent@acme.test")


async def test_tag_and_untag(acme: TenantFixture) -> None:
    a = await contacts.resolve_identity(acme.id, "oa", "oA")
    b = await contacts.resolve_identity(acme.id, "mp", "oB")
    vip = await contacts.do_tag(acme.id, a, "  VIP ", AGENT)
    assert await contacts.do_tag(acme.id, a, "vip", AGENT) == vip  # same tag, already there
    assert await contacts.do_tag(acme.id, b, "Vip", AGENT) == vip
    await contacts.do_tag(acme.id, b, "上海", AGENT)
    assert [(t["name"], t["contacts"]) for t in await contacts.list_tags(acme.id)] == [("VIP", 2), ("上海", 1)]
    assert len(await table("contact_tag", acme.id)) == 3
    assert await contacts.do_untag(acme.id, a, vip, AGENT)
    assert not await contacts.do_untag(acme.id, a, vip, AGENT)
    assert [t["name"] for t in await contacts.tags_of(acme.id, a)] == []
    actions = [r["action"] for r in await table("audit_log", acme.id)]
    assert actions.count("contact.tagged") == 3 and actions.count("contact.untagged") == 1


async def test_tags_are_per_tenant(acme: TenantFixture, globex: TenantFixture) -> None:
    a = await contacts.resolve_identity(acme.id, "oa", "oA")
    vip = await contacts.do_tag(acme.id, a, "VIP", AGENT)
    with pytest.raises(NotFound):
        await contacts.do_tag(globex.id, a, "VIP", AGENT)
    with pytest.raises(NotFound):
        await contacts.do_untag(globex.id, a, vip, AGENT)
    g = await contacts.resolve_identity(globex.id, "oa", "oA")
    assert not await contacts.do_untag(globex.id, g, vip, AGENT)  # acme's tag id means nothing here
    assert await contacts.list_tags(globex.id) == []
    assert len(await table("contact_tag", acme.id)) == 1


async def test_bad_tag_names(acme: TenantFixture) -> None:
    a = await contacts.resolve_identity(acme.id, "oa", "oA")
    for name in ("", "   ", "x" * 41):
        with pytest.raises(InvalidInput) as caught:
            await contacts.do_tag(acme.id, a, name, AGENT)
        assert list(caught.value.by_field()) == ["name"]
    assert await table("tag", acme.id) == []
