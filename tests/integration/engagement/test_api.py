"""The journeys and broadcasts JSON API (Bearer key): typed in the OpenAPI schema, the journey JSON round-trips,
bad input is a 400 naming the field, status changes are PATCHes, the ledger pages by cursor, and another
tenant's journey or broadcast answers exactly like a missing one."""

from __future__ import annotations

from typing import Any

import pytest

from siyu.core import clock
from siyu.engagement import triggers
from siyu.segments import services as segments
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import Client, TenantFixture
from tests.integration.engagement.conftest import ACTOR, World, sweep
from tests.integration.segments.test_api import key_for

JOURNEY = {"name": "Welcome", "trigger": {"kind": "follow", "channels": ["oa"]},
           "steps": [{"id": "hi", "send": {"purpose": "service", "text": "欢迎"}},
                     {"id": "w", "wait": "P2D"},
                     {"id": "tip", "send": {"purpose": "marketing", "text": "新人礼", "channels": ["window", "mass"]}}],
           "holdout_percent": 0}


@pytest.fixture
async def key(acme: TenantFixture) -> dict[str, str]:
    return await key_for(acme)


async def test_create_read_list_and_round_trip(client: Client, key: dict[str, str], world: World) -> None:
    made = await client.post("/api/v1/journeys", json=JOURNEY, headers=key)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["status"] == "draft" and body["version"] == 1 and body["entered"] == 0
    assert body["steps"][1] == {"id": "w", "wait": "P2D"}
    assert body["counts"] == {"targeted": 0, "states": {}, "reasons": {}, "sent_by_channel": {}, "conversions": 0,
                              "revenue_fen": 0}
    one = await client.get(f"/api/v1/journeys/{body['id']}", headers=key)
    assert one.json() == body
    # Export → import: the same definition makes the same journey (under another name).
    exported = {k: body[k] for k in ("trigger", "steps", "exit", "reentry_days", "holdout_percent")}
    again = await client.post("/api/v1/journeys", json={**exported, "name": "Welcome copy"}, headers=key)
    assert again.status_code == 201 and {k: again.json()[k] for k in exported} == exported
    listing = await client.get("/api/v1/journeys", headers=key)
    assert [j["name"] for j in listing.json()["journeys"]] == ["Welcome", "Welcome copy"]


async def test_status_changes_and_new_versions_by_patch(client: Client, key: dict[str, str], world: World,
                                                        runtime: WeChatRuntime) -> None:
    jid = (await client.post("/api/v1/journeys", json=JOURNEY, headers=key)).json()["id"]
    started = await client.patch(f"/api/v1/journeys/{jid}", json={"status": "active"}, headers=key)
    assert started.status_code == 200 and started.json()["status"] == "active"
    gina = await world.person("gina", window=True)
    await triggers.on_follow(world.tenant.id, gina.contact_id, "oa", 1, clock.now())
    await sweep(runtime)
    reworded = {**JOURNEY, "steps": [JOURNEY["steps"][0], JOURNEY["steps"][1],
                                     {"id": "tip", "send": {"purpose": "marketing", "text": "新人礼 v2"}}]}
    changed = await client.patch(f"/api/v1/journeys/{jid}", json=reworded, headers=key)
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.json()["status"] == "active"
    assert changed.json()["counts"]["states"] == {"sent": 1, "scheduled": 1}
    back = await client.patch(f"/api/v1/journeys/{jid}", json={"status": "draft"}, headers=key)
    assert back.status_code == 409 and "archived" in back.json()["error"]
    bad = await client.patch(f"/api/v1/journeys/{jid}", json={"status": 7}, headers=key)
    assert bad.status_code == 400 and "status" in bad.json()["fields"]

    page1 = await client.get(f"/api/v1/journeys/{jid}/deliveries", params={"limit": 1}, headers=key)
    assert page1.status_code == 200
    [newest] = page1.json()["deliveries"]
    assert newest["step"] == "tip" and newest["state"] == "scheduled"
    page2 = await client.get(f"/api/v1/journeys/{jid}/deliveries",
                             params={"limit": 1, "cursor": page1.json()["next_cursor"]}, headers=key)
    [older] = page2.json()["deliveries"]
    assert (older["step"], older["state"], older["channel"]) == ("hi", "sent", "oa_window")
    assert page2.json()["next_cursor"] is None
    for params in ({"limit": "0"}, {"limit": "x"}, {"cursor": "-1"}, {"cursor": "9" * 30}):
        r = await client.get(f"/api/v1/journeys/{jid}/deliveries", params=params, headers=key)
        assert r.status_code == 400, params


