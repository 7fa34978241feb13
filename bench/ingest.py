"""`make bench-ingest`: how fast Siyu takes WeChat's callbacks, against a bare endpoint on the same server;
how little hostile bodies cost it; and whether a burst stays inside WeChat's 5-second deadline.

Starts Siyu as `make run` serves it (embedded PostgreSQL + Valkey in a throwaway directory, granian with
SIYU_WEB_WORKERS workers, the arq worker), links three tenants' accounts (an Official Account in safe mode,
one in plain mode, a Mini Program pushing JSON) and posts callbacks built by the WeChat simulator, signed
and AES-encrypted exactly as WeChat would. Three parts (BENCH_PHASES=throughput,hostile,burst picks some):

1. throughput: N messages with concurrency C to `/wechat-bare` (answers `success`, the baseline) and to
   `/wechat/bench/oa` (verify, decrypt, parse, store, enqueue, answer); then 10 % again as WeChat's retries.
   Targets: ratio >= 0.6 and gateway p99 <= 50 ms; every message stored and processed once.
2. hostile: genuine callbacks at a steady rate, first quiet, then while 4 hostile bodies per second arrive
   (unsigned 1 MiB bodies of repeated elements, deep XML and JSON nesting, a 1 MiB junk `Encrypt`, and the
   same bodies correctly signed for a plain-mode account, as someone holding its Token could send them).
   Targets: the genuine p99 under attack <= 2x the quiet p99 of the same run, and <= 20 ms of the web
   server's CPU per hostile body (beside the CPU the bare endpoint spends receiving the same body).
3. burst: 5,000 new callbacks at concurrency 256 at once, each on a new connection (as independent
   deliveries arrive), a third of them asking the demo's keyword rule (a passive reply). Target: every
   answer within 3 s (WeChat gives up after 5 s), each message stored once and processed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Result, build_request, one, paced, run  # noqa: E402
from siyu.core.processes import stop_processes, wait_http  # noqa: E402

HOSTILE_PER_SECOND = 4
BURST_N = 5000
BURST_C = 256


def say(msg: str) -> None:
    print(f"[bench-ingest] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU time (user + system) used so far by each group of processes; a server's own forked workers
    count with it (PostgreSQL's backends too: those that ended are counted in the postmaster's reaped
    children), the load generator counts alone; the rest is the rest of the machine (other work on it)."""
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
                    if name == "postgres" and p is proc:
                        total += t.children_user + t.children_system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    machine = psutil.cpu_times()
    out["rest"] = machine.user + machine.system + machine.nice - sum(out.values())
    return out


def cpu_line(label: str, before: dict[str, float], after: dict[str, float], n: int) -> str:
    parts = [f"{k} {1000 * (after[k] - before[k]) / n:.3f}" for k in after]
    total = sum(after[k] - before[k] for k in after)
    return f"{label:<22} CPU ms per message: " + ", ".join(parts) + f", all {1000 * total / n:.3f}"


def report(name: str, r: Result) -> str:
    return (f"{name:<26} {r.rate:>10.0f} {r.pct(50):>9.2f} {r.pct(99):>9.2f} {max(r.latencies_ms):>9.2f} "
            f"{r.statuses}")


def merged(runs: list[Result]) -> Result:
    statuses: dict[int, int] = {}
    for r in runs:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    return Result([ms for r in runs for ms in r.latencies_ms], statuses, sum(r.bodies_ok for r in runs),
                  sum(r.seconds for r in runs))


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


MIB = 1024 * 1024


