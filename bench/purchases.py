"""`make bench-purchases`: the history import and WeChat Pay's notification endpoint, each beside a baseline
measured in the same run.

1. Import. Generates a CSV of BENCH_LINES order lines (default 1,000,000: ~330,000 orders of 1 to 5 lines,
   ~100,000 buyers by Mini Program openid, 5 % of orders refunded, three years of payments, 200 SKUs) in the
   format of docs/purchase-import.md. Baseline: a bare `COPY` of the same file into a plain table of text
   columns (the fastest PostgreSQL takes those bytes at all). Siyu: `siyu purchases import` as the CLI runs
   it (staging, checks, orders, buyers and contacts, purchases, refunds, timeline events, products, figures).
   Prints lines/s of both and their ratio (target >= 0.30), the time of each phase, and checks the result:
   one purchase per order, one timeline event per purchase and refund, figures for every buyer. Then imports
   the same file again (nothing may change) and prints that time too. Last, the floor: the rows the import
   wrote, computed already, written again with the tables' indexes and keys. No import design on this schema
   can beat it, so its ratio to COPY is the best ratio any design could print.
2. Notifications. Starts Siyu as `make run` serves it (granian, the arq worker), links a WeChat Pay merchant
   with a key made here, and sends BENCH_N signed, encrypted TRANSACTION.SUCCESS notifications (built by the
   WeChat simulator's Pay code, exactly as WeChat Pay does) with concurrency BENCH_C, beside the same number
   of requests to a bare endpoint on the same server. Prints p50/p99 of both (target: p99 <= 50 ms) and
   checks every notification was stored once and processed.

BENCH_PART=import|pay runs one part; BENCH_WORKERS sets the web processes (default 1, as `make run`). BENCH_KEEP=1 keeps the import's database running afterwards.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Row, sayer  # noqa: E402
from bench.loadgen import Result, build_request, run  # noqa: E402

say = sayer("bench-purchases")
MP_APP = "wx00000000000be4c2"
MCHID = "1900000199"
APIV3 = "BenchApiV3Key0123456789abcdefghi"
SKUS = [(f"SKU-{i:04d}", f"商品 {i} Produit {i}", 1000 * (5 + i % 95)) for i in range(200)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate(path: Path, lines: int, seed: int = 7) -> tuple[int, int, int]:
    """The CSV file; returns (orders, buyers, refunds)."""
    rnd = random.Random(seed)
    buyers = max(1, lines // 10)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    orders = refunds = written = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "paid_at", "amount_fen", "currency", "sku", "name", "quantity", "unit_price_fen",
                    "openid", "app_id", "transaction_id", "refund_id", "refunded_fen", "refunded_at"])
        while written < lines:
            orders += 1
            n = min(lines - written, rnd.randint(1, 5))
            items = [rnd.choice(SKUS) for _ in range(n)]
            qty = [rnd.choice((1, 1, 1, 2, 3)) for _ in range(n)]
            amount = sum(price * q for (_, _, price), q in zip(items, qty, strict=True))
            paid = start + timedelta(seconds=rnd.randrange(3 * 365 * 86400))
            buyer = f"oBench{rnd.randrange(buyers):022d}"
            order_id = f"ORD{orders:010d}"
            refund = rnd.random() < 0.05
            if refund:
                refunds += 1
            paid_s = paid.isoformat()
            txn = f"4200{orders:024d}"
            for k, ((sku, name, price), q) in enumerate(zip(items, qty, strict=True)):
                r = (f"RF{orders:010d}", str(amount), (paid + timedelta(days=3)).isoformat()) if refund and k == 0 \
                    else ("", "", "")
                w.writerow([order_id, paid_s, amount, "CNY", sku, name, q, price, buyer, MP_APP, txn, *r])
            written += n
    return orders, buyers, refunds


async def import_part(lines: int, tmp: Path) -> list[Row]:
    from siyu.commerce import imports
    from siyu.core import db
    from siyu.tenants import services as tenants

    await db.migrate()
    await db.start_pool(min_size=1, max_size=4)
    t = await tenants.do_create_tenant(tenants.Actor.cli(), {"slug": "bench", "name": "Bench"})
    await tenants.do_link_channel(tenants.Actor.cli(), t.id, "mp", {
        "app_id": MP_APP, "app_secret": "benchMpSecret000000000000000000001", "token": "BenchMpToken1",
        "aes_key": "BenchMpEncodingAesKey0000000000000000000001", "push_format": "json"})
    path = tmp / "orders.csv"
    say(f"generating {lines:,} order lines…")
    t0 = time.perf_counter()
    orders, buyers, refunds = generate(path, lines)
    say(f"  {orders:,} orders, up to {buyers:,} buyers, {refunds:,} refunds, {path.stat().st_size / 1e6:.0f} MB "
        f"in {time.perf_counter() - t0:.1f} s")

    async def bare_copy() -> float:
        columns = ", ".join(f"c{i} text" for i in range(14))
        await db.execute("DROP TABLE IF EXISTS bench_plain")
        await db.execute(f"CREATE TABLE bench_plain ({columns})")
        t0 = time.perf_counter()
        await db.copy_to_table("bench_plain", source=path, format="csv", header=True)
        took = time.perf_counter() - t0
        await db.execute("DROP TABLE bench_plain")
        return took

    await db.execute("CHECKPOINT")
    say("baseline: a bare COPY of the file into a plain table…")
    copy_s = await bare_copy()
    say(f"  {copy_s:.2f} s, {lines / copy_s:,.0f} lines/s")
    await db.execute("CHECKPOINT")

    phases: dict[str, float] = {}
    last = [time.perf_counter(), "staging"]

    def progress(p: Any) -> None:
        now = time.perf_counter()
        phases[last[1]] = phases.get(last[1], 0.0) + now - last[0]
        last[0], last[1] = now, p.status
        if p.status == "importing" and p.lines_done:
            say(f"  {p.lines_done:,}/{p.lines_total:,} lines ({now - started:.1f} s)")

    say("Siyu: siyu purchases import, as the CLI runs it…")
    started = time.perf_counter()
    done = await imports.import_path(t.id, path, tenants.Actor.cli(), progress=progress)
    import_s = time.perf_counter() - started
    phases[last[1]] = phases.get(last[1], 0.0) + time.perf_counter() - last[0]
    say(f"  {import_s:.2f} s, {lines / import_s:,.0f} lines/s ({done.status}: {done.created:,} created, "
        f"{done.failed_orders} left out, {done.error_lines} errors)")
    say("  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))

    counts = {k: int((await db.fetchrow(q, t.id))["n"]) for k, q in {
        "purchases": "SELECT count(*) AS n FROM commerce_purchase WHERE tenant = $1",
        "refunds": "SELECT count(*) AS n FROM commerce_refund WHERE tenant = $1",
        "events": "SELECT count(*) AS n FROM timeline_event WHERE tenant = $1",
        "figures": "SELECT count(*) AS n FROM commerce_contact_stats WHERE tenant = $1",
        "identities": "SELECT count(*) AS n FROM identity WHERE tenant = $1",
    }.items()}
    say("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    ok = counts["purchases"] == orders and counts["refunds"] == refunds and counts["events"] == orders + refunds \
        and counts["figures"] == counts["identities"] and done.status == "done"

    say("the same file again (idempotent: nothing may change)…")
    t0 = time.perf_counter()
    again = await imports.import_path(t.id, path, tenants.Actor.cli())
    again_s = time.perf_counter() - t0
    events_after = int((await db.fetchrow("SELECT count(*) AS n FROM timeline_event WHERE tenant = $1", t.id))["n"])
    ok = ok and again.created == 0 and again.unchanged == orders and events_after == counts["events"]
    say(f"  {again_s:.2f} s, {again.unchanged:,} unchanged, {again.created} created")
    print(f"integrity: {'OK' if ok else 'FAILED'} (orders {orders:,}, purchases {counts['purchases']:,}, "
          f"refunds {refunds:,}/{counts['refunds']:,}, events {counts['events']:,})", flush=True)
    floor_s = await write_floor(t.id)
    await db.close_pool()
    rate, base = lines / import_s, lines / copy_s
    return [Row("import: order lines/s (CLI, 1 process)", ">= 0.30", rate, base, "l/s", rate / base >= 0.3 and ok),
            Row("import of the same file again: lines/s", "—", lines / again_s, base, "l/s", None),
            Row("floor: only writing the import's rows, lines/s", "—", lines / floor_s, base, "l/s", None)]


# The tables an import writes, parents first. Writing these rows is what any import design must do at least.
FLOOR_TABLES = ("contact", "identity", "commerce_purchase", "commerce_refund", "commerce_product", "timeline_event",
                "commerce_contact_stats")


async def write_floor(tenant_id: int) -> float:
    """The least any import design can take on this schema: the rows the import wrote (contacts, identities,
    purchases, refunds, products, timeline events, figures), already computed, written again as they are with
    every index, key and check the real tables have (no reading, checking, resolving or grouping). The bench's
    database holds only the bench tenant, so the tables are emptied and refilled from copies."""
    from siyu.core import db

    say("floor: the same rows, computed already, written again with the tables' indexes and keys…")
    for table in FLOOR_TABLES:
        await db.execute(f"DROP TABLE IF EXISTS floor_{table}")
        await db.execute(f"CREATE UNLOGGED TABLE floor_{table} AS SELECT * FROM {table} WHERE tenant = $1", tenant_id)
    await db.execute(f"TRUNCATE {', '.join(FLOOR_TABLES)} CASCADE")
    await db.execute("CHECKPOINT")
    took: dict[str, float] = {}
    for table in FLOOR_TABLES:
        t0 = time.perf_counter()
        await db.execute(f"INSERT INTO {table} SELECT * FROM floor_{table}")
        took[table] = time.perf_counter() - t0
    for table in FLOOR_TABLES:
        await db.execute(f"DROP TABLE floor_{table}")
    total = sum(took.values())
    say(f"  {total:.2f} s: " + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()))
    return total


async def pay_part(n: int, concurrency: int, tmp: Path) -> list[Row]:
    from siyu.core.embedded import start_redis
    from siyu.core.processes import stop_processes, wait_http

    os.environ["REDIS_URL"], valkey = start_redis(tmp / "valkey", persist=False)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        from siyu.commerce import merchants
        from siyu.commerce.tables import PayNotification
        from siyu.core import db
        from siyu.simulator import pay as simpay
        from siyu.simulator.state import SimApp, State
        from siyu.tenants import services as tenants

        await db.migrate()
        await db.start_pool(min_size=1, max_size=4)
        actor = tenants.Actor.cli()
        t = await tenants.do_create_tenant(actor, {"slug": "benchpay", "name": "Bench Pay"})
        await tenants.do_link_channel(actor, t.id, "mp", {
            "app_id": MP_APP, "app_secret": "benchMpSecret000000000000000000001", "token": "BenchMpToken1",
            "aes_key": "BenchMpEncodingAesKey0000000000000000000001", "push_format": "json"})
        sim = State()
        desk = simpay.desk(sim)
        key = desk.key_view()
        await merchants.do_link_pay(actor, t.id, {"mch_id": MCHID, "app_id": MP_APP, "api_v3_key": APIV3,
                                                  "public_key": key["public_key"], "public_key_id": key["public_key_id"]})
        port = free_port()
        env = {**os.environ, "SIYU_BENCH_BARE_ENDPOINT": "1", "SIYU_PORT": str(port), "SIYU_LOG_LEVEL": "WARNING"}
        workers = int(os.environ.get("BENCH_WORKERS", 1))
        say(f"starting the web server (granian, {workers} worker(s)) and the arq worker…")
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "web", "--port", str(port), "--workers", str(workers)],
                                      env=env, stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, "-m", "siyu", "worker"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        if not wait_http(f"http://127.0.0.1:{port}/healthz", 60, procs):
            raise SystemExit("the web server did not come up")
        sim.apps[MP_APP] = SimApp(kind="mp", app_id=MP_APP, secret="x")
        merchant = simpay.Merchant(MCHID, MP_APP, APIV3, f"http://127.0.0.1:{port}/wechat/benchpay/pay")
        say(f"signing and encrypting {n + 300:,} notifications as WeChat Pay does…")
        now = time.time()

        def notification(i: int) -> bytes:
            resource = {"appid": MP_APP, "mchid": MCHID, "out_trade_no": f"BENCH{i:010d}",
                        "transaction_id": f"4200{i:024d}", "trade_type": "JSAPI", "trade_state": "SUCCESS",
                        "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
                        "success_time": simpay.china_time(now), "payer": {"openid": f"oBenchPayer{i % 5000:017d}"},
                        "amount": {"total": 100 + i, "payer_total": 100 + i, "currency": "CNY", "payer_currency": "CNY"}}
            notice = desk.build(merchant, "TRANSACTION.SUCCESS", resource, resource["out_trade_no"])
            body = notice.body.encode()
            head = "".join(f"{k}: {v}\r\n" for k, v in desk.headers(merchant, body).items() if k != "Content-Type")
            return (f"POST /wechat/benchpay/pay HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                    f"{head}Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body

        signed = [notification(i) for i in range(n + 300)]
        warm, real = signed[n:], signed[:n]
        bare = [build_request("127.0.0.1", port, "/wechat-bare", b"{}", "application/json") for _ in range(n + 300)]

        def any_body(body: bytes) -> bool:
            return True

        say("warming up…")
        await run("127.0.0.1", port, bare[:300], concurrency, any_body)
        await run("127.0.0.1", port, warm, concurrency, any_body)
        say(f"baseline: {n:,} requests to the bare endpoint, concurrency {concurrency}…")
        base = await run("127.0.0.1", port, bare[300:], concurrency, any_body)
        say(f"WeChat Pay: {n:,} signed notifications to /wechat/benchpay/pay, concurrency {concurrency}…")
        real_r = await run("127.0.0.1", port, real, concurrency, any_body)

        say("waiting for the worker to process every notification…")
        began = time.monotonic()
        deadline = began + 300
        processed = 0
        while time.monotonic() < deadline:
            processed = await PayNotification.count().where(PayNotification.processed_at.is_not_null())
            if processed >= n + 300:
                break
            await asyncio.sleep(0.5)
        took = time.monotonic() - began
        stored = await PayNotification.count()
        purchases = int((await db.fetchrow("SELECT count(*) AS n FROM commerce_purchase WHERE tenant = $1", t.id))["n"])

        def line(name: str, r: Result) -> str:
            return (f"{name:<24} {r.rate:>9.0f}/s p50 {r.pct(50):>7.2f} ms  p99 {r.pct(99):>7.2f} ms  "
                    f"max {max(r.latencies_ms):>7.2f} ms  {r.statuses}")

        print(line("bare endpoint", base), flush=True)
        print(line("WeChat Pay notifications", real_r), flush=True)
        ok = real_r.statuses == {204: n} and stored == n + 300 and processed == n + 300 and purchases == n + 300
        print(f"integrity: {'OK' if ok else 'FAILED'} (stored {stored:,}, processed {processed:,}, purchases "
              f"{purchases:,}, expected {n + 300:,}); the worker finished {took:.1f} s after the last answer",
              flush=True)
        return [Row(f"Pay notification answer p99 (c={concurrency})", "<= 50 ms", real_r.pct(99), base.pct(99), "ms",
                    real_r.pct(99) <= 50 and ok),
                Row("Pay notification answer p50", "—", real_r.pct(50), base.pct(50), "ms", None),
                Row("Pay notifications answered per second", "—", real_r.rate, base.rate, "/s", None)]
    finally:
        stop_processes([*([valkey] if valkey else []), *procs], timeout=15)
        from siyu.core import db as pool

        await pool.close_pool()


async def main_async() -> int:
    lines = int(os.environ.get("BENCH_LINES", 1_000_000))
    n = int(os.environ.get("BENCH_N", 3000))
    concurrency = int(os.environ.get("BENCH_C", 32))
    part = os.environ.get("BENCH_PART", "all")
    tmp = Path(tempfile.mkdtemp(prefix="siyu-bench-purchases-"))
    os.environ.update({"SIYU_DATA_DIR": str(tmp / "data"), "SIYU_ENV": "development", "SIYU_LOG_LEVEL": "WARNING",
                       "PICCOLO_CONF": "siyu.piccolo_conf"})
    for var in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    rows: list[Row] = []
    from siyu.core.embedded import start_postgres

    say("starting embedded PostgreSQL…")
    os.environ["DATABASE_URL"] = start_postgres(tmp / "pg", cleanup_mode="delete")
    try:
        if part in ("all", "import"):
            rows += await import_part(lines, tmp)
        if part in ("all", "pay"):
            rows += await pay_part(n, concurrency, tmp)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            from siyu.core.embedded import stop_postgres

            stop_postgres()
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'figure':<58} {'target':<9} {'Siyu':>16} {'baseline':>14} {'ratio':>6}  met")
    for r in rows:
        print(r.line())
    print(f"BENCH_LINES = {lines:,}, BENCH_N = {n:,}, BENCH_C = {concurrency}, CPUs = {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0 if all(r.met is not False for r in rows) else 1


def main() -> None:
    sys.exit(asyncio.run(main_async()))


if __name__ == "__main__":
    main()
