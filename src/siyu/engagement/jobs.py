"""Jobs of re-engagement. They take ids, are registered by name and are safe to run twice: PostgreSQL's keys
and the ledger's states decide what happens, never the queue.

- `engagement.send_due` (tenant, delivery ids): deferred until the rows are due; claims and sends them.
- `engagement.sweep` (cron, every second; at most two at a time): claims due rows by index, takes back rows
  whose run died, and keeps going while there is work — so a Redis flush or a killed worker only delays sends.
  It also hands out what else is due: mass batches whose slot closed, broadcast fan-outs, WeCom task results,
  finished broadcasts.
- `engagement.fan_out` (tenant, broadcast), `engagement.send_mass` (tenant, batch).
- `engagement.handle_inbound` (event ids): the follow trigger and WeChat's mass-send results, handed over by
  contacts after it resolved the callbacks (like `inbox.handle_inbound`).
- `engagement.evaluate` (cron): inactivity and segment journeys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError

from siyu.contacts.resolve import resolve
from siyu.core import clock
from siyu.core.settings import get_settings as get_app_settings
from siyu.engagement import broadcasts, lane, ledger, mass, sender, tasks, triggers
from siyu.engagement import journeys as journeys_svc
from siyu.engagement.rules import Settings, get_settings, quiet_until
from siyu.wechat.events import load_normalized
from siyu.wechat.outbound import WeChatRuntime, runtime_of

log = logging.getLogger("siyu.engagement.jobs")

SEND_DUE = "engagement.send_due"
SWEEP = "engagement.sweep"
FAN_OUT = broadcasts.FANOUT_JOB
SEND_MASS = mass.SEND_JOB
HANDLE_INBOUND = "engagement.handle_inbound"
EVALUATE = "engagement.evaluate"
ON_PURCHASE = "engagement.on_purchase"
ON_REFUND = "engagement.on_refund"
TRIES = {SEND_DUE: 3, SWEEP: 1, FAN_OUT: 5, SEND_MASS: 5, HANDLE_INBOUND: 5, EVALUATE: 1, ON_PURCHASE: 5,
         ON_REFUND: 5}

CHUNK = 200  # rows claimed at once
CLAIMS_AHEAD = 2  # claims a sweep holds at once: one sending, the next read and waiting at the gate
SWEEPERS = 2
SWEEP_BUDGET = 50.0  # seconds a sweep keeps going while there is work (jobs time out at 60)
IDLE_EXIT = 2.0
EVALUATE_EVERY = timedelta(minutes=10)
HOUSEKEEPING_EVERY = 5  # seconds between two rounds of mass batches, fan-outs, task results, finished broadcasts


class QuietSweeps(logging.Filter):
    """arq logs every job's start (→) and end (←) at INFO; the sweeper runs every second, so those two lines of
    its runs would flood the worker's output. They are dropped; its warnings and errors, and every line of every
    other job, pass."""

    ROUTINE = ("%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or record.msg not in self.ROUTINE or not isinstance(record.args, tuple):
            return True
        ref = record.args[1] if len(record.args) > 1 else ""
        # A cron job's ref is its name ("cron:engagement.sweep"); a queued run's, "<job id>:<name>".
        return not (isinstance(ref, str) and (ref == f"cron:{SWEEP}" or ref.endswith(f":cron:{SWEEP}")))


def quiet_sweep_logs() -> None:
    """Install `QuietSweeps` on arq's worker logger (once per process)."""
    arq_log = logging.getLogger("arq.worker")
    if not any(isinstance(f, QuietSweeps) for f in arq_log.filters):
        arq_log.addFilter(QuietSweeps())


class Holds:
    """Quiet hours per tenant, read once per sweep."""

    def __init__(self) -> None:
        self._settings: dict[int, Settings] = {}

    async def __call__(self, tenant_id: int, now: datetime) -> datetime | None:
        if tenant_id not in self._settings:
            self._settings[tenant_id] = await get_settings(tenant_id)
        return quiet_until(self._settings[tenant_id], now)


async def _never(tenant_id: int, now: datetime) -> datetime | None:
    return None


