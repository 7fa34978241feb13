"""`make run`'s demo, as the runner plays it, against a live web server (granian), the suite's simulator and
real workers: a fresh seed and the first scene end with one person known on the Official Account, the
Mini Program (its backend, played by the simulator, reports the login to Siyu's API) and WeCom, on one
timeline; the demo has what its features need (canned replies, both notice templates, a consent, reps
with WeCom UserIDs); seeding again duplicates nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from siyu import runner
from siyu import worker as worker_root
from siyu.core import db, effects
from siyu.core.redis import JOB_SERIALIZATION, arq_pool
from siyu.engagement import attribution, journeys
from siyu.inbox import canned, config
from siyu.tenants import services as tenants
from siyu.tenants.demo import DEMO_ACCOUNTS
from siyu.timeline import services as timeline
from siyu.wechat import consents
from tests.conftest import WebServer

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def run_jobs(quiet_rounds: int = 2) -> None:
    """Burst workers until the queue stays empty `quiet_rounds` times in a row: the web server queues a
    callback batch a moment after it answers WeChat."""
    quiet = 0
    while quiet < quiet_rounds:
        w = Worker(functions=worker_root.FUNCTIONS, redis_settings=worker_root.redis_settings(), burst=True,
                   **JOB_SERIALIZATION, handle_signals=False, poll_delay=0.05, max_jobs=10)
        await w.main()
        await w.close()
        assert w.jobs_failed == 0
        quiet = quiet + 1 if not w.jobs_complete else 0
        await asyncio.sleep(0.5)


# The seed's services and the jobs run here queue their jobs through an arq pool, as `make run` installs one
# around the seed. Each test installs its own: the one the web app's lifespan installed may have been taken
# away by another module's fixture (the engagement tests install and uninstall theirs).
@pytest.fixture(autouse=True)
async def effects_pool(pool: None) -> AsyncIterator[None]:
    arq = await arq_pool()
    effects.install(arq)
    yield
    await effects.flush()
    effects.uninstall(arq)
    await arq.aclose()


def person(simulator_base: str, kind: str, key: str) -> dict[str, str]:
    app_id = DEMO_ACCOUNTS[kind].get("corp_id") or DEMO_ACCOUNTS[kind]["app_id"]
    r = httpx.get(f"{simulator_base}/_sim/people", params={"app_id": app_id, "person": key}, timeout=10)
    r.raise_for_status()
    return dict(r.json()[0])


async def counts(tenant_id: int) -> dict[str, int]:
    tables = ("staff", "team", "channel_account", "api_key", "wechat_auto_reply", "inbox_canned_reply",
              "commerce_pay_merchant", "commerce_pay_key", "commerce_purchase", "audit_log")
    return {t: int((await db.fetchrow(f"SELECT count(*) AS n FROM {t} WHERE tenant = $1", tenant_id))["n"])  # noqa: S608
            for t in tables}


async def test_the_first_scene_shows_one_person_across_the_three_channels(
        app: Any, tmp_path: Path, web_server: WebServer, simulator_base: str) -> None:
    seeded = await runner.seed_demo_brand(tmp_path)
    assert seeded["created"] and seeded["api_key"].startswith("siyu_")
    runner.register_demo_apps(simulator_base, web_server.port, seeded["api_key"], keep_state=False)
    assert await runner.link_demo_pay(simulator_base, web_server.port, tmp_path)  # WeChat Pay: the simulator's
    assert await runner.play_first_scene(simulator_base) == []  # every push went through, every login reported
    await run_jobs()
    tenant = await tenants.get_tenant_by_slug(seeded["tenant_slug"])

    everywhere = await db.fetch(
        "SELECT contact FROM identity WHERE tenant = $1 GROUP BY contact "
        "HAVING array_agg(DISTINCT channel::text) @> ARRAY['oa', 'mp', 'wecom']", tenant.id)
    assert everywhere, "no contact holds Official Account, Mini Program and WeCom identities"
    # demo00001 is that person: one unionid on all three, and a timeline across all three.
    unionid = person(simulator_base, "oa", "demo00001")["unionid"]
    contact = await db.fetchrow("SELECT id, unionid, display_name FROM contact WHERE tenant = $1 AND unionid = $2 "
                                "AND merged_into IS NULL", tenant.id, unionid)
    assert contact is not None and contact["id"] in {r["contact"] for r in everywhere}
    assert contact["display_name"]  # named from WeCom, not "Unnamed contact"
    events = (await timeline.page(tenant.id, contact["id"], limit=100)).events
    seen = {(e.channel, e.kind) for e in events}
    assert {("oa", "followed"), ("oa", "message_in"), ("mp", "mp_login"), ("mp", "message_in"),
            ("wecom", "wecom_added"), ("wecom", "message_in")} <= seen, seen
    owners = await db.fetch("SELECT staff_userid FROM owner WHERE tenant = $1 AND contact = $2 AND removed_at IS NULL",
                            tenant.id, contact["id"])
    assert [o["staff_userid"] for o in owners] == ["wangfang"]  # the demo rep who added them

    # What the demo's features need. A consent for the Mini Program's subscription message:
    mp_openid = person(simulator_base, "mp", "demo00003")["openid"]
    assert await consents.remaining(tenant.id, "mp", mp_openid, runner.DEMO_MP_NOTICE) == 1
    settings = await config.get_settings(tenant.id)
    oa_notice, mp_notice = settings.notice_for("oa"), settings.notice_for("mp")
    assert oa_notice is not None and oa_notice.template_id == runner.DEMO_OA_NOTICE
    assert mp_notice is not None and mp_notice.template_id == runner.DEMO_MP_NOTICE
    rep = await db.fetchrow("SELECT id FROM staff WHERE tenant = $1 AND email = 'agent1@demo.siyu.local'", tenant.id)
    assert {r["shortcut"] for r in await canned.list_canned(tenant.id, int(rep["id"]))} == {
        r["shortcut"] for r in runner.DEMO_CANNED}
    userids = await db.fetch("SELECT wecom_userid FROM inbox_agent WHERE tenant = $1 AND wecom_userid <> ''", tenant.id)
    assert sorted(r["wecom_userid"] for r in userids) == sorted(runner.DEMO_REPS.values())

    # The demo contacts show orders: demo00001's two (items from the backend, paid through WeChat Pay) on the
    # same contact, demo00007's refunded, and demo00008, whom Siyu had never seen, known by their openid now.
    bought = await db.fetch(
        "SELECT p.order_id, p.contact, p.sources, p.flags, p.items, p.amount_fen, p.refunded_fen, p.skus "
        "FROM commerce_purchase p WHERE p.tenant = $1 ORDER BY p.id", tenant.id)
    assert len(bought) == 6 and all(sorted(p["sources"]) == ["api", "pay"] and p["flags"] == [] for p in bought)
    mine = [p for p in bought if p["contact"] == contact["id"]]
    assert len(mine) == 2 and {"LUM-CANDLE-FIGUE", "LUM-DIFF-CEDRE", "LUM-DIFF-REFILL"} == {
        s for p in mine for s in p["skus"]}
    refunded = [p for p in bought if p["refunded_fen"]]
    assert len(refunded) == 1 and refunded[0]["refunded_fen"] == refunded[0]["amount_fen"]
    assert ("mp", "purchase") in {(e.channel, e.kind) for e in (await timeline.page(tenant.id, contact["id"],
                                                                                    limit=100)).events}
    stranger = person(simulator_base, "mp", "demo00008")["openid"]
    assert await db.fetchrow("SELECT 1 FROM identity i JOIN commerce_purchase p ON p.identity = i.id "
                             "WHERE i.tenant = $1 AND i.external_id = $2", tenant.id, stranger)
    products = await db.fetch("SELECT sku, name FROM commerce_product WHERE tenant = $1", tenant.id)
    assert len(products) == 8 and all(p["name"] for p in products)

    # The scene's orders started the post-purchase journey, whose results count them (make run's demo shows
    # journey results after its first scene): every order is an entry, its thanks settled at once — sent on a
    # channel the buyer has open, held out, or skipped with its reason (demo00008 wrote nowhere).
    care = next(j for j in await journeys.list_journeys(tenant.id) if j.name == "下单后关怀")
    entered = (await attribution.entered(tenant.id, [care.id]))[care.id]
    thanks = (await attribution.figures(tenant.id, "journey", care.id))["thanks"]
    assert entered == len(bought) and thanks.targeted == entered and thanks.sent >= 1, thanks
    assert thanks.sent + thanks.held_out + thanks.by_state["skipped"] == entered, thanks

    # A second `make run`: nothing is created twice, and the simulator's backend keeps the same key.
    before = await counts(tenant.id)
    again = await runner.seed_demo_brand(tmp_path)
    assert not again["created"] and again["api_key"] == seeded["api_key"]
    assert not await runner.link_demo_pay(simulator_base, web_server.port, tmp_path)  # linked already
    assert await counts(tenant.id) == before and before["api_key"] == 1 and before["commerce_pay_key"] == 1
    assert (tmp_path / "demo-api-key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "demo-pay-apiv3-key").stat().st_mode & 0o777 == 0o600


async def test_a_revoked_demo_key_is_replaced_once(app: Any, tmp_path: Path) -> None:
    seeded = await runner.seed_demo_brand(tmp_path)
    tenant = await tenants.get_tenant_by_slug(seeded["tenant_slug"])
    key_id = (await tenants.list_api_keys(tenant.id))[0]["id"]
    await tenants.do_revoke_api_key(tenants.Actor.cli(), tenant.id, key_id)
    renewed = await runner.seed_demo_brand(tmp_path)
    assert renewed["api_key"] != seeded["api_key"]
    assert (tmp_path / "demo-api-key").read_text().strip() == renewed["api_key"]
    assert (await runner.seed_demo_brand(tmp_path))["api_key"] == renewed["api_key"]
    assert len(await tenants.list_api_keys(tenant.id)) == 2
