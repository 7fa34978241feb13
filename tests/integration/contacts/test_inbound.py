"""The whole path: signed callbacks through the gateway, the gateway's batch job, and the contacts job it
enqueues by name, in a real burst-mode arq worker. Running the jobs again changes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from arq.worker import Worker

from siyu import worker as worker_root
from siyu.contacts import services as contacts
from siyu.contacts.jobs import resolve_inbound
from siyu.contacts.tables import Contact
from siyu.core.redis import JOB_SERIALIZATION, arq_pool
from siyu.tenants import services as tenants
from siyu.timeline import services as timeline
from siyu.wechat.tables import InboundEvent
from tests.conftest import MP, OA, WECOM, Client, TenantFixture
from tests.integration.contacts.rows import state, table
from tests.wechat_payloads import Sender, event, text

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
T0 = int(time.time()) - 3600


async def run_worker() -> int:
    """Burst workers until the queue stays empty (a burst worker ends once the queue is empty and its own
    jobs are done, even if those jobs queued more); returns how many jobs completed."""
    complete = 0
    while True:
        w = Worker(functions=worker_root.FUNCTIONS, redis_settings=worker_root.redis_settings(), burst=True, **JOB_SERIALIZATION,
                   handle_signals=False, poll_delay=0.05, max_jobs=10)
        await w.main()
        await w.close()
        assert w.jobs_failed == 0 and w.jobs_retried == 0
        if not w.jobs_complete:
            return complete
        complete += w.jobs_complete


class Channels:
    def __init__(self, client: Client, app: Any, slug: str = "acme") -> None:
        self.client, self.app = client, app
        self.oa = Sender(slug, "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")
        self.mp = Sender(slug, "mp", MP["app_id"], MP["token"], MP["aes_key"], "safe", "json")
        self.wecom = Sender(slug, "wecom", WECOM["corp_id"], WECOM["token"], WECOM["aes_key"])

    async def post(self, sender: Sender, fields: dict[str, Any]) -> None:
        cb = sender.callback(fields)
        r = await self.client.post(cb.url, content=cb.body)
        assert r.status_code == 200, r.text

    async def settle(self) -> None:
        await self.app.state.ingestor.settle()

    def wecom_change(self, change: str, external: str, rep: str, at: int, **extra: str) -> dict[str, Any]:
        return {"ToUserName": WECOM["corp_id"], "FromUserName": "sys", "CreateTime": at, "MsgType": "event",
                "Event": "change_external_contact", "ChangeType": change, "UserID": rep,
                "ExternalUserID": external, **extra}


async def link_all(tenant: TenantFixture) -> None:
    for kind, data in (("oa", OA), ("mp", MP), ("wecom", WECOM)):
        await tenants.do_link_channel(tenants.Actor.cli(), tenant.id, kind, data)


@pytest.fixture
async def channels(acme: TenantFixture, client: Client, app: Any) -> Channels:
    await link_all(acme)
    return Channels(client, app)


async def test_callbacks_become_contacts_identities_and_timeline_events(acme: TenantFixture,
                                                                       channels: Channels) -> None:
    c = channels
    await c.post(c.oa, event("oFan", "subscribe", at=T0, EventKey="qrscene_spring_fair", Ticket="TICKET1"))
    await c.post(c.oa, text("oFan", "do you ship to Hangzhou?", 9001, at=T0 + 1))
    await c.post(c.oa, event("oFan", "CLICK", at=T0 + 2, EventKey="MENU_NEW"))
    await c.post(c.oa, text("oFan", "retried", 9001, at=T0 + 1))  # WeChat's retry: the same MsgId
    await c.post(c.mp, {"ToUserName": "gh", "FromUserName": "oShopper", "CreateTime": T0 + 3, "MsgType": "text",
                        "Content": "where is my order", "MsgId": 9002})
    await c.post(c.mp, {"ToUserName": "gh", "FromUserName": "oShopper", "CreateTime": T0 + 4, "MsgType": "event",
                        "Event": "user_enter_tempsession", "SessionFrom": "cart"})
    await c.post(c.wecom, c.wecom_change("add_external_contact", "wmCust", "zhangsan", T0 + 5, State="fair",
                                         WelcomeCode="W1"))
    await c.post(c.wecom, c.wecom_change("add_external_contact", "wmCust", "lisi", T0 + 6))
    await c.post(c.wecom, c.wecom_change("del_follow_user", "wmCust", "lisi", T0 + 7))
    await c.settle()
    # Eight new events, each its own batch (sequential callbacks), each batch one contacts job, one inbox job
    # and one re-engagement job; then profile enrichment: one for the OA fan (never asked yet), one per WeCom add (the simulator
    # does not know these accounts: logged as a configuration problem, nothing written).
    assert await run_worker() == 35

    identities = {(i["channel"], i["external_id"]): i for i in await table("identity", acme.id)}
    assert set(identities) == {("oa", "oFan"), ("mp", "oShopper"), ("wecom", "wmCust")}
    assert len(await table("contact", acme.id)) == 3  # no unionid known yet: three contacts
    fan = identities[("oa", "oFan")]["contact"]
    page = await timeline.page(acme.id, fan)
    assert [e.kind for e in page.events] == ["menu_click", "message_in", "followed"]
    assert page.events[2].payload["scene"] == "spring_fair"
    assert page.events[1].payload["Content"] == "do you ship to Hangzhou?"
    assert page.events[0].payload["key"] == "MENU_NEW"
    assert all(e.source_key.startswith("wechat:") and e.identity_id == identities[("oa", "oFan")]["id"]
               for e in page.events)
    shopper = await timeline.page(acme.id, identities[("mp", "oShopper")]["contact"])
    assert [e.kind for e in shopper.events] == ["message_in"]  # entering the session is not history
    customer = identities[("wecom", "wmCust")]["contact"]
    added = await timeline.page(acme.id, customer)
    assert [(e.kind, e.payload["user_id"]) for e in added.events] == [
        ("wecom_removed", "lisi"), ("wecom_added", "lisi"), ("wecom_added", "zhangsan")]
    assert "welcome_code" not in added.events[2].payload
    owners = {o["staff_userid"]: o for o in await contacts.owners_of(acme.id, customer, include_removed=True)}
    assert owners["zhangsan"]["state"] == "fair" and owners["zhangsan"]["removed_at"] is None
    assert owners["lisi"]["removed_at"] is not None
    assert (await contacts.get_contact(acme.id, fan))["last_interaction_at"].timestamp() == T0 + 2

    # Again: the contacts job directly, then the whole chain from the gateway's job (as the sweeper would).
    before = await state(acme.id)
    ids = [r["id"] for r in await InboundEvent.select(InboundEvent.id)]
    assert await resolve_inbound({}, ids) == 0
    assert await state(acme.id) == before
    await InboundEvent.update({InboundEvent.processed_at: None}).where(InboundEvent.id.is_in(ids))
    pool = await arq_pool()
    try:
        await pool.enqueue_job("wechat.process_inbound_batch", ids, _job_id="again")
        await pool.enqueue_job("contacts.resolve_inbound", ids, _job_id="contacts-again")
    finally:
        await pool.aclose()
    # The batch runs again; the contacts job it queues has the id of the first one (done, its result
    # kept), so arq drops it; the contacts job queued under another id runs and adds nothing.
    assert await run_worker() == 2
    assert await state(acme.id) == before


async def test_unfollow_erases_personal_fields_and_keeps_history(acme: TenantFixture, channels: Channels) -> None:
    c = channels
    await c.post(c.oa, event("oLeaver", "subscribe", at=T0, EventKey="qrscene_ad"))
    await c.post(c.oa, text("oLeaver", "my phone is 13812345678", 9101, at=T0 + 1))
    await c.settle()
    assert await run_worker() > 0
    [identity] = await table("identity", acme.id)
    contact = identity["contact"]
    # What enrichment would have filled in.
    await Contact.update({Contact.display_name: "Leaver", Contact.avatar_url: "https://wx.qlogo.cn/x",
                          Contact.phone: "13812345678"}).where(Contact.id == contact)
    await contacts.resolve(acme.id, "oa", "oLeaver", profile={"nickname": "Leaver", "city": "Hangzhou"})

    await c.post(c.oa, event("oLeaver", "unsubscribe", at=T0 + 2))
    await c.settle()
    assert await run_worker() > 0
    [identity] = await table("identity", acme.id)
    assert identity["profile"] == {} and identity["erased_at"] is not None
    row = await contacts.get_contact(acme.id, contact)
    assert (row["display_name"], row["avatar_url"], row["phone"]) == ("", "", "")
    assert row["erased_at"] is not None
    page = await timeline.page(acme.id, contact)
    assert [e.kind for e in page.events] == ["unfollowed", "message_in", "followed"]  # counts kept
    assert page.events[1].payload == {"msg_type": "text", "erased": True}  # the words are gone
    assert page.events[2].payload == {"scene": "ad", "erased": True}  # the campaign stays
    assert "contact.erased_on_unfollow" in [a["action"] for a in await table("audit_log", acme.id)]
    # The stored callbacks lose the words too; what happened and when stays.
    raw = {r["msg_type"] or r["kind"]: r["payload"] for r in await InboundEvent.select(
        InboundEvent.kind, InboundEvent.msg_type, InboundEvent.payload).output(load_json=True)}
    assert "13812345678" not in str(raw)
    assert raw["text"]["erased"] is True and raw["text"]["fields"]["MsgType"] == "text"
    assert "Content" not in raw["text"]["fields"] and "FromUserName" not in raw["text"]["fields"]

    # A re-follow makes the identity active again; the old unfollow, re-run, does not erase it again.
    await c.post(c.oa, event("oLeaver", "subscribe", at=T0 + 3))
    await c.settle()
    assert await run_worker() > 0
    [identity] = await table("identity", acme.id)
    assert identity["erased_at"] is None
    before = await state(acme.id)
    assert await resolve_inbound({}, [r["id"] for r in await InboundEvent.select(InboundEvent.id)]) == 0
    assert await state(acme.id) == before


async def test_unfollow_erasure_can_be_turned_off(acme: TenantFixture, channels: Channels) -> None:
    await contacts.do_set_erase_on_unfollow(acme.id, False, tenants.Actor.cli())
    assert not (await contacts.get_settings(acme.id)).erase_on_unfollow
    c = channels
    await c.post(c.oa, text("oStay", "remember me", 9201, at=T0))
    await c.post(c.oa, event("oStay", "unsubscribe", at=T0 + 1))
    await c.settle()
    assert await run_worker() > 0
    [identity] = await table("identity", acme.id)
    assert identity["erased_at"] is None
    page = await timeline.page(acme.id, identity["contact"])
    assert [e.kind for e in page.events] == ["unfollowed", "message_in"]
    assert page.events[1].payload["Content"] == "remember me"
    assert "contacts.settings.updated" in [a["action"] for a in await table("audit_log", acme.id)]


async def test_erasure_keeps_the_contact_while_another_identity_is_active(acme: TenantFixture,
                                                                         channels: Channels) -> None:
    c = channels
    await c.post(c.oa, text("oBoth", "hello from the OA", 9301, at=T0))
    await c.post(c.mp, {"ToUserName": "gh", "FromUserName": "oBothMp", "CreateTime": T0 + 1, "MsgType": "text",
                        "Content": "hello from the MP", "MsgId": 9302})
    await c.settle()
    assert await run_worker() > 0
    await contacts.resolve(acme.id, "oa", "oBoth", unionid="uBoth")
    contact = await contacts.resolve_identity(acme.id, "mp", "oBothMp", unionid="uBoth")
    await Contact.update({Contact.display_name: "Both"}).where(Contact.id == contact)
    await c.post(c.oa, event("oBoth", "unsubscribe", at=T0 + 2))
    await c.settle()
    assert await run_worker() > 0
    row = await contacts.get_contact(acme.id, contact)
    assert row["display_name"] == "Both" and row["erased_at"] is None  # the MP identity is still active
    texts = {e.channel: e.payload for e in (await timeline.page(acme.id, contact, kinds=["message_in"])).events}
    assert "Content" not in texts["oa"] and texts["mp"]["Content"] == "hello from the MP"


async def test_tenants_never_share_contacts(acme: TenantFixture, globex: TenantFixture, client: Client,
                                            app: Any) -> None:
    await link_all(acme)
    # Globex links accounts of its own (other AppIDs and keys), and a customer with the same openid writes.
    g_oa = {**OA, "app_id": "wx1111111111111111", "token": "GlobexToken1"}
    await tenants.do_link_channel(tenants.Actor.cli(), globex.id, "oa", g_oa)
    acme_c = Channels(client, app)
    globex_oa = Sender("globex", "oa", g_oa["app_id"], g_oa["token"], g_oa["aes_key"], "safe")
    await acme_c.post(acme_c.oa, text("oSame", "acme please", 9401, at=T0))
    await acme_c.post(globex_oa, text("oSame", "globex please", 9401, at=T0))
    await acme_c.settle()
    assert await run_worker() > 0
    [a] = await table("identity", acme.id)
    [g] = await table("identity", globex.id)
    assert a["contact"] != g["contact"]
    [ae] = (await timeline.page(acme.id, a["contact"])).events
    [ge] = (await timeline.page(globex.id, g["contact"])).events
    assert (ae.payload["Content"], ge.payload["Content"]) == ("acme please", "globex please")