async def send_due(ctx: dict[str, Any], tenant_id: int, delivery_ids: list[int], ignore_quiet: bool = False) -> str:
    claimed = await ledger.claim_due(clock.now(), len(delivery_ids), _never if ignore_quiet else Holds(),
                                     ids=delivery_ids)
    if not claimed.rows:
        return "nothing due" if not claimed.held else f"held {claimed.held}"
    done = await sender.run(runtime_of(ctx), claimed.rows)
    return ", ".join(f"{k} {v}" for k, v in sorted(done.items()))


async def sweep_once(runtime: WeChatRuntime, budget: float = SWEEP_BUDGET, idle_exit: float = IDLE_EXIT,
                     chunk: int = CHUNK, lease: float | None = None) -> Counter[str]:
    """Claim and send due rows (and rows whose run died) until nothing has been due for `idle_exit` seconds
    or `budget` is spent. While one claim sends, the next is claimed and read, and its rows wait at the
    shared gate: the sends never pause for a claim (measured: the pause between two claims of 200 cost a
    fifth of a broadcast's rate)."""
    done: Counter[str] = Counter()
    holds = Holds()
    lease = lease if lease is not None else float(get_app_settings().engagement_lease_seconds)
    gate = asyncio.Semaphore(sender.CONCURRENCY)
    running: set[asyncio.Task[Counter[str]]] = set()

    async def settle(block: bool) -> None:
        if not running:
            return
        finished, _ = await asyncio.wait(running, timeout=None if block else 0,
                                         return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            running.discard(task)
            done.update(task.result())

    start = last_work = time.monotonic()
    try:
        while time.monotonic() - start < budget:
            await settle(block=len(running) >= CLAIMS_AHEAD)  # blocking: until one claim is done
            now = clock.now()
            claimed = await ledger.claim_due(now, chunk, holds)
            rows = claimed.rows or await ledger.reclaim_stale(now, lease, chunk)
            done["held"] += claimed.held
            if rows:
                running.add(asyncio.create_task(sender.run(runtime, rows, gate)))
                last_work = time.monotonic()
                continue
            if running:
                await settle(block=True)
                last_work = time.monotonic()
                continue
            if time.monotonic() - last_work >= idle_exit:
                break
            await asyncio.sleep(0.1)
    finally:
        if running:  # a stop or an error: the claims in hand are sent (or keep their lease) before returning
            for task in await asyncio.gather(*running, return_exceptions=True):
                if isinstance(task, Counter):
                    done.update(task)
    return done


async def housekeeping(ctx: dict[str, Any]) -> None:
    runtime = runtime_of(ctx)
    now = clock.now()
    for tenant_id, batch_id in await mass.due_batches(now):
        await mass.send(runtime, tenant_id, batch_id)
    redis = ctx.get("redis")
    if redis is not None:
        for tenant_id, broadcast_id in await broadcasts.due_fan_outs(now):
            await redis.enqueue_job(FAN_OUT, tenant_id, broadcast_id, _queue_name=lane.queue(),
                                    _job_id=f"engagement:fanout:{broadcast_id}:{int(now.timestamp()) // 60}")
    await tasks.poll(runtime)
    await broadcasts.finish_done(now)


_sweeping_here = False  # one sweep per process: the sweepers spread over the lane's worker processes


async def sweep(ctx: dict[str, Any]) -> str:
    """One of SWEEPERS sweeps at a time across the workers, and one per worker process: arq hands the every-
    second cron run to whichever worker asks first, so both sweeps could otherwise run in one process while
    another worker's CPU stays idle (measured: 87 % against 25 %)."""
    global _sweeping_here
    if _sweeping_here:
        return "already sweeping in this worker"
    redis = ctx["redis"]
    slot = None
    for n in range(SWEEPERS):
        if await redis.set(f"siyu:engagement:sweeper:{n}", "1", nx=True, ex=int(SWEEP_BUDGET) + 15):
            slot = f"siyu:engagement:sweeper:{n}"
            break
    if slot is None:
        return "enough sweepers"
    _sweeping_here = True
    try:
        if await redis.set("siyu:engagement:housekeeping", "1", nx=True, ex=HOUSEKEEPING_EVERY):
            await housekeeping(ctx)
        done = await sweep_once(runtime_of(ctx))
        return ", ".join(f"{k} {v}" for k, v in sorted(done.items()) if v) or "idle"
    finally:
        _sweeping_here = False
        # Redis away: the slot expires on its own (its TTL), and the worker says once that Redis is away.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await redis.delete(slot)


async def fan_out(ctx: dict[str, Any], tenant_id: int, broadcast_id: int) -> int:
    added = await broadcasts.fan_out(tenant_id, broadcast_id)
    if added and ctx.get("redis") is not None:
        await ctx["redis"].enqueue_job(SWEEP, _job_id=f"engagement:sweep:after-fanout:{broadcast_id}:{time.time():.0f}",
                                       _queue_name=lane.queue())
    return added


async def send_mass(ctx: dict[str, Any], tenant_id: int, batch_id: int) -> str:
    outcome = await mass.send(runtime_of(ctx), tenant_id, batch_id)
    if outcome == "open":  # the slot is still collecting: come back when it closes
        raise Retry(defer=mass.SLOT_SECONDS)
    return outcome


FOLLOW_KINDS = {"follow": "oa", "wecom_contact_added": "wecom"}


async def handle_inbound(ctx: dict[str, Any], event_ids: list[int]) -> int:
    """Follows start welcome journeys; WeChat's mass-send results land on their batches."""
    handled = 0
    try:
        for event in await load_normalized(event_ids):
            if event["kind"] in FOLLOW_KINDS and event["external_id"]:
                resolved = await resolve(event["tenant"], event["channel"], event["external_id"])
                handled += await triggers.on_follow(event["tenant"], resolved.contact_id, FOLLOW_KINDS[event["kind"]],
                                                    int(event["id"]), event["occurred_at"])
            elif event["kind"] == "mass_send_finished":
                handled += await mass.finished(event["tenant"], event["details"], event["occurred_at"])
    except Exception as exc:
        if "job_try" not in ctx:
            raise
        tries = int(ctx["job_try"])
        log.warning("engagement inbound %s failed (try %s): %r", event_ids[:5], tries, exc)
        raise Retry(defer=min(60, 2 ** tries)) from exc
    return handled


def _retry(ctx: dict[str, Any], what: str, exc: Exception) -> Retry:
    tries = int(ctx.get("job_try") or 1)
    log.warning("%s failed (try %s): %r", what, tries, exc)
    return Retry(defer=min(60, 2 ** tries))


async def on_purchase(ctx: dict[str, Any], tenant_id: int, purchase_id: int) -> int:
    """A purchase commerce has committed: conversions, then the purchase and replenishment journeys."""
    from siyu.engagement import purchases

    try:
        p = await purchases.facts(tenant_id, purchase_id)
        return await triggers.on_purchase(tenant_id, p) if p is not None else 0
    except Exception as exc:
        if "job_try" not in ctx:
            raise
        raise _retry(ctx, f"engagement purchase {purchase_id}", exc) from exc


async def on_refund(ctx: dict[str, Any], tenant_id: int, purchase_id: int, refund_row_id: int) -> int:
    """A refund commerce has committed (successful): the order's entries leave, refund journeys start."""
    from siyu.engagement import purchases

    try:
        r = await purchases.refund_facts(tenant_id, purchase_id, refund_row_id)
        if r is None or r.status != "success":
            return 0
        return await triggers.on_refund(tenant_id, r.contact_id, r.order_id, r.refund_id, r.skus,
                                        r.at or clock.now())
    except Exception as exc:
        if "job_try" not in ctx:
            raise
        raise _retry(ctx, f"engagement refund {refund_row_id}", exc) from exc


async def evaluate(ctx: dict[str, Any]) -> int:
    entered = 0
    for tenant_id, journey_id in await triggers.journeys_to_evaluate(clock.now(), EVALUATE_EVERY):
        journey = await journeys_svc.get_journey(tenant_id, journey_id)
        entered += await triggers.evaluate(tenant_id, journey)
    return entered
