"""`make bench-ingest`: how fast Siyu takes WeChat's callbacks, against a bare endpoint on the same server.

Starts Siyu as `make run` serves it (embedded PostgreSQL + Valkey in a throwaway directory, granian, the
arq worker), links a tenant's Official Account in safe mode, then posts N signed, AES-encrypted OA text
messages (built by the WeChat simulator, exactly as WeChat would) with concurrency C:

1. to `/wechat-bare`, which only answers `success` (the baseline), and
2. to `/wechat/bench/oa`, the real gateway (verify, decrypt, parse, store, enqueue, answer).

It prints messages/s and p50/p99 latency for both, their ratio, and afterwards the stored and processed
event counts, which must equal N (then replays 10 % of the messages as WeChat's retries and checks that
nothing is stored twice). Targets: ratio >= 0.6 and gateway p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Result, build_request, run  # noqa: E402
from siyu.core.processes import stop_processes, wait_http  # noqa: E402


def say(msg: str) -> None:
    print(f"[bench-ingest] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU time (user + system) used so far by each group of processes; a server's own forked workers
    count with it, the load generator counts alone."""
    import psutil

    out: dict[str, float] = {}
    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                family = [proc] if name == "loadgen" else [proc, *proc.children(recursive=True)]
                for p in family:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    machine = psutil.cpu_times()
    # PostgreSQL's backends come and go with their connections: count it as the rest of the machine.
    out["postgres & rest"] = machine.user + machine.system + machine.nice - sum(out.values())
    return out


def cpu_line(label: str, before: dict[str, float], after: dict[str, float], n: int) -> str:
    parts = [f"{k} {1000 * (after[k] - before[k]) / n:.3f}" for k in after]
    total = sum(after[k] - before[k] for k in after)
    return f"{label:<22} CPU ms per message: " + ", ".join(parts) + f", all {1000 * total / n:.3f}"


def report(name: str, r: Result) -> str:
    return (f"{name:<22} {r.rate:>10.0f} {r.pct(50):>9.2f} {r.pct(99):>9.2f} {max(r.latencies_ms):>9.2f} "
            f"{r.statuses}")


