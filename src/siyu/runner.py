"""`make run`: start everything a developer needs, keep it running, and stop all of it on Ctrl-C.

Embedded PostgreSQL and Valkey keep their data under SIYU_DATA_DIR unless DATABASE_URL / REDIS_URL are
set; the WeChat simulator plays WeChat's API; web (granian) and worker (arq) run as child processes. A
child that dies is started again (see `siyu.core.processes.Supervisor`), and says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from siyu.commerce.demo import catalog_item
from siyu.core.processes import OWN_GROUP, Supervisor, stop_processes, wait_http
from siyu.core.settings import get_settings
from siyu.tenants.demo import DEMO_ACCOUNTS, DEMO_SLUG


def say(message: str) -> None:
    print(f"[siyu] {message}", flush=True)


DEMO_REPS = {"agent1@demo.siyu.local": "wangfang", "agent2@demo.siyu.local": "liwei"}  # email → WeCom UserID
# The demo's notice templates: the Official Account's template message (no consent needed) and the Mini
# Program's subscription message (one send per consent the customer gives).
DEMO_OA_NOTICE = "DemoOaServiceNotice2026"
DEMO_MP_NOTICE = "DemoMpSubscribeNotice2026"


def register_demo_apps(sim_base: str, web_port: int, api_key: str, keep_state: bool = True) -> None:
    """The demo brand's three accounts, with their callback Token, EncodingAESKey and message mode, pushing
    to the local web server; OA, MP and WeCom share an Open Platform account, so a customer has one unionid
    on all three. The simulator also plays the brand's Mini Program backend, which reports each login to
    Siyu's API with the demo's key; the WeCom sales reps are the demo's reps. `keep_state`: the simulator
    keeps the customers it already has (a second `make run`); a new demo brand starts a new WeChat. The
    backend reports each Mini Program order to Siyu's purchases API too (`link_demo_pay` links WeChat Pay)."""
    for kind, data in DEMO_ACCOUNTS.items():
        body: dict[str, Any] = {
            "kind": kind, "app_id": data.get("corp_id") or data["app_id"],
            "secret": data.get("secret") or data["app_secret"], "token": data["token"], "aes_key": data["aes_key"],
            "message_mode": data.get("mode") or "safe", "push_format": data.get("push_format") or "xml",
            "original_id": data.get("original_id", ""), "agent_id": data.get("agent_id", ""),
            "callback_url": f"http://127.0.0.1:{web_port}/wechat/{DEMO_SLUG}/{kind}", "open_platform": "demo",
            "keep_state": keep_state}
        if kind == "mp":
            body["backend"] = {"login_url": f"http://127.0.0.1:{web_port}/api/v1/mp/login", "api_key": api_key,
                               "purchases_url": f"http://127.0.0.1:{web_port}/api/v1/purchases"}
        if kind == "wecom":
            body["follow_users"] = list(DEMO_REPS.values())
        httpx.post(f"{sim_base}/_sim/apps", json=body, timeout=5, trust_env=False).raise_for_status()


async def link_demo_pay(sim_base: str, web_port: int, data_dir: Path) -> bool:
    """The demo brand's WeChat Pay merchant is the simulator's: the simulator learns the merchant (its APIv3
    key, kept 0600 under the data dir, the notify_url on the local web server, what the brand sells), and
    Siyu links it with the simulator's public key and id, as `siyu tenant link-pay` would. Every `make run`
    does it (the simulator may have lost its memory); Siyu's side changes only when something differs.
    Returns whether Siyu's link changed."""
    from siyu.commerce import demo as commerce_demo
    from siyu.tenants import services as tenants

    apiv3 = commerce_demo.apiv3_key(data_dir)
    mp_app = DEMO_ACCOUNTS["mp"]["app_id"]
    async with httpx.AsyncClient(base_url=sim_base, trust_env=False, timeout=10) as http:
        r = await http.post("/_sim/pay/merchants", json={
            "mchid": commerce_demo.DEMO_MCHID, "app_id": mp_app, "apiv3_key": apiv3,
            "notify_url": f"http://127.0.0.1:{web_port}/wechat/{DEMO_SLUG}/pay", "catalog": commerce_demo.DEMO_CATALOG})
        r.raise_for_status()
        key = (await http.get("/_sim/pay/key")).json()
    tenant = await tenants.get_tenant_by_slug(DEMO_SLUG)
    return await commerce_demo.link_demo_merchant(tenant.id, DEMO_SLUG, mp_app, key["public_key"],
                                                  key["public_key_id"], apiv3)


