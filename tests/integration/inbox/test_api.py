"""The inbox JSON API (Bearer key): conversations in keyset pages by status, one conversation with its
newest messages, and the "API call" handoff; malformed input is a 400 naming the field, another tenant's
conversation, contact or person answers byte for byte like a missing one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siyu.core import db
from siyu.inbox.handoff import do_handoff
from siyu.tenants import services as tenants
from tests.conftest import Client, TenantFixture
from tests.integration.inbox.conftest import MakePerson, MakeRep, status_of

MISSING = 987654321
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def key_for(tenant: TenantFixture) -> dict[str, str]:
    _, key = await tenants.do_create_api_key(tenants.Actor.cli(), tenant.id, "crm sync")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def acme_key(acme: TenantFixture) -> dict[str, str]:
    return await key_for(acme)


async def conversation(tenant_id: int, identity_id: int, status: str, at: datetime | None,
                       assignee: int | None = None) -> int:
    row = await db.fetchrow(
        "INSERT INTO inbox_conversation (tenant, identity, channel, status, assignee, teams, vip, handoff_reason, "
        "unanswered, unread, preview, queued_at, last_message_at, created_at, updated_at) "
        "VALUES ($1, $2, 'oa', $3, $4, '{}', false, '', 0, 0, $5, CASE WHEN $3::varchar = 'queued' THEN $6::timestamptz END, "
        "$6, now(), now()) RETURNING id", tenant_id, identity_id, status, assignee, f"preview {status}", at)
    return int(row["id"])


async def test_conversations_in_keyset_pages_by_status(client: Client, acme: TenantFixture, acme_key: dict[str, str],
                                                       make_person: MakePerson, make_rep: MakeRep) -> None:
    rep = await make_rep("Li Na")
    made: dict[int, str] = {}
    for k, status in enumerate(["queued", "assigned", "queued", "resolved", "queued", "bot", "queued"]):
        identity, _ = await make_person()
        at = T0 + timedelta(minutes=k) if k != 5 else None  # the bot one never had a message: listed first
        made[await conversation(acme.id, identity, status, at, rep if status == "assigned" else None)] = status
    newest_first = [cid for cid in sorted(made, key=lambda c: -c) if made[cid] != "bot"]
    bot = next(c for c in made if made[c] == "bot")

    seen, cursor = [], None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/v1/conversations", params=params, headers=acme_key)
        assert r.status_code == 200, r.text
        seen += [c["id"] for c in r.json()["conversations"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [bot, *newest_first]

    queued = [cid for cid in newest_first if made[cid] == "queued"]
    page1 = (await client.get("/api/v1/conversations", params={"status": "queued", "limit": 2}, headers=acme_key)).json()
    page2 = (await client.get("/api/v1/conversations", params={"status": "queued", "limit": 2,
                                                              "cursor": page1["next_cursor"]}, headers=acme_key)).json()
    assert [c["id"] for c in page1["conversations"] + page2["conversations"]] == queued and page2["next_cursor"] is None
    one = page1["conversations"][0]
    assert one["status"] == "queued" and one["channel"] == "oa" and one["preview"] == "preview queued"
    assert isinstance(one["contact_id"], int) and one["queued_at"] is not None and one["assignee"] is None
    assigned = (await client.get("/api/v1/conversations", params={"status": "assigned"}, headers=acme_key)).json()
    assert assigned["conversations"][0]["assignee"] == {"id": rep, "name": "Li Na"}


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "open"}, "status"), ({"status": "<b>"}, "status"), ({"limit": "abc"}, "limit"),
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "cS4xLjI"}, "cursor")])  # "q.1.2": a queue cursor, not one of this list
async def test_list_input_errors_name_the_field(client: Client, acme_key: dict[str, str], params: dict[str, str],
                                                field: str) -> None:
    r = await client.get("/api/v1/conversations", params=params, headers=acme_key)
    assert r.status_code == 400, r.text
    assert field in r.json()["fields"]


async def test_a_conversation_with_its_newest_messages(client: Client, acme: TenantFixture, acme_key: dict[str, str],
                                                       make_person: MakePerson) -> None:
    identity, contact = await make_person()
    cid = await conversation(acme.id, identity, "queued", T0)
    for k in range(105):
        await db.execute(
            "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
            "source_key, created_at) VALUES ($1, $2, 'in', '', 'text', $3, 'received', $4, $5)",
            acme.id, cid, f"<script>m{k}</script>", f"test:{k}", T0 + timedelta(seconds=k))
    await db.execute(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, source_key, "
        "created_at) VALUES ($1, $2, 'system', 'siyu', 'event', '{\"event\": \"queued\", \"reason\": \"api\"}', "
        "'noted', 'test:sys', now())", acme.id, cid)
    r = await client.get(f"/api/v1/conversations/{cid}", headers=acme_key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == cid and body["contact_id"] == contact and body["status"] == "queued"
    messages = body["messages"]
    assert len(messages) == 100
    assert messages[0]["direction"] == "system" and messages[0]["event"] == {"event": "queued", "reason": "api"}
    assert [m["body"] for m in messages[1:3]] == ["<script>m104</script>", "<script>m103</script>"]
    assert messages[-1]["body"] == "<script>m6</script>"  # 106 messages: the oldest six are past the newest 100
    assert r.headers["content-type"].startswith("application/json")
    for bad in ("abc", "1.5", "-3", "9" * 16):
        r = await client.get(f"/api/v1/conversations/{bad}", headers=acme_key)
        assert r.status_code == 400 and "id" in r.json()["fields"], bad
    assert (await client.get(f"/api/v1/conversations/{cid}")).status_code == 401


async def test_another_tenants_conversation_answers_byte_for_byte_like_a_missing_one(
        client: Client, acme: TenantFixture, globex: TenantFixture, acme_key: dict[str, str],
        make_person: MakePerson) -> None:
    identity, _ = await make_person(tenant_id=globex.id)
    theirs = await conversation(globex.id, identity, "queued", T0)
    foreign = await client.get(f"/api/v1/conversations/{theirs}", headers=acme_key)
    missing = await client.get(f"/api/v1/conversations/{MISSING}", headers=acme_key)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert foreign.headers["content-type"] == missing.headers["content-type"]
    listed = await client.get("/api/v1/conversations", headers=acme_key)
    assert listed.json() == {"conversations": [], "next_cursor": None}
    # Control: globex's own key reads it.
    own = await client.get(f"/api/v1/conversations/{theirs}", headers=await key_for(globex))
    assert own.status_code == 200 and own.json()["id"] == theirs


async def test_handoff_by_contact_and_channel_or_by_identity(client: Client, acme: TenantFixture,
                                                             acme_key: dict[str, str], make_person: MakePerson,
                                                             make_rep: MakeRep) -> None:
    identity, contact = await make_person()
    r = await client.post("/api/v1/conversations/handoff", json={"contact_id": contact, "channel": "oa"},
                          headers=acme_key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "queued" and body["queue_position"] == 1 and body["handoff_reason"] == "api"
    assert body["contact_id"] == contact
    line = await db.fetchrow("SELECT body FROM inbox_message WHERE conversation = $1 AND direction = 'system'",
                             body["id"])
    assert '"by": "api-key:' in line["body"]
    # A second person waits behind the first; with a rep online, the next one is assigned at once.
    second, _ = await make_person()
    openid = (await db.fetchrow("SELECT external_id FROM identity WHERE id = $1", second))["external_id"]
    r2 = await client.post("/api/v1/conversations/handoff", json={"identity": openid}, headers=acme_key)
    assert r2.json()["status"] == "queued" and r2.json()["queue_position"] == 2
    rep = await make_rep("Wang Fang")
    third, third_contact = await make_person()
    r3 = await client.post("/api/v1/conversations/handoff", json={"contact_id": str(third_contact), "channel": "oa"},
                           headers=acme_key)
    assert r3.json()["status"] == "assigned" and r3.json()["assignee"] == {"id": rep, "name": "Wang Fang"}
    assert r3.json()["queue_position"] is None
    # Asking again for a conversation a human has changes nothing.
    again = await client.post("/api/v1/conversations/handoff", json={"contact_id": third_contact, "channel": "oa"},
                              headers=acme_key)
    assert again.status_code == 200 and again.json()["assignee"]["id"] == rep
    assert await status_of(body["id"]) == "queued"
    audit = await db.fetch("SELECT actor_label, target_id FROM audit_log WHERE action = 'conversation.handoff' "
                           "ORDER BY id")
    assert len(audit) == 4 and all(a["actor_label"].startswith("api-key:") for a in audit)
    assert audit[0]["target_id"] == str(body["id"])


@pytest.mark.parametrize(("payload", "field"), [
    ({}, "contact_id"), ({"contact_id": "abc", "channel": "oa"}, "contact_id"),
    ({"contact_id": True, "channel": "oa"}, "contact_id"), ({"contact_id": 1.5, "channel": "oa"}, "contact_id"),
    ({"contact_id": 1, "channel": "sms"}, "channel"), ({"contact_id": 1}, "channel"),
    ({"identity": "a b"}, "identity"), ({"identity": 12345678}, "identity"), ({"identity": "x" * 65}, "identity"),
    (["not", "an", "object"], "body")])
async def test_handoff_input_errors_name_the_field(client: Client, acme_key: dict[str, str], payload: Any,
                                                   field: str) -> None:
    r = await client.post("/api/v1/conversations/handoff", json=payload, headers=acme_key)
    assert r.status_code == 400, r.text
    assert field in r.json()["fields"]
    raw = await client.post("/api/v1/conversations/handoff", content=b"{nope",
                            headers={**acme_key, "Content-Type": "application/json"})
    assert raw.status_code == 400 and "body" in raw.json()["fields"]


async def test_a_contact_not_linked_on_the_channel(client: Client, acme_key: dict[str, str],
                                                   make_person: MakePerson) -> None:
    _, contact = await make_person()
    r = await client.post("/api/v1/conversations/handoff", json={"contact_id": contact, "channel": "wecom"},
                          headers=acme_key)
    assert r.status_code == 400 and "channel" in r.json()["fields"]


async def test_handoff_of_another_tenants_person_answers_like_a_missing_one(
        client: Client, globex: TenantFixture, acme_key: dict[str, str], make_person: MakePerson) -> None:
    identity, contact = await make_person(tenant_id=globex.id)
    openid = (await db.fetchrow("SELECT external_id FROM identity WHERE id = $1", identity))["external_id"]
    url = "/api/v1/conversations/handoff"
    for foreign_body, missing_body in (({"contact_id": contact, "channel": "oa"}, {"contact_id": MISSING, "channel": "oa"}),
                                       ({"identity": openid}, {"identity": "oNobodyHasThisOpenid000001"})):
        foreign = await client.post(url, json=foreign_body, headers=acme_key)
        missing = await client.post(url, json=missing_body, headers=acme_key)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.content == missing.content
    assert await db.fetchrow("SELECT 1 FROM inbox_conversation WHERE identity = $1", identity) is None
    # Control: the handoff itself works for globex's person through globex.
    assert (await do_handoff(globex.id, identity))["status"] == "queued"
