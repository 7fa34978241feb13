"""Data-subject requests: the JSON export of one person, and the erasure of their personal information
(contact, identities, timeline, notes, rep remarks, tags, merge snapshots, stored callbacks), audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from siyu.contacts import privacy
from siyu.contacts import services as contacts
from siyu.core import db
from siyu.core.errors import InvalidInput, NotFound
from siyu.tenants import services as tenants
from siyu.wechat.tables import InboundEvent
from tests.conftest import Client, TenantFixture
from tests.integration.contacts.rows import owned_by, table
from tests.integration.contacts.test_inbound import T0, Channels, link_all, run_worker
from tests.wechat_payloads import event, text

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
ACTOR = tenants.Actor.cli()
SECRETS = ("Wang Xiaoming", "13812345678", "VIP since 2019", "my address is 88 Nanjing Road", "likes perfume",
           "wx.qlogo.cn/wang")


@pytest.fixture
async def person(acme: TenantFixture, client: Client, app: Any) -> dict[str, int]:
    """One person known through the OA (with callbacks stored) and the MP, merged by unionid, with
    everything an agent and the channels could have told Siyu."""
    await link_all(acme)
    c = Channels(client, app)
    await c.post(c.oa, event("oWang", "subscribe", at=T0, EventKey="qrscene_spring"))
    await c.post(c.oa, text("oWang", "my address is 88 Nanjing Road", 9301, at=T0 + 1))
    await c.settle()
    await run_worker()
    oa = await contacts.resolve(acme.id, "oa", "oWang", profile={"nickname": "Wang Xiaoming"})
    mp = await contacts.resolve(acme.id, "mp", "oWangMp", profile={"nickname": "Wang Xiaoming"})
    await db.execute("UPDATE contact SET display_name = 'Wang Xiaoming', phone = '13812345678', "
                     "avatar_url = 'https://wx.qlogo.cn/wang' WHERE id = ANY($1::int[])", [oa.contact_id, mp.contact_id])
    await contacts.resolve(acme.id, "oa", "oWang", unionid="uWang000000000001")
    merged = await contacts.resolve(acme.id, "mp", "oWangMp", unionid="uWang000000000001")
    assert merged.contact_id == oa.contact_id
    await contacts.do_tag(acme.id, oa.contact_id, "VIP since 2019", ACTOR)
    await contacts.do_add_note(acme.id, oa.contact_id, "likes perfume", ACTOR)
    await contacts.record_owner_added(acme.id, oa.identity_id, "rep.li", datetime.fromtimestamp(T0, UTC))
    await db.execute("UPDATE owner SET remark = 'Wang Xiaoming', description = 'likes perfume', "
                     "tags = '[{\"name\": \"VIP since 2019\"}]'::jsonb WHERE tenant = $1", acme.id)
    return {"contact": oa.contact_id, "merged": mp.contact_id}


async def everything(tenant_id: int) -> str:
    """Every row of the tenant that could hold something about the person, as text."""
    rows: list[Any] = []
    for name in ("contact", "identity", "owner", "timeline_event", "contact_merge", "contact_tag"):
        rows += await table(name, tenant_id)
    rows += [dict(r) for r in await db.fetch(
        "SELECT payload::text FROM wechat_inbound_event WHERE tenant = $1", tenant_id)]
    return json.dumps(rows, default=str, ensure_ascii=False)


async def test_export_holds_everything_about_the_person_and_is_audited(acme: TenantFixture,
                                                                       person: dict[str, int]) -> None:
    doc = await privacy.export_contact(acme.id, person["merged"], ACTOR)  # a merged-away id: its survivor
    assert doc["format"] == "siyu.contact-export/1"
    assert doc["contact"]["id"] == person["contact"] and doc["contact"]["phone"] == "13812345678"
    assert {(i["channel"], i["external_id"]) for i in doc["identities"]} == {("oa", "oWang"), ("mp", "oWangMp")}
    assert doc["tags"] == ["VIP since 2019"]
    assert doc["owners"][0]["remark"] == "Wang Xiaoming"
    kinds = [e["kind"] for e in doc["timeline"]]
    assert {"followed", "message_in", "note", "merged"} <= set(kinds)
    assert any(e["payload"].get("Content") == "my address is 88 Nanjing Road" for e in doc["timeline"])
    assert [m["reason"] for m in doc["merges"]] == ["unionid"]
    json.dumps(doc)  # plain JSON all the way down
    audit = [a for a in await table("audit_log", acme.id) if a["action"] == "contact.exported"]
    assert len(audit) == 1 and audit[0]["target_id"] == str(person["contact"])


async def test_erasure_removes_every_personal_trace_and_keeps_the_shape(acme: TenantFixture,
                                                                        person: dict[str, int]) -> None:
    before = await everything(acme.id)
    assert all(s in before for s in SECRETS)  # the test can fail: everything is there first
    events_before = len(await table("timeline_event", acme.id))

    erased = await privacy.do_erase_contact(acme.id, person["contact"], "DSR-2026-0042", ACTOR)

    after = await everything(acme.id)
    assert [s for s in SECRETS if s in after] == []
    assert erased["contacts"] == 2 and erased["identities"] == 2 and erased["callbacks"] == 2
    assert len(await table("timeline_event", acme.id)) == events_before  # the history's shape stays
    ids = {(i["channel"], i["external_id"], i["unionid"]) for i in await table("identity", acme.id)}
    assert ids == {("oa", "oWang", "uWang000000000001"), ("mp", "oWangMp", "uWang000000000001")}
    row = await contacts.get_contact(acme.id, person["contact"])
    assert row["erased_at"] is not None and row["unionid"] == "uWang000000000001"
    raw = await InboundEvent.select(InboundEvent.payload).output(load_json=True)
    assert all(r["payload"]["erased"] for r in raw)
    assert any(r["payload"]["details"].get("scene") == "spring" for r in raw)  # the campaign stays
    [audit] = [a for a in await table("audit_log", acme.id) if a["action"] == "contact.erased"]
    assert audit["changes"]["reason"] == "DSR-2026-0042" and audit["changes"]["events"] > 0

    # Again: nothing more to erase, nothing changes.
    snapshot = await everything(acme.id)
    again = await privacy.do_erase_contact(acme.id, person["contact"], "DSR-2026-0042", ACTOR)
    assert again["events"] == 0 and again["callbacks"] == 0
    assert await everything(acme.id) == snapshot


async def test_an_undo_after_erasure_brings_nothing_back(acme: TenantFixture, person: dict[str, int]) -> None:
    await privacy.do_erase_contact(acme.id, person["contact"], "DSR-7", ACTOR)
    [merge] = await contacts.list_merges(acme.id, person["contact"])
    await contacts.do_unmerge(acme.id, merge["id"], ACTOR)
    assert [s for s in SECRETS if s in await everything(acme.id)] == []
    for cid in person.values():
        assert (await contacts.get_contact(acme.id, cid))["display_name"] == ""


async def test_erasure_needs_a_reason_and_the_tenants_own_contact(acme: TenantFixture, globex: TenantFixture,
                                                                  person: dict[str, int]) -> None:
    with pytest.raises(InvalidInput) as exc:
        await privacy.do_erase_contact(acme.id, person["contact"], "  ", ACTOR)
    assert "reason" in exc.value.by_field()
    with pytest.raises(NotFound):
        await privacy.do_erase_contact(globex.id, person["contact"], "DSR-1", ACTOR)
    with pytest.raises(NotFound):
        await privacy.export_contact(globex.id, person["contact"], ACTOR)
    assert "13812345678" in await everything(acme.id)  # nothing was touched


async def test_export_and_erase_over_the_api(client: Client, acme: TenantFixture, globex: TenantFixture,
                                             person: dict[str, int]) -> None:
    _, key = await tenants.do_create_api_key(ACTOR, acme.id, "dpo")
    _, foreign = await tenants.do_create_api_key(ACTOR, globex.id, "other")
    auth = {"Authorization": f"Bearer {key}"}
    r = await client.get(f"/api/v1/contacts/{person['contact']}/export", headers=auth)
    assert r.status_code == 200 and r.json()["contact"]["phone"] == "13812345678"
    r = await client.get(f"/api/v1/contacts/{person['contact']}/export",
                         headers={"Authorization": f"Bearer {foreign}"})
    assert r.status_code == 404
    r = await client.get("/api/v1/contacts/12x/export", headers=auth)
    assert r.status_code == 400 and "id" in r.json()["fields"]
    r = await client.post(f"/api/v1/contacts/{person['contact']}/erase", json={}, headers=auth)
    assert r.status_code == 400 and "reason" in r.json()["fields"]
    r = await client.post(f"/api/v1/contacts/{person['contact']}/erase", content=b"[1]", headers=auth)
    assert r.status_code == 400 and "body" in r.json()["fields"]
    r = await client.post(f"/api/v1/contacts/{person['contact']}/erase", json={"reason": "DSR-9"}, headers=auth)
    assert r.status_code == 200 and r.json()["erased"]["identities"] == 2
    assert "13812345678" not in await everything(acme.id)


async def test_export_and_erase_from_the_contact_page(acme_admin: Client, acme_agent: Client, acme: TenantFixture,
                                                      globex: TenantFixture, person: dict[str, int]) -> None:
    cid = person["contact"]
    page = await acme_admin.get(f"/contacts/{cid}")
    assert page.status_code == 200 and f"/contacts/{cid}/export" in page.text
    r = await acme_admin.get(f"/contacts/{cid}/export")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert r.json()["contact"]["phone"] == "13812345678"
    # Sales reps neither see nor use it, even for their own customers.
    await owned_by(acme.id, acme.agent_id, cid)
    assert f"/contacts/{cid}/export" not in (await acme_agent.get(f"/contacts/{cid}")).text
    assert (await acme_agent.get(f"/contacts/{cid}/export")).status_code == 403
    assert (await acme_agent.form(f"/contacts/{cid}/erase", {"reason": "x"})).status_code == 403
    # Another tenant's contact answers like a missing one.
    theirs = await contacts.resolve(globex.id, "oa", "oGlobexPerson00001", at=datetime.now(UTC))
    for method, path in (("GET", "export"), ("POST", "erase")):
        foreign = await (acme_admin.get(f"/contacts/{theirs.contact_id}/{path}") if method == "GET"
                         else acme_admin.form(f"/contacts/{theirs.contact_id}/{path}", {"reason": "x"}))
        missing = await (acme_admin.get(f"/contacts/987654/{path}") if method == "GET"
                         else acme_admin.form(f"/contacts/987654/{path}", {"reason": "x"}))
        assert foreign.status_code == missing.status_code == 404 and foreign.text == missing.text
    bad = await acme_admin.form(f"/contacts/{cid}/erase", {"reason": ""}, htmx=True)
    assert bad.status_code == 400 and 'id="msg-reason"' in bad.text
    assert "13812345678" in await everything(acme.id)
    ok = await acme_admin.form(f"/contacts/{cid}/erase", {"reason": "DSR-11"}, htmx=True)
    assert ok.status_code == 200 and ok.headers.get("HX-Redirect") == f"/contacts/{cid}"
    assert "13812345678" not in await everything(acme.id)
