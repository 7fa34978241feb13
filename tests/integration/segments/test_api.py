"""The segments JSON API (Bearer key): the list, one segment with its live count and channel breakdown, and
its contacts in cursor pages; malformed numbers are 400s naming the parameter; another tenant's segment
answers exactly like a missing one."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.segments import services as svc
from siyu.tenants import services as tenants
from tests.conftest import Client, TenantFixture
from tests.integration.segments.people import crowd, tag

ACTOR = tenants.Actor.cli()


async def key_for(tenant: TenantFixture) -> dict[str, str]:
    _, key = await tenants.do_create_api_key(ACTOR, tenant.id, "crm sync")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def acme_key(acme: TenantFixture) -> dict[str, str]:
    return await key_for(acme)


@pytest.fixture
async def vips(acme: TenantFixture) -> dict[str, Any]:
    vip = await tag(acme.id, "VIP")
    ids = await crowd(acme.id, 7, "vip", channels={"oa": False, "mp": False}, tags=[vip], interacted=2)
    ids += await crowd(acme.id, 4, "vip-wecom", channels={"wecom": False}, tags=[vip])
    await crowd(acme.id, 5, "other", channels={"oa": False})
    sid = await svc.do_create_segment(acme.id, "VIPs", {"tags": {"ids": [vip], "match": "any"}}, ACTOR)
    return {"id": sid, "tag": vip, "members": ids}


async def test_list_and_one_segment_with_its_count(client: Client, acme_key: dict[str, str],
                                                   vips: dict[str, Any]) -> None:
    listing = await client.get("/api/v1/segments", headers=acme_key)
    assert listing.status_code == 200
    [item] = listing.json()["segments"]
    assert item["id"] == vips["id"] and item["name"] == "VIPs"
    assert item["definition"]["tags"] == {"ids": [vips["tag"]], "match": "any"}
    assert item["definition"]["include_erased"] is False and "count" not in item
    one = await client.get(f"/api/v1/segments/{vips['id']}", headers=acme_key)
    assert one.status_code == 200
    body = one.json()
    assert body["count"] == 11 and body["channels"] == {"oa": 7, "mp": 7, "wecom": 4}
    assert {k: body[k] for k in item} == item


async def test_contacts_in_cursor_pages(client: Client, acme_key: dict[str, str], vips: dict[str, Any]) -> None:
    url = f"/api/v1/segments/{vips['id']}/contacts"
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        r = await client.get(url, params=params, headers=acme_key)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["contacts"]) <= 4
        seen += [c["id"] for c in page["contacts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == vips["members"]
    first = (await client.get(url, headers=acme_key)).json()
    assert [c["id"] for c in first["contacts"]] == vips["members"] and first["next_cursor"] is None  # limit 100
    sample = first["contacts"][0]
    assert sample["channels"] == ["oa", "mp"] and sample["erased"] is False
    assert sample["last_interaction_at"] is not None and sample["last_purchase_at"] is None


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/api/v1/segments/abc", {}, "id"),
    ("/api/v1/segments/99999999999", {}, "id"),
    ("/api/v1/segments/{id}/contacts", {"limit": "many"}, "limit"),
    ("/api/v1/segments/{id}/contacts", {"limit": "0"}, "limit"),
    ("/api/v1/segments/{id}/contacts", {"limit": "501"}, "limit"),
    ("/api/v1/segments/{id}/contacts", {"cursor": "-3"}, "cursor"),
    ("/api/v1/segments/{id}/contacts", {"cursor": "eyJpZCI6IDF9"}, "cursor"),
])
async def test_malformed_numbers_are_a_400_naming_them(client: Client, acme_key: dict[str, str],
                                                      vips: dict[str, Any], path: str, params: dict[str, str],
                                                      field: str) -> None:
    r = await client.get(path.format(id=vips["id"]), params=params, headers=acme_key)
    assert r.status_code == 400, r.text
    assert list(r.json()["fields"]) == [field]


async def test_another_tenants_segment_answers_like_a_missing_one(client: Client, acme_key: dict[str, str],
                                                                  globex: TenantFixture) -> None:
    await crowd(globex.id, 3, "theirs", channels={"oa": False})
    theirs = await svc.do_create_segment(globex.id, "Globex everyone", {}, ACTOR)
    for path in ("/api/v1/segments/{}", "/api/v1/segments/{}/contacts"):
        foreign = await client.get(path.format(theirs), headers=acme_key)
        missing = await client.get(path.format(987654321), headers=acme_key)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.content == missing.content
        assert "Globex" not in foreign.text
    assert (await client.get("/api/v1/segments", headers=acme_key)).json() == {"segments": []}
    # Control: globex's own key reads it.
    own = await client.get(f"/api/v1/segments/{theirs}", headers=await key_for(globex))
    assert own.status_code == 200 and own.json()["count"] == 3


async def test_the_api_needs_a_key(client: Client, vips: dict[str, Any]) -> None:
    for path in ("/api/v1/segments", f"/api/v1/segments/{vips['id']}", f"/api/v1/segments/{vips['id']}/contacts"):
        r = await client.get(path)
        assert r.status_code == 401
        r = await client.get(path, headers={"Authorization": "Bearer siyu_nope_nope"})
        assert r.status_code == 401
