"""The contacts JSON API (Bearer key): lookup by any WeChat id, a contact with its identities, its
timeline in pages, and the Mini Program login (jscode2session through the simulator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.contacts import services as contacts
from siyu.tenants import services as tenants
from siyu.timeline import services as timeline
from tests.conftest import MP, Client, Simulator, TenantFixture

OPENID = "oAcmeOpenid0000000000000001"
UNIONID = "uAcmeUnionid000000000000001"


async def key_for(tenant: TenantFixture) -> dict[str, str]:
    _, key = await tenants.do_create_api_key(tenants.Actor.cli(), tenant.id, "mp backend")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def acme_key(acme: TenantFixture) -> dict[str, str]:
    return await key_for(acme)


async def test_lookup_by_openid_unionid_or_external_userid(client: Client, acme: TenantFixture,
                                                          acme_key: dict[str, str]) -> None:
    await contacts.resolve(acme.id, "oa", OPENID, unionid=UNIONID, at=datetime.now(UTC))
    await contacts.resolve(acme.id, "wecom", "wmAcmeExternal0000000001", unionid=UNIONID, at=datetime.now(UTC))
    for value in (OPENID, UNIONID, "wmAcmeExternal0000000001"):
        r = await client.get("/api/v1/contacts", params={"identity": value}, headers=acme_key)
        assert r.status_code == 200, r.text
        [found] = r.json()["contacts"]
        assert {i["channel"] for i in found["identities"]} == {"oa", "wecom"}
        assert found["unionid"] == UNIONID
    none = await client.get("/api/v1/contacts", params={"identity": "oNobodyHasThis0000000000000"}, headers=acme_key)
    assert none.json() == {"contacts": [], "next_cursor": None}


@pytest.mark.parametrize("value", ["", "a b", "x" * 65, "<script>"])
async def test_malformed_identity_is_a_400_naming_the_field(client: Client, acme_key: dict[str, str],
                                                           value: str) -> None:
    r = await client.get("/api/v1/contacts", params={"identity": value}, headers=acme_key)
    assert r.status_code == 400 and "identity" in r.json()["fields"]


async def test_a_contact_and_its_timeline_in_pages(client: Client, acme: TenantFixture,
                                                   acme_key: dict[str, str]) -> None:
    r = await contacts.resolve(acme.id, "oa", OPENID, at=datetime.now(UTC))
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(5):
        await timeline.append(acme.id, r.contact_id, "message_in", "oa", t0 + timedelta(minutes=i),
                              {"text": f"m{i}"}, f"test:{i}", identity_id=r.identity_id)
    one = await client.get(f"/api/v1/contacts/{r.contact_id}", headers=acme_key)
    assert one.status_code == 200 and one.json()["identities"][0]["external_id"] == OPENID
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/api/v1/contacts/{r.contact_id}/timeline", params=params, headers=acme_key)).json()
        seen += [e["payload"].get("text") for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["m4", "m3", "m2", "m1", "m0"]
    bad = await client.get(f"/api/v1/contacts/{r.contact_id}/timeline", params={"kind": "dancing"}, headers=acme_key)
    assert bad.status_code == 400 and "kind" in bad.json()["fields"]
    malformed = await client.get("/api/v1/contacts/abc", headers=acme_key)
    assert malformed.status_code == 400 and "id" in malformed.json()["fields"]


async def test_another_tenants_contact_answers_like_a_missing_one(client: Client, acme_key: dict[str, str],
                                                                  globex: TenantFixture) -> None:
    theirs = await contacts.resolve(globex.id, "oa", "oGlobexOpenid000000000000001", at=datetime.now(UTC))
    base = f"/api/v1/contacts/{theirs.contact_id}"
    for method, path in (("GET", base), ("GET", f"{base}/timeline"), ("GET", f"{base}/export"),
                         ("POST", f"{base}/erase")):
        body = {"json": {"reason": "DSR-1"}} if method == "POST" else {}
        foreign = await client.request(method, path, headers=acme_key, **body)
        missing = await client.request(method, path.replace(str(theirs.contact_id), "987654321"),
                                       headers=acme_key, **body)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
    assert (await contacts.get_contact(globex.id, theirs.contact_id))["erased_at"] is None
    lookup = await client.get("/api/v1/contacts", params={"identity": "oGlobexOpenid000000000000001"},
                              headers=acme_key)
    assert lookup.json() == {"contacts": [], "next_cursor": None}
    assert (await client.get(f"/api/v1/contacts/{theirs.contact_id}")).status_code == 401  # no key at all


async def test_mini_program_login_with_a_code_joins_the_official_account_contact(
        client: Client, acme: TenantFixture, acme_key: dict[str, str], sim: Simulator) -> None:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "mp", MP)
    sim.register("mp", MP["app_id"], MP["app_secret"], open_platform="acme")
    login = sim.push(MP["app_id"], "alice", "mp_login")
    r = await client.post("/api/v1/mp/login", json={"code": login["code"]}, headers=acme_key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["openid"] == login["openid"] and body["unionid"] == login["unionid"]
    # Alice also follows the Official Account: the same unionid joins both identities in one contact.
    oa = await contacts.resolve(acme.id, "oa", "oAliceOnTheOfficialAccount00", unionid=body["unionid"],
                                at=datetime.now(UTC))
    channels = {i["channel"]: i["external_id"] for i in await contacts.identities_of(acme.id, oa.contact_id)}
    assert channels == {"mp": login["openid"], "oa": "oAliceOnTheOfficialAccount00"}
    page = await timeline.page(acme.id, oa.contact_id)
    assert [e.kind for e in page.events] == ["mp_login"]
    again = await client.post("/api/v1/mp/login", json={"code": login["code"]}, headers=acme_key)
    assert again.status_code == 400 and "code" in again.json()["fields"]  # codes work once


async def test_mini_program_login_input_errors(client: Client, acme: TenantFixture,
                                               acme_key: dict[str, str]) -> None:
    r = await client.post("/api/v1/mp/login", json={}, headers=acme_key)
    assert r.status_code == 400 and "code" in r.json()["fields"]
    r = await client.post("/api/v1/mp/login", content=b"not json", headers={**acme_key,
                                                                           "Content-Type": "application/json"})
    assert r.status_code == 400 and "body" in r.json()["fields"]
    r = await client.post("/api/v1/mp/login", json={"openid": "bad openid!"}, headers=acme_key)
    assert r.status_code == 400 and "openid" in r.json()["fields"]
    r = await client.post("/api/v1/mp/login", json={"code": "abcdefgh1234"}, headers=acme_key)
    assert r.status_code == 409 and "no Mini Program" in r.json()["error"]  # not linked
    ok = await client.post("/api/v1/mp/login", json={"openid": "oMpOpenid00000000000000000001"}, headers=acme_key)
    assert ok.status_code == 200 and ok.json()["unionid"] is None
    repeat = await client.post("/api/v1/mp/login", json={"openid": "oMpOpenid00000000000000000001"}, headers=acme_key)
    assert repeat.json()["contact_id"] == ok.json()["contact_id"]
