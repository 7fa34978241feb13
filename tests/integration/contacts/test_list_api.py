"""`GET /api/v1/contacts` without `identity`: the brand's live contacts in keyset pages (`cursor`, `limit`), and
the filters `updated_since`, `tag` and `segment`; mistakes are 400s naming the parameter, another brand's
segment is a 404 and its contacts never show. On the old code this route answered 400 without `identity`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.contacts import services as contacts
from siyu.core import db
from siyu.segments import services as segments
from siyu.tenants.services import Actor
from tests.conftest import Client, TenantFixture
from tests.integration.contacts.test_api import acme_key  # noqa: F401 (a fixture)

ACTOR = Actor(None, "test")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


async def made(tenant_id: int, n: int, prefix: str = "oList") -> list[int]:
    """n contacts, each changed a minute after the previous one."""
    ids = []
    for i in range(n):
        r = await contacts.resolve(tenant_id, "oa", f"{prefix}{i:010d}", at=T0)
        await db.execute("UPDATE contact SET updated_at = $3 WHERE tenant = $1 AND id = $2", tenant_id, r.contact_id,
                         T0 + timedelta(minutes=i))
        ids.append(r.contact_id)
    return ids


async def pages(client: Client, key: dict[str, str], **params: Any) -> list[list[int]]:
    out: list[list[int]] = []
    cursor = None
    while True:
        r = await client.get("/api/v1/contacts", params={**params, **({"cursor": cursor} if cursor else {})},
                             headers=key)
        assert r.status_code == 200, r.text
        body = r.json()
        out.append([c["id"] for c in body["contacts"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 50


async def test_keyset_pages_list_everyone_once_in_change_order(client: Client, acme: TenantFixture,
                                                              acme_key: dict[str, str],  # noqa: F811
                                                              globex: TenantFixture) -> None:
    ids = await made(acme.id, 7)
    await made(globex.id, 3, prefix="oTheirs")
    assert await pages(client, acme_key, limit=3) == [ids[0:3], ids[3:6], ids[6:7]]
    assert await pages(client, acme_key) == [ids]  # the default page holds them all
    one = (await client.get("/api/v1/contacts", params={"limit": 1}, headers=acme_key)).json()
    [c] = one["contacts"]
    assert c["identities"][0]["external_id"] == "oList0000000000" and c["updated_at"].startswith("2026-06-01T08:00")

    # A merged-away contact leaves the list; the survivor moves to the end (it changed).
    await contacts.do_merge(acme.id, ids[0], ids[1], "manual", ACTOR)
    listed = [i for page in await pages(client, acme_key, limit=4) for i in page]
    assert ids[1] not in listed and listed[-1] == ids[0] and sorted(listed) == sorted([ids[0], *ids[2:]])


async def test_updated_since_tag_and_segment(client: Client, acme: TenantFixture,
                                             acme_key: dict[str, str]) -> None:  # noqa: F811
    ids = await made(acme.id, 6)
    since = (T0 + timedelta(minutes=4)).astimezone(datetime.now().astimezone().tzinfo).isoformat()
    assert await pages(client, acme_key, updated_since=since) == [ids[4:]]
    assert await pages(client, acme_key, updated_since="2026-06-01T16:02:00+08:00", limit=2) == [ids[2:4], ids[4:]]

    vip = await contacts.do_tag(acme.id, ids[1], "VIP", ACTOR)
    await contacts.do_tag(acme.id, ids[3], "VIP", ACTOR)
    assert await pages(client, acme_key, tag=str(vip)) == [[ids[1], ids[3]]]
    tagged = (await client.get("/api/v1/contacts", params={"tag": str(vip)}, headers=acme_key)).json()
    assert tagged["contacts"][0]["tags"] == [{"id": vip, "name": "VIP"}]

    segment = await segments.do_create_segment(acme.id, "VIPs", {"tags": {"ids": [vip], "match": "any"}}, ACTOR)
    assert await pages(client, acme_key, segment=str(segment), limit=1) == [[ids[1]], [ids[3]]]
    everyone = await segments.do_create_segment(acme.id, "Everyone", {}, ACTOR)
    assert await pages(client, acme_key, segment=str(everyone), updated_since=since) == [ids[4:]]


async def test_mistakes_name_the_parameter(client: Client, acme: TenantFixture, acme_key: dict[str, str],  # noqa: F811
                                           globex: TenantFixture) -> None:
    await made(acme.id, 2)
    # Cursors that decode but name nothing Siyu gives out: an id beyond int4, a time beyond datetime's, negatives.
    forged = [base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
              for raw in ("0.99999999999", "99999999999999999999999.1", "-5.1", "1.-1", "1.2.3", "\x00.1")]
    for params, field in (({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "x" * 500}, "cursor"),
                          *(({"cursor": c}, "cursor") for c in forged),
                          ({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"limit": "9" * 40}, "limit"),
                          ({"updated_since": "yesterday"}, "updated_since"),
                          ({"updated_since": "2026-06-01T08:00:00"}, "updated_since"),  # no offset
                          ({"updated_since": "9999-12-31T23:59:59-14:00"}, "updated_since"),  # past year 9999 in UTC
                          ({"updated_since": "0001-01-01T00:00:00+14:00"}, "updated_since"),  # before year 1
                          ({"tag": "abc"}, "tag"), ({"tag": "9" * 30}, "tag"), ({"segment": "-1"}, "segment")):
        r = await client.get("/api/v1/contacts", params=params, headers=acme_key)
        assert r.status_code == 400, (params, r.text)
        assert field in r.json()["fields"], (params, r.json())
    theirs = await segments.do_create_segment(globex.id, "Theirs", {}, ACTOR)
    r = await client.get("/api/v1/contacts", params={"segment": str(theirs)}, headers=acme_key)
    missing = await client.get("/api/v1/contacts", params={"segment": "987654"}, headers=acme_key)
    assert r.status_code == missing.status_code == 404 and r.json() == missing.json()
    their_tag = await contacts.do_tag(globex.id, (await made(globex.id, 1, "oTheirs"))[0], "Theirs", ACTOR)
    assert await pages(client, acme_key, tag=str(their_tag)) == [[]]
    assert (await client.get("/api/v1/contacts")).status_code == 401
