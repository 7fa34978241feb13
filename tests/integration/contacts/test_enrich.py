"""Profile enrichment against the WeChat simulator: the inbound job queues `contacts.enrich_identity`, which
asks `user/info` / `externalcontact/get` and keeps the answer: a unionid converges identities, OA language
and subscribe scene land on the identity, WeCom follow users become rep owners. WeChat's errcodes are typed
outcomes (try later, or note and stop); a second run changes nothing but when WeChat was asked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from arq.worker import Retry, Worker

from siyu import worker as worker_root
from siyu.contacts import services as contacts
from siyu.contacts.jobs import enrich_identity
from siyu.contacts.tables import Contact
from siyu.core import db
from siyu.core.redis import JOB_SERIALIZATION, connect
from siyu.inbox import actions as inbox_actions
from siyu.tenants import services as tenants
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import MP, OA, WECOM, Client, Simulator, TenantFixture
from tests.integration.contacts.rows import live_contacts, state, table
from tests.wechat_payloads import Sender

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

USER_INFO = "wechat-api/cgi-bin/user/info"
EXTERNAL_GET = "wecom-api/cgi-bin/externalcontact/get"


async def run_worker() -> list[str]:
    """Burst workers until the queue stays empty; every job must succeed at its first try. Returns the ids
    of the enrichment jobs that ran (other domains' jobs run too, uncounted)."""
    redis = connect()
    try:
        before = set(await redis.keys("arq:result:contacts.enrich:*"))
        while True:
            w = Worker(functions=worker_root.FUNCTIONS, redis_settings=worker_root.redis_settings(), burst=True,
                       **JOB_SERIALIZATION, handle_signals=False, poll_delay=0.05, max_jobs=10)
            await w.main()
            await w.close()
            assert w.jobs_failed == 0 and w.jobs_retried == 0
            if not w.jobs_complete:
                break
        ran = set(await redis.keys("arq:result:contacts.enrich:*")) - before
        return sorted(k.decode().removeprefix("arq:result:") for k in ran)
    finally:
        await redis.aclose()


class World:
    """Acme's three accounts, linked in Siyu and registered in the simulator under one Open Platform
    account (so one person has one unionid), and the gateway to post what the simulator pushes."""

    def __init__(self, client: Client, app: Any, sim: Simulator) -> None:
        self.client, self.app, self.sim = client, app, sim
        self.oa = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")
        self.wecom = Sender("acme", "wecom", WECOM["corp_id"], WECOM["token"], WECOM["aes_key"])

    async def deliver(self, sender: Sender, pushed: dict[str, Any]) -> None:
        """What the simulated customer did, delivered to Siyu's gateway as WeChat would."""
        cb = sender.callback(pushed["message"])
        r = await self.client.post(cb.url, content=cb.body)
        assert r.status_code == 200, r.text
        await self.app.state.ingestor.settle()

    async def oa_push(self, person: str, action: str, **fields: Any) -> dict[str, Any]:
        pushed = self.sim.push(OA["app_id"], person, action, **fields)
        await self.deliver(self.oa, pushed)
        return dict(pushed)

    async def wecom_push(self, person: str, action: str, **fields: Any) -> dict[str, Any]:
        pushed = self.sim.push(WECOM["corp_id"], person, action, **fields)
        await self.deliver(self.wecom, pushed)
        return dict(pushed)

    def calls(self, endpoint: str) -> int:
        return int(self.sim.stats()["calls"].get(endpoint, 0))


@pytest.fixture
async def world(acme: TenantFixture, client: Client, app: Any, sim: Simulator) -> World:
    for kind, data in (("oa", OA), ("mp", MP), ("wecom", WECOM)):
        await tenants.do_link_channel(tenants.Actor.cli(), acme.id, kind, data)
    sim.register("oa", OA["app_id"], OA["app_secret"], token=OA["token"], aes_key=OA["aes_key"],
                 open_platform="acme-open")
    sim.register("mp", MP["app_id"], MP["app_secret"], open_platform="acme-open")
    sim.register("wecom", WECOM["corp_id"], WECOM["secret"], token=WECOM["token"], aes_key=WECOM["aes_key"],
                 open_platform="acme-open")
    return World(client, app, sim)


@pytest.fixture
async def runtime(redis: Any) -> Any:
    rt = WeChatRuntime(redis)
    yield rt
    await rt.close()


@pytest.fixture
def ctx(runtime: Any) -> dict[str, Any]:
    """A job's context as the worker gives it (its runtime made at startup), on the job's first try."""
    return {"wechat": runtime, "job_try": 1}


async def identity(tenant_id: int, channel: str, external_id: str) -> dict[str, Any]:
    [found] = [i for i in await table("identity", tenant_id) if (i["channel"], i["external_id"]) == (channel, external_id)]
    return found


def without_enriched_at(snapshot: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {**snapshot, "identity": [{k: v for k, v in i.items() if k != "enriched_at"} for i in snapshot["identity"]]}


# --- Official Account -------------------------------------------------------------------------------------

async def test_an_oa_follow_is_enriched_and_its_unionid_joins_the_mini_program_contact(
        acme: TenantFixture, world: World, ctx: dict[str, Any]) -> None:
    # Alice logged in to the Mini Program first: Siyu knows her MP openid and unionid.
    login = world.sim.push(MP["app_id"], "alice", "mp_login")
    shopper = await contacts.resolve(acme.id, "mp", login["openid"], unionid=login["unionid"],
                                     at=datetime.now(UTC))
    # Then she follows the OA through a QR code; the callback carries no unionid.
    followed = await world.oa_push("alice", "follow", scene="spring_fair", language="en")
    assert len(await run_worker()) == 1  # the enrichment the contacts job queued
    assert world.calls(USER_INFO) == 1

    fan = await identity(acme.id, "oa", followed["openid"])
    assert fan["unionid"] == login["unionid"] == followed["unionid"]
    [live] = await live_contacts(acme.id)
    assert live["id"] == shopper.contact_id == fan["contact"]  # one contact, the older one survived
    [merge] = await table("contact_merge", acme.id)
    assert merge["reason"] == "unionid" and merge["survivor"] == shopper.contact_id
    assert fan["profile"]["language"] == "en"
    assert fan["profile"]["subscribe"] is True
    assert fan["profile"]["subscribe_scene"] == "ADD_SCENE_QR_CODE"
    assert fan["profile"]["qr_scene_str"] == "spring_fair"
    assert fan["profile"]["subscribe_time"] > 0 and "unionid" not in fan["profile"]
    assert fan["enriched_at"] is not None
    assert fan["last_seen_at"] == fan["first_seen_at"]  # the API's answer is not a sighting
    assert live["language"] == "en"  # the contact's empty language was filled

    # A message within the day asks nothing; the job run again changes nothing but when WeChat was asked.
    before = await state(acme.id)
    await world.oa_push("alice", "text", text="hi")
    assert await run_worker() == []
    assert world.calls(USER_INFO) == 1
    after_message = await state(acme.id)
    assert await enrich_identity(ctx, acme.id, fan["id"]) == "enriched"
    assert world.calls(USER_INFO) == 2
    again = await state(acme.id)
    assert without_enriched_at(again)["identity"] == without_enriched_at(after_message)["identity"]
    assert {k: v for k, v in again.items() if k != "identity"} == {
        k: v for k, v in after_message.items() if k != "identity"}
    assert (await identity(acme.id, "oa", followed["openid"]))["enriched_at"] > fan["enriched_at"]
    assert len(before["timeline_event"]) + 1 == len(again["timeline_event"])  # the message, nothing else


async def test_richer_contact_fields_are_kept_and_a_refollow_is_read_again(acme: TenantFixture, world: World, ctx: dict[str, Any]) -> None:
    followed = await world.oa_push("bob", "follow", language="zh_TW")
    assert len(await run_worker()) == 1
    fan = await identity(acme.id, "oa", followed["openid"])
    await Contact.update({Contact.language: "en"}).where(Contact.id == fan["contact"])  # an agent's choice
    assert await enrich_identity(ctx, acme.id, fan["id"]) == "enriched"
    assert (await contacts.get_contact(acme.id, fan["contact"]))["language"] == "en"
    assert (await identity(acme.id, "oa", followed["openid"]))["profile"]["language"] == "zh_TW"

    # Unfollow (erased), follow again the same hour: the new follow is enriched again.
    await world.oa_push("bob", "unfollow")
    assert await run_worker() == []  # no enrichment for an unfollow
    world.sim.clock(advance_seconds=5)  # a human's pause: the follow's CreateTime is after the last answer
    await world.oa_push("bob", "follow", subscribe_scene="ADD_SCENE_PROFILE_CARD")
    calls = world.calls(USER_INFO)
    assert len(await run_worker()) == 1
    assert world.calls(USER_INFO) == calls + 1
    fan = await identity(acme.id, "oa", followed["openid"])
    assert fan["erased_at"] is None and fan["profile"]["subscribe_scene"] == "ADD_SCENE_PROFILE_CARD"


async def test_an_erased_identity_is_not_enriched(acme: TenantFixture, world: World, ctx: dict[str, Any]) -> None:
    followed = await world.oa_push("carol", "follow", language="en")
    assert len(await run_worker()) == 1
    await world.oa_push("carol", "unfollow")
    assert await run_worker() == []  # an unfollow queues no enrichment
    fan = await identity(acme.id, "oa", followed["openid"])
    assert fan["erased_at"] is not None and fan["profile"] == {}
    # An enrichment queued before the unfollow and run after it: WeChat is not asked, nothing comes back.
    before, calls = await state(acme.id), world.calls(USER_INFO)
    assert await enrich_identity(ctx, acme.id, fan["id"]) == "erased"
    assert world.calls(USER_INFO) == calls
    assert await state(acme.id) == before


async def test_mp_identities_and_unlinked_accounts_are_skipped(acme: TenantFixture, globex: TenantFixture,
                                                                sim: Simulator, ctx: dict[str, Any]) -> None:
    shopper = await contacts.resolve(acme.id, "mp", "oShopper", at=datetime.now(UTC))
    assert await enrich_identity(ctx, acme.id, shopper.identity_id) == "not_enriched"
    fan = await contacts.resolve(globex.id, "oa", "oNoAccount", at=datetime.now(UTC))
    assert await enrich_identity(ctx, globex.id, fan.identity_id) == "not_linked"
    # Another tenant's identity is missing, not enriched.
    assert await enrich_identity(ctx, acme.id, fan.identity_id) == "missing"
    assert (await identity(globex.id, "oa", "oNoAccount"))["enriched_at"] is None
    assert sim.stats()["calls"].get(USER_INFO) is None


# --- WeCom -----------------------------------------------------------------------------------------------

TAGS = [{"group_name": "客户等级", "tag_name": "VIP", "type": 1, "tag_id": "etVip"},
        {"group_name": "", "tag_name": "likes tea", "type": 2}]


async def test_wecom_follow_users_become_owners_with_remark_description_tags_and_since(
        acme: TenantFixture, world: World, sim: Simulator, ctx: dict[str, Any]) -> None:
    added = await world.wecom_push("dave", "add_contact", user_id="zhangsan", state="fair", remark="Dave (fair)",
                                   description="asked about the spring range", tags=TAGS, nickname="Dave W")
    assert len(await run_worker()) == 1
    assert world.calls(EXTERNAL_GET) == 1
    customer = await identity(acme.id, "wecom", added["external_userid"])
    assert customer["unionid"] == added["unionid"]
    assert customer["profile"]["name"] == "Dave W" and customer["profile"]["type"] == 1
    contact = await contacts.get_contact(acme.id, customer["contact"])
    assert contact["display_name"] == "Dave W" and contact["avatar_url"].startswith("http")
    assert contact["unionid"] == added["unionid"]
    [owner] = await contacts.owners_of(acme.id, customer["contact"], include_removed=True)
    relation = sim._get("/_sim/people", app_id=WECOM["corp_id"], person="dave")[0]["follow_users"]["zhangsan"]
    assert owner["staff_userid"] == "zhangsan" and owner["removed_at"] is None
    assert (owner["remark"], owner["description"], owner["state"]) == (
        "Dave (fair)", "asked about the spring range", "fair")
    assert owner["tags"] == [{"group": "客户等级", "name": "VIP", "type": 1, "id": "etVip"},
                             {"group": "", "name": "likes tea", "type": 2}]
    assert owner["added_at"] == datetime.fromtimestamp(relation["createtime"], UTC)

    # lisi adds Dave too, but that callback never reached Siyu; then zhangsan edits his remark.
    sim.push(WECOM["corp_id"], "dave", "add_contact", user_id="lisi", remark="from the shop")
    await world.wecom_push("dave", "edit_contact", user_id="zhangsan", remark="Dave, VIP", tags=TAGS[:1])
    assert len(await run_worker()) == 1  # the edit is read again
    owners = {o["staff_userid"]: o for o in await contacts.owners_of(acme.id, customer["contact"])}
    assert set(owners) == {"zhangsan", "lisi"}
    assert owners["zhangsan"]["remark"] == "Dave, VIP" and len(owners["zhangsan"]["tags"]) == 1
    assert owners["lisi"]["remark"] == "from the shop"

    # Running it again changes nothing.
    before = await state(acme.id)
    assert await enrich_identity(ctx, acme.id, customer["id"]) == "enriched"
    assert without_enriched_at(await state(acme.id)) == without_enriched_at(before)

    # Dave deletes lisi and that callback is lost too: the next read marks lisi removed, zhangsan stays.
    sim.push(WECOM["corp_id"], "dave", "del_follow_user", user_id="lisi")
    await world.wecom_push("dave", "edit_contact", user_id="zhangsan", description="prefers WeChat calls")
    assert len(await run_worker()) == 1
    owners = {o["staff_userid"]: o for o in await contacts.owners_of(acme.id, customer["contact"], include_removed=True)}
    assert owners["lisi"]["removed_at"] is not None and owners["zhangsan"]["removed_at"] is None
    assert owners["zhangsan"]["description"] == "prefers WeChat calls"
    # Removed stays removed on the next run.
    removed_at = owners["lisi"]["removed_at"]
    assert await enrich_identity(ctx, acme.id, customer["id"]) == "enriched"
    [lisi] = [o for o in await contacts.owners_of(acme.id, customer["contact"], include_removed=True)
              if o["staff_userid"] == "lisi"]
    assert lisi["removed_at"] == removed_at


async def test_a_wecom_unionid_joins_the_oa_contact_and_keeps_its_name(acme: TenantFixture, world: World) -> None:
    followed = await world.oa_push("erin", "follow")
    assert len(await run_worker()) == 1
    fan = await identity(acme.id, "oa", followed["openid"])
    await Contact.update({Contact.display_name: "Erin (VIP)"}).where(Contact.id == fan["contact"])
    added = await world.wecom_push("erin", "add_contact", user_id="lisi", nickname="erin_wx")
    assert len(await run_worker()) == 1
    [live] = await live_contacts(acme.id)
    customer = await identity(acme.id, "wecom", added["external_userid"])
    assert customer["contact"] == live["id"] == fan["contact"]
    assert live["display_name"] == "Erin (VIP)"  # richer: kept
    assert [o["staff_userid"] for o in await contacts.owners_of(acme.id, live["id"])] == ["lisi"]
    [merge] = await table("contact_merge", acme.id)
    assert merge["reason"] == "unionid"


# --- WeChat's errcodes -----------------------------------------------------------------------------------

async def test_busy_and_rate_limits_are_retried_later(acme: TenantFixture, world: World, runtime: Any) -> None:
    openid = world.sim.push(OA["app_id"], "fay", "follow")["openid"]
    fan = await contacts.resolve(acme.id, "oa", openid, at=datetime.now(UTC))
    ctx: dict[str, Any] = {"wechat": runtime, "job_try": 2}
    await (await runtime.client(acme.id, "oa")).access_token()  # faults below hit user/info, not the token
    world.sim.faults(OA["app_id"], -1, -1, -1)  # busy on the call and both of the client's own retries
    with pytest.raises(Retry) as busy:
        await enrich_identity(ctx, acme.id, fan.identity_id)
    assert busy.value.defer_score == 20_000  # 5 s × 2^try, in ms
    world.sim.faults(OA["app_id"], 45011)
    with pytest.raises(Retry) as limited:
        await enrich_identity(ctx, acme.id, fan.identity_id)
    assert limited.value.defer_score == 60_000
    world.sim.faults(OA["app_id"], 45009)
    with pytest.raises(Retry) as daily:
        await enrich_identity(ctx, acme.id, fan.identity_id)
    assert daily.value.defer_score is not None and daily.value.defer_score >= 60_000  # until Beijing midnight
    stored = await identity(acme.id, "oa", openid)
    assert stored["enriched_at"] is None and stored["profile"] == {}
    # WeChat answers again: the retry succeeds.
    assert await enrich_identity(ctx, acme.id, fan.identity_id) == "enriched"
    assert (await identity(acme.id, "oa", openid))["profile"]["subscribe"] is True


async def test_an_unknown_person_is_noted_once_and_nothing_else_is_written(acme: TenantFixture, world: World,
                                                                             runtime: Any) -> None:
    followed = await world.oa_push("gus", "follow", language="en")
    assert len(await run_worker()) == 1
    fan = await identity(acme.id, "oa", followed["openid"])
    before = await state(acme.id)
    ctx: dict[str, Any] = {"wechat": runtime, "job_try": 1}
    await (await runtime.client(acme.id, "oa")).access_token()
    world.sim.faults(OA["app_id"], 40003)
    assert await enrich_identity(ctx, acme.id, fan["id"]) == "refused:40003"  # no Retry
    after = await state(acme.id)
    noted = await identity(acme.id, "oa", followed["openid"])
    assert noted["profile"] == {**fan["profile"], "enrich_error": {"errcode": 40003, "reason": "unknown_openid"}}
    assert noted["enriched_at"] > fan["enriched_at"]  # not asked again on every event
    assert {k: v for k, v in after.items() if k != "identity"} == {k: v for k, v in before.items() if k != "identity"}

    # An openid WeChat never issued: refused, nothing but the note.
    ghost = await contacts.resolve(acme.id, "oa", "oGhost", at=datetime.now(UTC))
    assert await enrich_identity(ctx, acme.id, ghost.identity_id) == "refused:40003"
    assert (await identity(acme.id, "oa", "oGhost"))["profile"] == {
        "enrich_error": {"errcode": 40003, "reason": "unknown_openid"}}
    assert (await contacts.get_contact(acme.id, ghost.contact_id))["language"] == ""

    # A later good answer clears the note.
    assert await enrich_identity(ctx, acme.id, fan["id"]) == "enriched"
    assert "enrich_error" not in (await identity(acme.id, "oa", followed["openid"]))["profile"]


async def test_a_customer_no_rep_has_keeps_its_owners_and_is_not_retried(acme: TenantFixture, world: World,
                                                                        runtime: Any) -> None:
    added = await world.wecom_push("hal", "add_contact", user_id="zhangsan", remark="Hal")
    assert len(await run_worker()) == 1
    customer = await identity(acme.id, "wecom", added["external_userid"])
    owners = await table("owner", acme.id)
    ctx: dict[str, Any] = {"wechat": runtime, "job_try": 1}
    await (await runtime.client(acme.id, "wecom")).access_token()
    world.sim.faults(WECOM["corp_id"], 84061)
    assert await enrich_identity(ctx, acme.id, customer["id"]) == "refused:84061"
    assert await table("owner", acme.id) == owners
    assert (await identity(acme.id, "wecom", added["external_userid"]))["profile"]["enrich_error"]["reason"] == (
        "not_an_external_contact")
    # A configuration problem is logged, nothing is written, and it is not retried either.
    before = await state(acme.id)
    world.sim.faults(WECOM["corp_id"], 48001)
    assert await enrich_identity(ctx, acme.id, customer["id"]) == "config_problem"
    assert await state(acme.id) == before


async def test_enrichment_queued_through_the_worker_is_deduplicated(acme: TenantFixture, world: World) -> None:
    """The job id keeps one enrichment per follow (and per hour of other events) however often the inbound
    job runs: the batch re-run by the sweeper queues nothing new."""
    await world.oa_push("ivy", "follow")
    await world.oa_push("ivy", "text", text="one")
    await world.oa_push("ivy", "text", text="two")
    assert len(await run_worker()) == 1  # one enrichment for the three batches
    assert world.calls(USER_INFO) == 1
    ids = [int(r["id"]) for r in await db.fetch("SELECT id FROM wechat_inbound_event ORDER BY id")]
    from siyu.core.redis import arq_pool

    pool = await arq_pool()
    try:
        await pool.enqueue_job("contacts.resolve_inbound", ids, _job_id="again")
    finally:
        await pool.aclose()
    assert await run_worker() == []
    assert world.calls(USER_INFO) == 1


# --- the contact page ------------------------------------------------------------------------------------

async def test_the_contact_page_shows_what_wechat_told_in_both_languages(acme: TenantFixture, world: World,
                                                                        acme_agent: Client) -> None:
    followed = await world.oa_push("jo", "follow", scene="spring_fair", language="en")
    await world.wecom_push("jo", "add_contact", user_id="zhangsan", remark="Jo from the fair",
                           description="wants the tea set", tags=TAGS)
    assert len(await run_worker()) == 2
    [live] = await live_contacts(acme.id)
    assert (await identity(acme.id, "oa", followed["openid"]))["contact"] == live["id"]

    # The rep who added Jo on WeCom (their WeCom UserID on their inbox profile) may see Jo's page.
    await inbox_actions.do_set_presence(acme.id, acme.agent_id, "offline", tenants.Actor.cli(), wecom_userid="zhangsan")
    en = await acme_agent.get(f"/contacts/{live['id']}")
    assert en.status_code == 200
    for shown in ("Subscribe scene", "Scanned a QR code", "spring_fair", "Profile from WeChat",
                  "Jo from the fair", "Description", "wants the tea set", "客户等级: VIP", "likes tea", "since"):
        assert shown in en.text, shown
    zh = await acme_agent.get(f"/contacts/{live['id']}", headers={"Accept-Language": "zh-CN"})
    for shown in ("关注来源", "扫码", "微信资料更新于", "描述", "wants the tea set", "客户等级: VIP"):
        assert shown in zh.text, shown
    assert "Subscribe scene" not in zh.text and "Profile from WeChat" not in zh.text