DEMO_REPLIES = [
    {"trigger": "welcome", "reply": "欢迎关注 Maison Lumière！回复“价格”查看价目表，回复“门店”查看上海门店地址。"},
    {"trigger": "welcome", "scene": "spring_fair", "reply": "感谢在春季展会关注我们！凭此消息到店领取小礼品。"},
    {"trigger": "keyword", "match_type": "contains", "keyword": "价格", "reply": "2026 春季价目表：https://demo.siyu.local/prices"},
    {"trigger": "keyword", "match_type": "contains", "keyword": "price", "reply": "Our spring price list: https://demo.siyu.local/prices"},
    {"trigger": "keyword", "match_type": "exact", "keyword": "门店", "reply": "上海静安区南京西路 1266 号，10:00–22:00。"},
    {"trigger": "click", "menu_key": "MENU_CONTACT", "reply": "客服时间 9:00–21:00，直接留言，销售顾问会尽快回复。"},
]

# The brand's canned replies, shared by every rep (type /shortcut in the composer).
DEMO_CANNED = [
    {"shortcut": "hello", "title": "问候 Greeting", "body": "您好，我是 Maison Lumière 的销售顾问，很高兴为您服务！"},
    {"shortcut": "price", "title": "价目表 Price list",
     "body": "这是 2026 春季价目表：https://demo.siyu.local/prices 。看中哪一款，我可以帮您预留。"},
    {"shortcut": "store", "title": "门店 Store",
     "body": "我们的门店在上海静安区南京西路 1266 号，每天 10:00–22:00 营业，欢迎到店试戴。"},
    {"shortcut": "shipping", "title": "发货 Shipping",
     "body": "小程序订单会在 48 小时内从上海仓发出，发货后您会收到顺丰单号。"},
    {"shortcut": "thanks", "title": "感谢 Thanks", "body": "感谢您的耐心等待，还有什么可以帮您的吗？"},
    {"shortcut": "hi", "title": "Greeting (English)", "body": "Hello! I'm your Maison Lumière advisor — how can I help?"},
]


async def _seed_demo_replies(slug: str) -> None:
    from siyu.tenants import services as tenants
    from siyu.wechat import services as wechat

    tenant = await tenants.get_tenant_by_slug(slug)
    for rule in DEMO_REPLIES:
        await wechat.do_create_rule(tenants.Actor(None, "demo-seed"), tenant.id, rule)


async def _seed_demo_inbox(slug: str) -> None:
    """The demo's sales reps are online (with their WeCom UserIDs, so the customers they added come to
    them), the menu's "contact us" button asks for a person, so the inbox fills as the scene plays; the
    brand has canned replies, and a notice template for each closed-window alternative."""
    from siyu.core import db
    from siyu.inbox import actions, canned, config
    from siyu.inbox.conversations import viewer_for
    from siyu.tenants import services as tenants

    tenant = await tenants.get_tenant_by_slug(slug)
    actor = tenants.Actor(None, "demo-seed")
    for email, userid in DEMO_REPS.items():
        row = await db.fetchrow("SELECT id FROM staff WHERE email = $1", email)
        await actions.do_set_presence(tenant.id, int(row["id"]), "online", actor, wecom_userid=userid)
    await config.do_update_settings(tenant.id, {
        "handoff_keywords": ", ".join(config.DEFAULT_KEYWORDS), "handoff_menu_keys": "MENU_HUMAN",
        "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30", "notify_customer": "1",
        "notice_template_id": DEMO_OA_NOTICE, "notice_text_key": "thing1", "notice_time_key": "time2",
        "mp_notice_template_id": DEMO_MP_NOTICE, "mp_notice_text_key": "thing1", "mp_notice_time_key": "time2"},
        actor)
    admin = await db.fetchrow("SELECT id FROM staff WHERE email = $1", "admin@demo.siyu.local")
    viewer = await viewer_for(tenant.id, int(admin["id"]))
    for reply in DEMO_CANNED:
        await canned.do_create_canned(tenant.id, viewer, {**reply, "scope": "tenant"}, actor)