async def main_async(n: int, concurrency: int, workers: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="siyu-bench-"))
    os.environ.update({"SIYU_DATA_DIR": str(tmp / "data"), "SIYU_ENV": "development", "SIYU_LOG_LEVEL": "WARNING",
                       "PICCOLO_CONF": "siyu.piccolo_conf"})
    for var in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    from siyu.core.embedded import start_postgres, start_redis, stop_postgres

    say("starting embedded PostgreSQL and Valkey…")
    os.environ["DATABASE_URL"] = start_postgres(tmp / "pg", cleanup_mode="delete")
    os.environ["REDIS_URL"], valkey = start_redis(tmp / "valkey", persist=False)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from siyu.core import db

        await db.migrate()
        from siyu.simulator.state import SimApp
        from siyu.simulator.wire import seal
        from siyu.tenants import services as tenants
        from siyu.wechat.tables import InboundEvent

        creds = {"app_id": "wx00000000000be4c1", "app_secret": "benchSecret00000000000000000000001",
                 "token": "BenchToken2026", "aes_key": "BenchEncodingAesKey000000000000000000000001",
                 "mode": "safe", "oa_kind": "service", "original_id": "gh_000000be4c10"}
        t = await tenants.do_create_tenant(tenants.Actor.cli(), {"slug": "bench", "name": "Bench"})
        await tenants.do_link_channel(tenants.Actor.cli(), t.id, "oa", creds)

        port = free_port()
        env = {**os.environ, "SIYU_BENCH_BARE_ENDPOINT": "1", "SIYU_PORT": str(port)}
        say(f"starting the web server (granian, {workers} worker(s)) and the arq worker…")
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "web", "--port", str(port), "--workers",
                                       str(workers)], env=env, stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "worker"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        if not wait_http(f"http://127.0.0.1:{port}/healthz", 30, procs):
            raise SystemExit("the web server did not come up")

        app = SimApp(kind="oa", app_id=creds["app_id"], secret=creds["app_secret"], token=creds["token"],
                     aes_key=creds["aes_key"], message_mode="safe", original_id=creds["original_id"])
        say(f"signing and encrypting {n + 400} messages as WeChat does…")
        now = time.time()
        sealed = []
        for i in range(n + 400):
            openid = f"oBench{i % 997:022d}"
            msg = {"ToUserName": creds["original_id"], "FromUserName": openid, "CreateTime": int(now),
                   "MsgType": "text", "Content": f"你好 {i}", "MsgId": 7_000_000_000_000 + i}
            out = seal(app, msg, now, openid)
            sealed.append((urlencode(out.query), out.body.encode()))
        warm, real = sealed[n:], sealed[:n]

        def reqs(path: str, items: list[tuple[str, bytes]]) -> list[bytes]:
            return [build_request("127.0.0.1", port, f"{path}?{q}", body) for q, body in items]

        def is_success(body: bytes) -> bool:
            return body == b"success"

        say("warming up…")
        await run("127.0.0.1", port, reqs("/wechat-bare", warm[:200]), concurrency, is_success)
        await run("127.0.0.1", port, reqs("/wechat/bench/oa", warm[200:]), concurrency, is_success)
        await InboundEvent.delete().where(InboundEvent.tenant == t.id)

        def progress(label: str):  # noqa: ANN202
            return lambda done: say(f"  {label}: {done}/{n}")

        groups = {"web": [procs[0].pid], "worker": [procs[1].pid], "valkey": [valkey.pid] if valkey else [],
                  "loadgen": [os.getpid()]}
        say(f"baseline: {n} messages to the bare endpoint, concurrency {concurrency}…")
        cpu0 = cpu_seconds(groups)
        bare = await run("127.0.0.1", port, reqs("/wechat-bare", real), concurrency, is_success, progress("bare"))
        cpu1 = cpu_seconds(groups)
        say(f"gateway: {n} messages to /wechat/bench/oa, concurrency {concurrency}…")
        gw = await run("127.0.0.1", port, reqs("/wechat/bench/oa", real), concurrency, is_success,
                       progress("gateway"))
        cpu2 = cpu_seconds(groups)

        say("replaying 10 % of the messages, as WeChat's retries…")
        retries = await run("127.0.0.1", port, reqs("/wechat/bench/oa", real[: n // 10]), concurrency, is_success)

        say("waiting for the worker to process every stored event…")
        deadline = time.monotonic() + 120
        processed = 0
        while time.monotonic() < deadline:
            processed = await InboundEvent.count().where(
                (InboundEvent.tenant == t.id) & InboundEvent.processed_at.is_not_null())
            if processed >= n:
                break
            await asyncio.sleep(0.5)
        stored = await InboundEvent.count().where(InboundEvent.tenant == t.id)
        doubled = await InboundEvent.count().where((InboundEvent.tenant == t.id) & (InboundEvent.deliveries > 2))
        retried = await InboundEvent.count().where((InboundEvent.tenant == t.id) & (InboundEvent.deliveries == 2))

        cpu3 = cpu_seconds(groups)
        ratio = gw.rate / bare.rate if bare.rate else 0.0
        print()
        print(f"{'':<22} {'msg/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} statuses")
        print(report("bare endpoint", bare))
        print(report("gateway (Siyu)", gw))
        print(report("gateway, retries", retries))
        print()
        print(cpu_line("bare endpoint", cpu0, cpu1, n))
        print(cpu_line("gateway (answering)", cpu1, cpu2, n))
        print(cpu_line("after (worker drains)", cpu2, cpu3, n))
        print(f"N = {n}, concurrency = {concurrency}, web workers = {workers}, CPUs = {os.cpu_count()}")
        print(f"throughput ratio gateway / bare = {ratio:.2f}   (target >= 0.60)")
        print(f"gateway p99 = {gw.pct(99):.2f} ms   (target <= 50 ms)")
        print(f"answers 'success': bare {bare.bodies_ok}/{n}, gateway {gw.bodies_ok}/{n}, "
              f"retries {retries.bodies_ok}/{n // 10}")
        print(f"stored events = {stored} (must be {n}), processed = {processed}, "
              f"retried once = {retried} (expected {n // 10}), delivered 3+ times = {doubled}")
        ok = stored == n and processed == n and gw.bodies_ok == n and retried == n // 10
        ok_targets = ratio >= 0.6 and gw.pct(99) <= 50
        print(f"integrity: {'OK' if ok else 'FAILED'}; targets: {'met' if ok_targets else 'NOT met'}")
        return 0 if ok else 1
    finally:
        stop_processes([*([valkey] if valkey else []), *procs], timeout=15)
        stop_postgres()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", 5000)))
    parser.add_argument("--c", type=int, default=int(os.environ.get("BENCH_C", 32)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SIYU_WEB_WORKERS", 1)))
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args.n, args.c, args.workers)))


if __name__ == "__main__":
    main()
