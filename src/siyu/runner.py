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
from typing import Any
from urllib.parse import urlsplit

import httpx

from siyu.core.processes import Supervisor, stop_processes, wait_http
from siyu.core.settings import get_settings
from siyu.tenants.demo import DEMO_ACCOUNTS


def say(message: str) -> None:
    print(f"[siyu] {message}", flush=True)


def _register_demo_apps(sim_base: str, web_port: int) -> None:
    """The demo brand's three accounts, with their callback Token, EncodingAESKey and message mode, pushing
    to the local web server; OA and MP share an Open Platform account, so their users share unionids."""
    from siyu.tenants.demo import DEMO_ACCOUNTS, DEMO_SLUG

    for kind, data in DEMO_ACCOUNTS.items():
        body = {"kind": kind, "app_id": data.get("corp_id") or data["app_id"],
                "secret": data.get("secret") or data["app_secret"],
                "token": data["token"], "aes_key": data["aes_key"],
                "message_mode": data.get("mode") or "safe", "push_format": data.get("push_format") or "xml",
                "original_id": data.get("original_id", ""), "agent_id": data.get("agent_id", ""),
                "callback_url": f"http://127.0.0.1:{web_port}/wechat/{DEMO_SLUG}/{kind}", "open_platform": "demo"}
        httpx.post(f"{sim_base}/_sim/apps", json=body, timeout=5).raise_for_status()


DEMO_REPLIES = [
    {"trigger": "welcome", "reply": "欢迎关注 Maison Lumière！回复“价格”查看价目表，回复“门店”查看上海门店地址。"},
    {"trigger": "welcome", "scene": "spring_fair", "reply": "感谢在春季展会关注我们！凭此消息到店领取小礼品。"},
    {"trigger": "keyword", "match_type": "contains", "keyword": "价格", "reply": "2026 春季价目表：https://demo.siyu.local/prices"},
    {"trigger": "keyword", "match_type": "contains", "keyword": "price", "reply": "Our spring price list: https://demo.siyu.local/prices"},
    {"trigger": "keyword", "match_type": "exact", "keyword": "门店", "reply": "上海静安区南京西路 1266 号，10:00–22:00。"},
    {"trigger": "click", "menu_key": "MENU_CONTACT", "reply": "客服时间 9:00–21:00，直接留言，销售顾问会尽快回复。"},
]


async def _seed_demo_replies(slug: str) -> None:
    from siyu.tenants import services as tenants
    from siyu.wechat import services as wechat

    tenant = await tenants.get_tenant_by_slug(slug)
    for rule in DEMO_REPLIES:
        await wechat.do_create_rule(tenants.Actor(None, "demo-seed"), tenant.id, rule)


DEMO_REPS = {"agent1@demo.siyu.local": "wangfang", "agent2@demo.siyu.local": "liwei"}


async def _seed_demo_inbox(slug: str) -> None:
    """The demo's sales reps are online (with their WeCom UserIDs, so the customers they added come to
    them), and the menu's "contact us" button asks for a person, so the inbox fills as the scene plays."""
    from siyu.core import db, effects
    from siyu.core.redis import arq_pool
    from siyu.inbox import actions, config
    from siyu.tenants import services as tenants

    tenant = await tenants.get_tenant_by_slug(slug)
    actor = tenants.Actor(None, "demo-seed")
    arq = await arq_pool()
    effects.install(arq)
    try:
        for email, userid in DEMO_REPS.items():
            row = await db.fetchrow("SELECT id FROM staff WHERE email = $1", email)
            await actions.do_set_presence(tenant.id, int(row["id"]), "online", actor, wecom_userid=userid)
        await config.do_update_settings(tenant.id, {
            "handoff_keywords": ", ".join(config.DEFAULT_KEYWORDS), "handoff_menu_keys": "MENU_HUMAN",
            "unanswered_limit": "3", "sla_minutes": "5", "recent_days": "30", "notify_customer": "1"}, actor)
    finally:
        await effects.flush()
        effects.uninstall(arq)
        await arq.aclose()


async def _demo_traffic(sim_base: str) -> None:
    """A first scene, so a new user sees live traffic: customers follow (one through the spring-fair QR
    code), write, tap the menu, log in to the Mini Program, add a sales rep and write to 微信客服."""
    from siyu.simulator.cli import Runner, Step
    from siyu.tenants.demo import DEMO_ACCOUNTS

    def quiet(_: str) -> None:
        return None

    oa, mp, wc = (DEMO_ACCOUNTS[k].get("corp_id") or DEMO_ACCOUNTS[k]["app_id"] for k in ("oa", "mp", "wecom"))
    await Runner(sim_base, oa, "demo", 4, 5.0).run([
        Step("follow", 6), Step("follow", 1, "spring_fair"), Step("write", 3, "你好，想了解一下春季新品"),
        Step("write", 2, "价格"), Step("click", 1, "MENU_CONTACT"), Step("write", 2, "转人工")], quiet)
    await Runner(sim_base, mp, "demo", 4, 5.0).run([Step("follow", 4), Step("write", 2, "这款包还有货吗？"),
                                                    Step("write", 1, "我要人工客服")], quiet)
    await Runner(sim_base, wc, "demo", 4, 5.0).run([Step("follow", 3, "spring_fair"), Step("write", 2, "在吗？")],
                                                   quiet)


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
        from siyu.tenants.demo import seed_demo

        seeded = asyncio.run(seed_demo(s.data_dir))
        say("demo created" if seeded["created"] else "demo already present (kept as it is)")
        if seeded["created"]:
            asyncio.run(_seed_demo_replies(seeded["tenant_slug"]))
            asyncio.run(_seed_demo_inbox(seeded["tenant_slug"]))

        py = sys.executable
        if use_simulator:
            say(f"starting the WeChat simulator on {sim_base}…")

            def simulator() -> subprocess.Popen[Any]:
                # The simulator keeps its state in memory: a new one learns the demo's accounts again.
                proc = subprocess.Popen([py, "-m", "siyu", "simulator", "--port", str(sim_port)], env=env)
                try:
                    if not wait_http(f"{sim_base}/_sim/health", 20, [proc]):
                        raise RuntimeError("the WeChat simulator did not answer")
                    _register_demo_apps(sim_base, s.port)
                except BaseException:
                    stop_processes([proc])
                    raise
                return proc

            try:
                sup.add("the WeChat simulator", simulator)
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from None
        say("starting the worker…")
        sup.add("the worker", lambda: subprocess.Popen([py, "-m", "siyu", "worker"], env=env))
        say("starting the web server (granian)…")
        sup.add("the web server", lambda: subprocess.Popen([py, "-m", "siyu", "web"], env=env))
        base = f"http://{s.host}:{s.port}"
        if not wait_http(f"{base}/healthz", 30, sup.procs()):
            raise SystemExit("the web server did not start; see the messages above")

        if use_simulator and seeded["created"]:
            say("a first scene: demo customers follow, write, log in to the Mini Program and add a sales rep…")
            try:
                asyncio.run(_demo_traffic(sim_base))
            except Exception as exc:  # the demo runs without its first scene
                say(f"the first scene did not play ({type(exc).__name__}: {exc})")

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