# The demo's re-engagement: a post-purchase journey (thanks at once, a care tip a few minutes later, a
# reminder when the product runs out) and a win-back for customers who have not bought for 60 days, both
# with a holdout so their results compare like with like. Quiet hours are off in the demo, so the scene's
# messages go whatever the hour of `make run`.
DEMO_JOURNEYS: list[dict[str, Any]] = [
    {"name": "下单后关怀", "status": "active", "holdout_percent": 10, "trigger": {"kind": "purchase"},
     "steps": [{"id": "thanks", "send": {"purpose": "service", "text": "感谢您的订单！我们会尽快为您发货。"}},
               {"id": "w1", "wait": "PT3M"},
               {"id": "tip", "send": {"purpose": "marketing", "text": "使用小贴士：新包首次使用前请先用软布擦拭，避免阳光直晒。"}},
               {"id": "w2", "wait": "replenishment"},
               {"id": "again", "send": {"purpose": "marketing", "text": "您上次购买的商品快用完了吗？在小程序里一键回购。"}}]},
    {"name": "老客唤回", "status": "active", "holdout_percent": 20,
     "trigger": {"kind": "inactivity", "days": 60, "since": "purchase"},
     "steps": [{"id": "miss", "send": {"purpose": "marketing", "text": "好久不见！送您一张 50 元回归券，7 天内有效。"}},
               {"id": "w1", "wait": "P6D"},
               {"id": "last", "send": {"purpose": "marketing", "text": "您的 50 元回归券明天到期，别错过。"}}]},
]


async def _seed_demo_engagement(slug: str) -> None:
    from siyu.engagement import journeys, rules
    from siyu.tenants import services as tenants

    tenant = await tenants.get_tenant_by_slug(slug)
    actor = tenants.Actor(None, "demo-seed")
    await rules.do_update_settings(tenant.id, {"cap_count": "3", "cap_days": "7", "quiet_start": "00:00",
                                               "quiet_end": "00:00", "conversion_days": "7"}, actor)
    for journey in DEMO_JOURNEYS:
        await journeys.do_create_journey(tenant.id, journey, actor)


async def seed_demo_brand(data_dir: Path) -> dict[str, Any]:
    """The demo brand and what its features need: people, accounts, auto-replies, reps with WeCom UserIDs,
    canned replies, notice templates and the Mini Program backend's API key. Only a new brand is filled,
    so a second `make run` duplicates nothing (and keeps what the user changed). Its jobs and live updates
    go through the process's arq pool (`_seed_with_effects` installs one for `make run`)."""
    from siyu.tenants.demo import seed_demo

    seeded = await seed_demo(data_dir)
    if seeded["created"]:
        await _seed_demo_replies(seeded["tenant_slug"])
        await _seed_demo_inbox(seeded["tenant_slug"])
        await _seed_demo_engagement(seeded["tenant_slug"])
    return seeded


async def _seed_with_effects(data_dir: Path) -> dict[str, Any]:
    from siyu.core import effects
    from siyu.core.redis import arq_pool

    arq = await arq_pool()
    effects.install(arq)
    try:
        return await seed_demo_brand(data_dir)
    finally:
        await effects.flush()
        effects.uninstall(arq)
        await arq.aclose()