def hostile_bodies(plain_token: str) -> list[tuple[str, str, bytes, str]]:
    """(name, path, body, query) of what an outsider (or a holder of a plain-mode Token) can send."""
    ts, nonce = str(int(time.time())), "1"
    unsigned = urlencode({"timestamp": ts, "nonce": nonce, "signature": "0" * 40, "msg_signature": "0" * 40,
                          "encrypt_type": "aes"})
    unsigned_plain = urlencode({"timestamp": ts, "nonce": nonce, "signature": "0" * 40})
    signed_plain = urlencode({"timestamp": ts, "nonce": nonce, "signature": sign(plain_token, ts, nonce)})
    repeated = b"<xml>" + b"<a/>" * 262_000 + b"</xml>"
    depth = (MIB - 20) // 7
    deep_xml = b"<xml>" + b"<a>" * depth + b"</a>" * depth + b"</xml>"
    deep_xml = deep_xml[:MIB]
    deep_json = (b'{"a":' * (MIB // 5 - 10)) + b"1" + b"}" * 10
    deep_json = deep_json[:MIB]
    junk_encrypt = b"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[" + b"A" * (MIB - 100) + b"]]></Encrypt></xml>"
    wide_json = b'{"ToUserName":"gh","List":[' + b"0," * ((MIB - 40) // 2) + b"0]}"
    return [
        ("repeated <a/>, safe OA", "/wechat/bench/oa", repeated, unsigned),
        ("repeated <a/>, plain OA", "/wechat/benchplain/oa", repeated, unsigned_plain),
        ("deep XML, plain OA", "/wechat/benchplain/oa", deep_xml, unsigned_plain),
        ("deep JSON, MP", "/wechat/benchmp/mp", deep_json, unsigned),
        ("1 MiB junk Encrypt, safe OA", "/wechat/bench/oa", junk_encrypt, unsigned),
        ("signed repeated <a/>, plain", "/wechat/benchplain/oa", repeated, signed_plain),
        ("signed deep XML, plain", "/wechat/benchplain/oa", deep_xml, signed_plain),
        ("signed 1 MiB JSON list, plain", "/wechat/benchplain/oa", wide_json, signed_plain),
    ]


async def wait_processed(count_processed: Any, target: int, seconds: float = 180) -> int:
    deadline = time.monotonic() + seconds
    processed = 0
    while time.monotonic() < deadline:
        processed = await count_processed()
        if processed >= target:
            break
        await asyncio.sleep(0.5)
    return processed


async def main_async(n: int, concurrency: int, workers: int, phases: set[str]) -> int:
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
    ok = True
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
        plain = await tenants.do_create_tenant(tenants.Actor.cli(), {"slug": "benchplain", "name": "Bench plain"})
        plain_creds = {**creds, "app_id": "wx00000000000be4c2", "token": "BenchPlainToken", "mode": "plain"}
        await tenants.do_link_channel(tenants.Actor.cli(), plain.id, "oa", plain_creds)
        mp = await tenants.do_create_tenant(tenants.Actor.cli(), {"slug": "benchmp", "name": "Bench MP"})
        await tenants.do_link_channel(tenants.Actor.cli(), mp.id, "mp", {
            "app_id": "wx00000000000be4c3", "app_secret": creds["app_secret"], "token": "BenchMpToken",
            "aes_key": creds["aes_key"], "push_format": "json"})

        from siyu.runner import DEMO_REPLIES
        from siyu.wechat import services as wechat

        for rule in DEMO_REPLIES:  # the demo's rules, as `make run` seeds them
            await wechat.do_create_rule(tenants.Actor.cli(), t.id, rule)

        port = free_port()
        env = {**os.environ, "SIYU_BENCH_BARE_ENDPOINT": "1", "SIYU_PORT": str(port)}
        say(f"starting the web server (granian, {workers} worker(s)) and the arq worker…")
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "web", "--port", str(port), "--workers",
                                       str(workers)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "worker"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        if not wait_http(f"http://127.0.0.1:{port}/healthz", 30, procs):
            raise SystemExit("the web server did not come up")

        app = SimApp(kind="oa", app_id=creds["app_id"], secret=creds["app_secret"], token=creds["token"],
                     aes_key=creds["aes_key"], message_mode="safe", original_id=creds["original_id"])
        next_id = 7_000_000_000_000

        def messages(count: int, asking_every: int = 0) -> list[tuple[str, bytes]]:
            """`asking_every` n-th message asks for the price (the demo's keyword rule answers it)."""
            nonlocal next_id
            now = time.time()
            out = []
            for i in range(count):
                next_id += 1
                openid = f"oBench{next_id % 997:022d}"
                content = "价格多少？" if asking_every and i % asking_every == 0 else f"你好 {next_id}"
                msg = {"ToUserName": creds["original_id"], "FromUserName": openid, "CreateTime": int(now),
                       "MsgType": "text", "Content": content, "MsgId": next_id}
                sealed = seal(app, msg, now, openid)
                out.append((urlencode(sealed.query), sealed.body.encode()))
            return out

        def reqs(path: str, items: list[tuple[str, bytes]]) -> list[bytes]:
            return [build_request("127.0.0.1", port, f"{path}?{q}", body) for q, body in items]

        def is_success(body: bytes) -> bool:
            return body == b"success"

        def is_answer(body: bytes) -> bool:  # `success`, or an encrypted passive reply
            return body == b"success" or (body.startswith(b"<xml>") and b"<Encrypt>" in body)

        async def bench_events(where: Any = None) -> int:
            cond = InboundEvent.tenant == t.id
            return int(await InboundEvent.count().where(cond if where is None else cond & where))

        async def processed() -> int:
            return await bench_events(InboundEvent.processed_at.is_not_null())

        say("signing and encrypting 400 messages to warm up…")
        warm = messages(400)
        say("warming up…")
        await run("127.0.0.1", port, reqs("/wechat-bare", warm[:200]), concurrency, is_success)
        await run("127.0.0.1", port, reqs("/wechat/bench/oa", warm[200:]), concurrency, is_success)
        await wait_processed(processed, 200)
        await InboundEvent.delete().where(InboundEvent.tenant == t.id)

        postmaster = int((tmp / "pg" / "postmaster.pid").read_text().split()[0])
        groups = {"web": [procs[0].pid], "worker": [procs[1].pid], "postgres": [postmaster],
                  "valkey": [valkey.pid] if valkey else [], "loadgen": [os.getpid()]}
        lines: list[str] = []
        verdicts: list[str] = []

        if "throughput" in phases:
            say(f"signing and encrypting {n} messages as WeChat does…")
            real = messages(n)

            def progress(label: str):  # noqa: ANN202
                return lambda done: say(f"  {label}: {done}/{n}")

            say(f"baseline: {n} messages to the bare endpoint, concurrency {concurrency}…")
            cpu0 = cpu_seconds(groups)
            bare = await run("127.0.0.1", port, reqs("/wechat-bare", real), concurrency, is_success,
                             progress("bare"))
            cpu1 = cpu_seconds(groups)
            say(f"gateway: {n} messages to /wechat/bench/oa, concurrency {concurrency}…")
            gw = await run("127.0.0.1", port, reqs("/wechat/bench/oa", real), concurrency, is_success,
                           progress("gateway"))
            cpu2 = cpu_seconds(groups)
            say("replaying 10 % of the messages, as WeChat's retries…")
            retries = await run("127.0.0.1", port, reqs("/wechat/bench/oa", real[: n // 10]), concurrency,
                                is_success)
            say("waiting for the worker to process every stored event…")
            done = await wait_processed(processed, n)
            stored = await bench_events()
            doubled = await bench_events(InboundEvent.deliveries > 2)
            retried = await bench_events(InboundEvent.deliveries == 2)
            cpu3 = cpu_seconds(groups)
            ratio = gw.rate / bare.rate if bare.rate else 0.0
            lines += ["", "1. throughput", f"{'':<26} {'msg/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} statuses",
                      report("bare endpoint", bare), report("gateway (Siyu)", gw),
                      report("gateway, retries", retries), "",
                      cpu_line("bare endpoint", cpu0, cpu1, n), cpu_line("gateway (answering)", cpu1, cpu2, n),
                      cpu_line("after (worker drains)", cpu2, cpu3, n),
                      f"throughput ratio gateway / bare = {ratio:.2f}   (target >= 0.60)",
                      f"gateway p99 = {gw.pct(99):.2f} ms   (target <= 50 ms)",
                      f"answers 'success': bare {bare.bodies_ok}/{n}, gateway {gw.bodies_ok}/{n}, "
                      f"retries {retries.bodies_ok}/{n // 10}",
                      f"stored events = {stored} (must be {n}), processed = {done}, "
                      f"retried once = {retried} (expected {n // 10}), delivered 3+ times = {doubled}"]
            integrity = stored == n and done == n and gw.bodies_ok == n and retried == n // 10
            ok &= integrity
            verdicts.append(f"throughput: integrity {'OK' if integrity else 'FAILED'}, targets "
                            f"{'met' if ratio >= 0.6 and gw.pct(99) <= 50 else 'NOT met'}")
            await InboundEvent.delete().where(InboundEvent.tenant == t.id)

        if "hostile" in phases:
            bodies = hostile_bodies(plain_creds["token"])
            say("hostile bodies, one at a time: the web server's CPU for each, beside the bare endpoint's…")
            per_body: list[tuple[str, int, float, float, float]] = []
            rounds = 20
            for name, path, body, query in bodies:
                req = build_request("127.0.0.1", port, f"{path}?{query}", body)
                bare_req = build_request("127.0.0.1", port, f"/wechat-bare?{query}", body)
                c0 = cpu_seconds(groups)["web"]
                for _ in range(rounds):
                    await one("127.0.0.1", port, bare_req, 120)
                c1 = cpu_seconds(groups)["web"]
                statuses, slowest = [], 0.0
                for _ in range(rounds):
                    status, ms = await one("127.0.0.1", port, req, 120)
                    statuses.append(status)
                    slowest = max(slowest, ms)
                c2 = cpu_seconds(groups)["web"]
                per_body.append((name, statuses[0] if len(set(statuses)) == 1 else -1,
                                 1000 * (c2 - c1) / rounds, 1000 * (c1 - c0) / rounds, slowest))
                say(f"  {name}: answer {statuses[0]}, {1000 * (c2 - c1) / rounds:.1f} ms CPU, slowest {slowest:.0f} ms")

            # Quiet and attacked stretches alternate (quiet first, then attacked first, …), so the rest of the
            # machine and the worker's backlog weigh on both alike.
            rate, seconds, rounds = 100.0, 5.0, 6
            count = int(rate * seconds)
            hostile_reqs = [build_request("127.0.0.1", port, f"{path}?{query}", body)
                            for _, path, body, query in bodies]
            answers: list[tuple[int, float]] = []

            async def attacker() -> None:
                start = time.perf_counter()
                sent: list[asyncio.Task[tuple[int, float]]] = []
                for i in range(int(seconds * HOSTILE_PER_SECOND)):
                    delay = start + i / HOSTILE_PER_SECOND - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent.append(asyncio.create_task(one("127.0.0.1", port, hostile_reqs[i % len(hostile_reqs)], 120)))
                answers.extend(await asyncio.gather(*sent))

            quiet_runs: list[Result] = []
            attacked_runs: list[Result] = []
            cpu_attack = 0.0

            async def quiet_stretch() -> None:
                quiet_runs.append(await paced("127.0.0.1", port, reqs("/wechat/bench/oa", messages(count)), rate, 8,
                                              is_success))

            async def attacked_stretch() -> None:
                nonlocal cpu_attack
                cpu_a = cpu_seconds(groups)
                attacked, _ = await asyncio.gather(
                    paced("127.0.0.1", port, reqs("/wechat/bench/oa", messages(count)), rate, 8, is_success),
                    attacker())
                cpu_attack += cpu_seconds(groups)["web"] - cpu_a["web"]
                attacked_runs.append(attacked)

            for r in range(rounds):
                say(f"  round {r + 1}/{rounds}: genuine callbacks at {rate:.0f}/s, {seconds:.0f} s quiet and "
                    f"{seconds:.0f} s with {HOSTILE_PER_SECOND} hostile bodies per second…")
                for stretch in (quiet_stretch, attacked_stretch) if r % 2 == 0 else (attacked_stretch, quiet_stretch):
                    await stretch()
            quiet, attacked = merged(quiet_runs), merged(attacked_runs)
            count *= rounds
            refused = sum(1 for s, _ in answers if 400 <= s < 500)
            worst_cpu = max(p[2] for p in per_body)
            p99_ratio = attacked.pct(99) / quiet.pct(99) if quiet.pct(99) else 0.0
            lines += ["", "2. hostile bodies", f"{'body':<32} {'answer':>6} {'web CPU ms':>11} {'bare CPU ms':>12} "
                      f"{'slowest ms':>11}"]
            lines += [f"{name:<32} {status:>6} {cpu:>11.2f} {bare_cpu:>12.2f} {slow:>11.1f}"
                      for name, status, cpu, bare_cpu, slow in per_body]
            lines += [f"{'':<26} {'msg/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} statuses",
                      report("genuine, quiet", quiet), report(f"genuine, {HOSTILE_PER_SECOND} hostile/s", attacked),
                      f"hostile bodies sent {len(answers)}, refused with 4xx {refused}, slowest answer "
                      f"{max((ms for _, ms in answers), default=0):.0f} ms; web CPU while attacked "
                      f"{cpu_attack:.2f} s for {count} genuine + {len(answers)} hostile",
                      f"genuine p99 under attack / quiet = {p99_ratio:.2f}   (target <= 2.00)",
                      f"web CPU per hostile body, worst = {worst_cpu:.2f} ms   (target <= 20 ms)"]
            intact = attacked.bodies_ok == count and quiet.bodies_ok == count and refused == len(answers)
            ok &= intact
            verdicts.append(f"hostile: answers {'OK' if intact else 'FAILED'}, targets "
                            f"{'met' if p99_ratio <= 2 and worst_cpu <= 20 else 'NOT met'}")
            await wait_processed(processed, 2 * count)
            await InboundEvent.delete().where(InboundEvent.tenant == t.id)

        if "burst" in phases:
            say(f"signing and encrypting {BURST_N} messages for the burst…")
            burst_msgs = messages(BURST_N, asking_every=3)
            say(f"burst: {BURST_N} callbacks at concurrency {BURST_C}, each on a new connection…")
            cpu_a = cpu_seconds(groups)
            burst = await run("127.0.0.1", port, reqs("/wechat/bench/oa", burst_msgs), BURST_C, is_answer,
                              fresh=True)
            cpu_b = cpu_seconds(groups)
            stored = await bench_events()
            once = await bench_events(InboundEvent.deliveries == 1)
            say("waiting for the worker to process the burst…")
            done = await wait_processed(processed, BURST_N, 300)
            worst = max(burst.latencies_ms)
            lines += ["", f"3. burst of {BURST_N} at concurrency {BURST_C}",
                      f"{'':<26} {'msg/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} statuses",
                      report("burst", burst), cpu_line("burst (answering)", cpu_a, cpu_b, BURST_N),
                      f"answers 'success' or a passive reply {burst.bodies_ok}/{BURST_N}; stored {stored}, delivered once {once}, "
                      f"processed {done}",
                      f"burst max = {worst:.0f} ms, p99 = {burst.pct(99):.0f} ms   (target: max <= 3000 ms)"]
            intact = burst.bodies_ok == BURST_N and stored == BURST_N and once == BURST_N and done == BURST_N
            ok &= intact
            verdicts.append(f"burst: integrity {'OK' if intact else 'FAILED'}, target "
                            f"{'met' if worst <= 3000 else 'NOT met'}")

        for line in lines:
            print(line)
        print()
        print(f"N = {n}, concurrency = {concurrency}, web workers = {workers}, CPUs = {os.cpu_count()}")
        for v in verdicts:
            print(v)
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
    parser.add_argument("--phases", default=os.environ.get("BENCH_PHASES", "throughput,hostile,burst"))
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    sys.exit(asyncio.run(main_async(args.n, args.c, args.workers, phases)))


if __name__ == "__main__":
    main()