@pytest.mark.parametrize(("body", "field"), [
    ({**JOURNEY, "trigger": {"kind": "birthday"}}, "trigger.kind"),
    ({**JOURNEY, "steps": [{"id": "x", "send": {"purpose": "marketing", "text": "促销", "channels": ["template"]}}]},
     "steps[0].send.channels"),
    ({**JOURNEY, "steps": [{"id": "x", "wait": "tomorrow"}, JOURNEY["steps"][0]]}, "steps[0].wait"),
    ({**JOURNEY, "holdout_percent": "10"}, "holdout_percent"),
    ({**JOURNEY, "name": None}, "name"),
    ([1, 2], "body"),
])
async def test_bad_journeys_are_400s_naming_the_field(client: Client, key: dict[str, str], world: World,
                                                      body: Any, field: str) -> None:
    r = await client.post("/api/v1/journeys", json=body, headers=key)
    assert r.status_code == 400, r.text
    assert field in r.json()["fields"], r.json()


async def test_junk_bodies_never_answer_500(client: Client, key: dict[str, str], world: World) -> None:
    for content in (b"", b"{", b"null", b"x" * (70 * 1024), b'{"name": "' + b"a" * 100_000 + b'"}',
                    b"[" * 100_000 + b"]" * 100_000):
        r = await client.post("/api/v1/journeys", content=content, headers={**key, "content-type": "application/json"})
        assert r.status_code in (400, 413), (content[:20], r.status_code)


async def test_broadcasts_are_created_and_read_with_their_counts(client: Client, key: dict[str, str], world: World,
                                                                 runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    people = [await world.person(f"b{n}", window=True) for n in range(3)]
    seg = await segments.do_create_segment(tid, "OA followers", {"channels": ["oa"]}, ACTOR)
    r = await client.post("/api/v1/broadcasts", json={
        "name": "双十二", "segment_id": seg, "message": {"purpose": "marketing", "text": "双十二会员日",
                                                       "channels": ["window"]}, "rate_per_minute": 600}, headers=key)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["status"] == "scheduled" and b["rate_per_minute"] == 600
    from siyu.engagement import broadcasts

    assert await broadcasts.fan_out(tid, b["id"]) == 3
    await sweep(runtime)
    got = (await client.get(f"/api/v1/broadcasts/{b['id']}", headers=key)).json()
    assert got["status"] == "sending" and got["counts"]["targeted"] == 3
    assert sum(got["counts"]["states"].values()) == 3
    assert people
    for body, field in (({"name": "x", "segment_id": 99999, "message": {"purpose": "service", "text": "t"}},
                         "segment_id"),
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "ads", "text": "t"}},
                         "message.purpose"),
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"},
                          "send_at": "tomorrow"}, "send_at"),
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"},
                          "send_at": "9999-12-31T23:59:59-14:00"}, "send_at"),  # past year 9999 in UTC
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"},
                          "send_at": "0001-01-01T00:00:00+14:00"}, "send_at"),  # before year 1 in UTC
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"},
                          "rate_per_minute": 0}, "rate_per_minute"),
                        ({"name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"},
                          "colour": 1}, "colour")):
        bad = await client.post("/api/v1/broadcasts", json=body, headers=key)
        assert bad.status_code == 400 and field in bad.json()["fields"], (field, bad.text)


async def test_another_tenants_ids_answer_like_missing_ones(client: Client, key: dict[str, str], world: World,
                                                            globex: TenantFixture) -> None:
    theirs_key = await key_for(globex)
    theirs = (await client.post("/api/v1/journeys", json=JOURNEY, headers=theirs_key)).json()["id"]
    seg = await segments.do_create_segment(globex.id, "All", {}, ACTOR)
    their_b = (await client.post("/api/v1/broadcasts", json={
        "name": "x", "segment_id": seg, "message": {"purpose": "service", "text": "t"}}, headers=theirs_key)).json()["id"]
    for url, missing in ((f"/api/v1/journeys/{theirs}", "/api/v1/journeys/99999"),
                         (f"/api/v1/journeys/{theirs}/deliveries", "/api/v1/journeys/99999/deliveries"),
                         (f"/api/v1/broadcasts/{their_b}", "/api/v1/broadcasts/99999")):
        a, b = await client.get(url, headers=key), await client.get(missing, headers=key)
        assert (a.status_code, a.content) == (b.status_code, b.content) and a.status_code == 404
    a = await client.patch(f"/api/v1/journeys/{theirs}", json={"status": "archived"}, headers=key)
    b = await client.patch("/api/v1/journeys/99999", json={"status": "archived"}, headers=key)
    assert (a.status_code, a.content) == (b.status_code, b.content) and a.status_code == 404
    # A segment of theirs is an unknown segment here.
    r = await client.post("/api/v1/broadcasts", json={"name": "x", "segment_id": seg,
                                                     "message": {"purpose": "service", "text": "t"}}, headers=key)
    assert r.status_code == 400 and "segment_id" in r.json()["fields"]


async def test_the_openapi_schema_types_the_bodies(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    post = schema["paths"]["/api/v1/journeys"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("JourneyIn")
    assert "BroadcastIn" in schema["components"]["schemas"] and "DeliveryPage" in schema["components"]["schemas"]
    assert "/api/v1/journeys/{journey_id}/deliveries" in schema["paths"]