# The first scene, customer by customer (each a "demo" customer of `siyu simulate --prefix demo`): who
# does what on which account. demo00001 follows the Official Account, writes, logs in to the Mini Program
# (whose backend reports the login to Siyu, so the unionid joins the two), writes there, adds a sales rep
# on WeCom and writes to 微信客服: one contact, one timeline across the three channels.
FIRST_SCENE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("oa", "demo00001", "follow", {}),
    ("oa", "demo00002", "follow", {}),
    ("oa", "demo00003", "follow", {}),
    ("oa", "demo00004", "follow", {}),
    ("oa", "demo00005", "follow", {}),
    ("oa", "demo00006", "follow", {"scene": "spring_fair"}),
    ("oa", "demo00001", "text", {"text": "你好，想了解一下春季新品"}),
    ("oa", "demo00002", "text", {"text": "价格"}),
    ("oa", "demo00003", "click", {"key": "MENU_CONTACT"}),
    ("oa", "demo00004", "text", {"text": "转人工"}),
    ("oa", "demo00005", "text", {"text": "门店"}),
    ("mp", "demo00001", "mp_login", {}),
    ("mp", "demo00002", "mp_login", {}),
    ("mp", "demo00003", "mp_login", {}),
    ("mp", "demo00007", "mp_login", {}),
    ("mp", "demo00001", "text", {"text": "这款包还有货吗？"}),
    ("mp", "demo00003", "text", {"text": "我要人工客服"}),
    # …and allows the brand's subscription message: once the rep has used the reply window, the thread
    # offers it instead.
    ("mp", "demo00003", "subscribe_consent", {"accept": [DEMO_MP_NOTICE]}),
    ("wecom", "demo00001", "add_contact", {"user_id": "wangfang", "state": "spring_fair"}),
    ("wecom", "demo00002", "add_contact", {"user_id": "liwei"}),
    ("wecom", "demo00003", "add_contact", {"user_id": "wangfang"}),
    ("wecom", "demo00001", "kf_text", {"text": "在吗？"}),
    ("wecom", "demo00002", "kf_text", {"text": "我昨天在小程序下单了，什么时候发货？"}),
    # Orders in the Mini Program: the backend reports each one to Siyu's API and WeChat Pay notifies it
    # (the simulator picks which arrives first); demo00008 buys without having logged in before (WeChat Pay
    # names an openid Siyu has never seen); demo00007 sends back what they bought.
    ("pay", "demo00001", "buy", {"items": [catalog_item("LUM-CANDLE-FIGUE", 2), catalog_item("LUM-DIFF-CEDRE")]}),
    ("pay", "demo00002", "buy", {"items": [catalog_item("LUM-GIFT-DUO")]}),
    ("pay", "demo00003", "buy", {"items": [catalog_item("LUM-DIFF-REFILL", 2), catalog_item("LUM-SNUFFER")]}),
    ("pay", "demo00007", "buy", {"items": [catalog_item("LUM-SPRAY-ROSE"), catalog_item("LUM-CANDLE-MINI")]}),
    ("pay", "demo00008", "buy", {"items": [catalog_item("LUM-CANDLE-AMBRE")]}),
    ("pay", "demo00001", "buy", {"items": [catalog_item("LUM-DIFF-REFILL")]}),
    ("pay", "demo00007", "refund", {}),
]

# After the first scene the Mini Program's users buy again by themselves, a round every two minutes: rarely
# unprompted, several times likelier within half an hour of a message, so the journeys' lift against their
# holdout shows while the demo runs.
_REFILL = catalog_item("LUM-DIFF-REFILL")
DEMO_BUYING = {"base": 0.01, "after_message": 0.08, "message_window_seconds": 1800, "every_seconds": 120,
               "sku": _REFILL["sku"], "name": _REFILL["name"][:64], "amount_fen": _REFILL["unit_price_fen"], "seed": 2026}


def start_buying(sim_base: str) -> None:
    app_id = DEMO_ACCOUNTS["mp"]["app_id"]
    httpx.post(f"{sim_base}/_sim/apps/{app_id}/buying", json=DEMO_BUYING, timeout=5,
               trust_env=False).raise_for_status()


async def play_first_scene(sim_base: str) -> list[str]:
    """A first scene, so a new user sees live traffic and one person across the three channels. Plays
    the pushes in order; returns what did not go through (empty when all did)."""
    apps = {k: DEMO_ACCOUNTS[k].get("corp_id") or DEMO_ACCOUNTS[k]["app_id"] for k in ("oa", "mp", "wecom")}
    apps["pay"] = apps["mp"]  # customers pay in the Mini Program
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=sim_base, trust_env=False, timeout=30) as http:
        for kind, person, action, fields in FIRST_SCENE:
            path = f"/_sim/pay/{action}" if kind == "pay" else "/_sim/push"
            r = await http.post(path, json={"app_id": apps[kind], "person": person, "action": action, **fields})
            answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != 200 or not answer.get("delivered"):
                attempts = (answer.get("pay") or {}).get("attempts") or [{}]
                why = answer.get("error") or (answer.get("backend") or {}).get("error") or attempts[-1].get("error") \
                    or f"HTTP {r.status_code}"
                problems.append(f"{person} {action} on {kind}: {why}")
    return problems


def _lock_data_dir(data_dir: Any) -> Any:
    """One `make run` per data directory: a second one would share (and then stop) the first's servers."""
    import fcntl

    handle = open(data_dir / "run.lock", "a+")  # noqa: SIM115 (held open for the process's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        raise SystemExit(f"Siyu is already running on {data_dir} (pid {owner}); stop it first, or set SIYU_DATA_DIR "
                         "to another directory.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def main() -> None:
    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _lock = _lock_data_dir(s.data_dir)  # noqa: F841 (kept open: the lock lasts as long as this process)
    sup = Supervisor(say)
    env = dict(os.environ)

    def stop(*_: Any) -> None:
        # A second Ctrl-C while stopping (people press it again when stopping takes seconds) must not cut the
        # stop short: the children would outlive this process, PostgreSQL would stop under them, and `siyu run`
        # would end in a traceback with status 1, which make reports as an error.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *a: say("still stopping…"))
        say("stopping…")
        sup.stop()
        say("stopped")

    # Ctrl-C (or SIGTERM) stops everything, also when this process was started with SIGINT ignored (as a
    # background job of a script): the children, in the same process group, stop on it too, and must not be
    # taken for crashed ones.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not env.get("DATABASE_URL"):
            pgdata = s.data_dir / "postgres"
            say(f"starting embedded PostgreSQL (data in {pgdata})…")
            from siyu.core.embedded import postgres_running, restart_postgres, start_postgres

            env["DATABASE_URL"] = start_postgres(pgdata, cleanup_mode="stop")
            # The library runs the server (not a child of ours): watched through its pid file, restarted
            # through the library. Web and worker reconnect on their own.
            sup.add("PostgreSQL", lambda: restart_postgres(pgdata), alive=lambda: postgres_running(pgdata))
        else:
            say("using DATABASE_URL")
        if not env.get("REDIS_URL"):
            valkey_dir = s.data_dir / "valkey"
            say(f"starting embedded Redis-compatible server (Valkey, data in {valkey_dir})…")
            from siyu.core.embedded import port_is_open, start_redis

            env["REDIS_URL"], valkey_proc = start_redis(valkey_dir)
            valkey_port = urlsplit(env["REDIS_URL"]).port
            # Started again on its port, so every child's REDIS_URL stays right; its append-only file keeps
            # the queue.
            sup.add("Valkey", lambda: start_redis(valkey_dir, port=valkey_port)[1], proc=valkey_proc,
                    alive=None if valkey_proc else lambda: port_is_open(valkey_port or 0))
        else:
            say("using REDIS_URL")
        os.environ.update({"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]})

        sim_port = int(env.get("SIYU_SIMULATOR_PORT", "8900"))
        sim_base = f"http://127.0.0.1:{sim_port}"
        use_simulator = not env.get("WECHAT_API_BASE") and not env.get("WECOM_API_BASE")
        if use_simulator:
            env["WECHAT_API_BASE"] = f"{sim_base}/wechat-api"
            env["WECOM_API_BASE"] = f"{sim_base}/wecom-api"

        say("applying migrations…")
        from siyu.core import db

        asyncio.run(db.migrate(lambda m: say(m)))
        say("seeding the demo brand…")
        seeded = asyncio.run(_seed_with_effects(s.data_dir))
        say("demo created" if seeded["created"] else "demo already present (kept as it is)")

        py = sys.executable
        if use_simulator:
            say(f"starting the WeChat simulator on {sim_base}…")
            # A new demo brand starts a new WeChat; otherwise (a second `make run`, or the simulator started
            # again after it died) it keeps the customers it reads back from its state directory.
            keep_state = [not seeded["created"]]

            def simulator() -> subprocess.Popen[Any]:
                proc = subprocess.Popen([py, "-m", "siyu", "simulator", "--port", str(sim_port),
                                         "--state-dir", str(s.data_dir / "simulator")], env=env, **OWN_GROUP)
                try:
                    if not wait_http(f"{sim_base}/_sim/health", 20, [proc]):
                        raise RuntimeError("the WeChat simulator did not start")
                    register_demo_apps(sim_base, s.port, seeded["api_key"], keep_state=keep_state[0])
                    asyncio.run(link_demo_pay(sim_base, s.port, s.data_dir))
                except BaseException:
                    stop_processes([proc])
                    raise
                keep_state[0] = True
                return proc

            try:
                sup.add("the WeChat simulator", simulator)
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from None
        say("starting the workers (jobs, and re-engagement's sends in their own lane)…")
        env["SIYU_ENGAGEMENT_LANE"] = "1"
        sup.add("the worker", lambda: subprocess.Popen([py, "-m", "siyu", "worker"], env=env, **OWN_GROUP))
        for n in range(s.engagement_workers):
            sup.add(f"re-engagement worker {n + 1}",
                    lambda: subprocess.Popen([py, "-m", "siyu", "worker", "--lane", "engagement"], env=env, **OWN_GROUP))
        say("starting the web server (granian)…")
        sup.add("the web server", lambda: subprocess.Popen([py, "-m", "siyu", "web"], env=env, **OWN_GROUP))
        base = f"http://{s.host}:{s.port}"
        if not wait_http(f"{base}/healthz", 30, sup.procs()):
            raise SystemExit("the web server did not start; see the messages above")

        if use_simulator and seeded["created"]:
            say("a first scene: demo customers follow, write, log in to the Mini Program, buy there and add a "
                "sales rep…")
            try:
                problems = asyncio.run(play_first_scene(sim_base))
            except Exception as exc:  # the demo runs without its first scene
                problems = [f"{type(exc).__name__}: {exc}"]
            for problem in problems:
                say(f"the first scene: {problem}")
        if use_simulator:
            try:
                start_buying(sim_base)
            except httpx.HTTPError as exc:  # the demo runs without customers buying again
                say(f"the simulator's customers will not buy again: {exc}")

        print("", flush=True)
        print("Demo logins (kept in " + str(s.data_dir / "demo-logins.json") + "):", flush=True)
        roles = {"admin@siyu.local": "platform admin", "admin@demo.siyu.local": "demo brand admin",
                 "agent1@demo.siyu.local": "demo sales rep", "agent2@demo.siyu.local": "demo sales rep"}
        for email, password in seeded["logins"].items():
            print(f"  {roles.get(email, ''):<18} {email:<26} {password}", flush=True)
        if use_simulator:
            print(f"WeChat simulator: {sim_base} (the demo brand's accounts point at it). More customers:", flush=True)
            oa_app = DEMO_ACCOUNTS["oa"]["app_id"]
            print(f'  .venv/bin/siyu simulate scenario --app {oa_app} "50 customers follow, 20 write 价格"', flush=True)
        print("", flush=True)
        print(f"Siyu is running at http://{s.host}:{s.port}", flush=True)
        if s.public_base_url != f"http://{s.host}:{s.port}":
            print(f"WeChat reaches it at {s.public_base_url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        # A child that ends is started again (with a growing pause while it keeps failing): one failing
        # part never stops the others. Only Ctrl-C (or SIGTERM) stops everything.
        while True:
            sup.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
