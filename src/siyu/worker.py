"""The worker's composition root: arq `WorkerSettings` with every domain's jobs under stable names, and
`run()`, which keeps the worker going through Redis outages (`siyu worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from time import monotonic
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker as ArqWorker
from arq.worker import func, get_kwargs

from siyu.commerce import imports as commerce_imports
from siyu.commerce import jobs as commerce_jobs
from siyu.commerce import purchases as commerce_purchases
from siyu.contacts import audience as contact_audience
from siyu.contacts import bulk_tags as contact_bulk
from siyu.contacts import jobs as contact_jobs
from siyu.core import db, effects
from siyu.core.redis import JOB_SERIALIZATION, REDIS_DOWN, arq_pool, arq_settings
from siyu.core.settings import get_settings
from siyu.engagement import jobs as engagement_jobs
from siyu.engagement.lane import QUEUE as ENGAGEMENT_QUEUE
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox.scope import contact_scope
from siyu.segments import audience as segment_audience
from siyu.tenants import jobs as tenant_jobs
from siyu.wechat import jobs as wechat_jobs
from siyu.wechat import media as wechat_media
from siyu.wechat import services as wechat_services
from siyu.wechat.outbound import WeChatRuntime

log = logging.getLogger("siyu.worker")


async def startup(ctx: dict[str, Any]) -> None:
    from siyu.core.logs import configure_logging
    from siyu.core.settings import get_settings

    configure_logging(get_settings().log_level)
    engagement_jobs.quiet_sweep_logs()  # its every-second runs would drown the other jobs' lines
    await db.start_pool(min_size=1, max_size=16)
    commerce_purchases.install()  # merges carry purchases in this process
    contact_audience.install(segment_audience.COMPILER, contact_scope)  # bulk tagging: filters and scopes
    ctx["wechat"] = WeChatRuntime(ctx["redis"])
    effects.install(ctx["redis"])
    # The auto-reply rules and accounts this process keeps follow every change at once, as the web
    # processes' do: the inbox writes the Official Account's passive replies in the thread from the same
    # rules the gateway answered with.
    ctx["changes"] = db.Listener([db.ACCOUNTS_CHANGED, db.AUTO_REPLIES_CHANGED], wechat_services.on_change)
    await ctx["changes"].start()


async def shutdown(ctx: dict[str, Any]) -> None:
    if "changes" in ctx:
        await ctx["changes"].stop()
    await effects.flush()
    effects.uninstall(ctx.get("redis"))
    if "wechat" in ctx:
        await ctx["wechat"].close()
    await db.close_pool()


def redis_settings() -> RedisSettings:
    return arq_settings()


ENGAGEMENT_FUNCTIONS = [func(getattr(engagement_jobs, name.split(".")[1]), name=name, max_tries=tries)
                        for name, tries in engagement_jobs.TRIES.items()]
ENGAGEMENT_CRONS = [
    # Every second, at most two at a time (a Redis slot each): due sends go out within about a second.
    cron(engagement_jobs.sweep, name="cron:engagement.sweep", second=set(range(60)), run_at_startup=True, timeout=70),
    cron(engagement_jobs.evaluate, name="cron:engagement.evaluate", minute=set(range(0, 60, 5)), second={35},
         run_at_startup=False),
]

FUNCTIONS = [
    func(tenant_jobs.purge_expired_invitations, name="tenants.purge_expired_invitations", max_tries=3),
    # The sweeper's unit, queued under one id per event: no result is kept, or a run that failed (Redis or
    # PostgreSQL gone mid-job) would keep the sweeper from queueing that event again for `keep_result`.
    func(wechat_jobs.process_inbound, name="wechat.process_inbound", max_tries=5, keep_result=0),
    func(wechat_jobs.process_inbound_batch, name="wechat.process_inbound_batch", max_tries=5),
    func(wechat_jobs.sweep_inbound, name="wechat.sweep_inbound", max_tries=1),
    func(wechat_jobs.kf_sync, name="wechat.kf_sync", max_tries=5),
    func(wechat_jobs.resume_tenant, name=wechat_jobs.RESUME_JOB, max_tries=5),
    func(wechat_media.fetch_media, name=wechat_media.FETCH_JOB, max_tries=wechat_media.FETCH_TRIES),
    func(contact_jobs.resolve_inbound, name="contacts.resolve_inbound", max_tries=contact_jobs.RESOLVE_TRIES),
    func(contact_jobs.sweep_parked, name="contacts.sweep_parked", max_tries=1),
    func(contact_jobs.enrich_identity, name="contacts.enrich_identity", max_tries=8),
    func(contact_jobs.bulk_tag, name=contact_bulk.JOB, max_tries=contact_bulk.JOB_TRIES),
    func(contact_jobs.sweep_bulk, name=contact_bulk.SWEEP, max_tries=1),
    func(inbox_jobs.handle_inbound, name="inbox.handle_inbound", max_tries=5),
    func(inbox_jobs.send_message, name="inbox.send_message", max_tries=5),
    func(inbox_jobs.notify_customer, name="inbox.notify_customer", max_tries=3),
    func(inbox_jobs.bot_reply, name="inbox.bot_reply", max_tries=3),
    func(inbox_jobs.send_owner_task, name="inbox.send_owner_task", max_tries=5),
    func(inbox_jobs.send_template_notice, name="inbox.send_template_notice", max_tries=5),
    func(inbox_jobs.check_owner_task, name="inbox.check_owner_task", max_tries=1),
    func(inbox_jobs.media_ready, name="inbox.media_ready", max_tries=3),
    func(inbox_jobs.sla_check, name="inbox.sla_check", max_tries=3),
    func(inbox_jobs.drain, name="inbox.drain", max_tries=3),
    func(inbox_jobs.sweep, name="inbox.sweep", max_tries=1),
    func(commerce_jobs.process_pay_notification, name=commerce_jobs.PROCESS_PAY,
         max_tries=commerce_jobs.PROCESS_PAY_TRIES),
    func(commerce_jobs.process_pay_notifications, name=commerce_jobs.PROCESS_PAY_BATCH,
         max_tries=commerce_jobs.PROCESS_PAY_TRIES),
    func(commerce_jobs.sweep, name=commerce_jobs.SWEEP, max_tries=1),
    func(commerce_imports.run_import, name=commerce_imports.RUN_IMPORT, max_tries=commerce_imports.RUN_IMPORT_TRIES),
    func(commerce_imports.sweep_imports, name=commerce_imports.SWEEP_IMPORTS, max_tries=1),
    *ENGAGEMENT_FUNCTIONS,
]


class WorkerSettings:
    functions = FUNCTIONS
    cron_jobs = [
        cron(tenant_jobs.purge_expired_invitations, name="cron:tenants.purge_expired_invitations",
             hour={3}, minute={17}, run_at_startup=False),
        cron(wechat_jobs.sweep_inbound, name="cron:wechat.sweep_inbound", second={5}, run_at_startup=True),
        cron(contact_jobs.sweep_parked, name="cron:contacts.sweep_parked", second={40}, run_at_startup=True),
        cron(contact_jobs.sweep_bulk, name=f"cron:{contact_bulk.SWEEP}", second={45}, run_at_startup=True),
        cron(inbox_jobs.sweep, name="cron:inbox.sweep", second={20, 50}, run_at_startup=True),
        cron(commerce_jobs.sweep, name=f"cron:{commerce_jobs.SWEEP}", second={35}, run_at_startup=True),
        cron(commerce_imports.sweep_imports, name=f"cron:{commerce_imports.SWEEP_IMPORTS}", second={50},
             run_at_startup=True),
        *ENGAGEMENT_CRONS,  # build_worker leaves them to the engagement lane's worker when there is one
    ]
    job_serializer = JOB_SERIALIZATION["job_serializer"]
    job_deserializer = JOB_SERIALIZATION["job_deserializer"]
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 20
    job_timeout = 60
    keep_result = 3600
    # redis_settings is filled in by `siyu worker` (it depends on the environment).


class EngagementWorkerSettings(WorkerSettings):
    """`siyu worker --lane engagement`: re-engagement's sends on a queue of their own (SIYU_ENGAGEMENT_LANE=1),
    in a process niced further than the main worker, so broadcasts never take the CPU a rep's reply needs."""

    queue_name = ENGAGEMENT_QUEUE
    functions = ENGAGEMENT_FUNCTIONS
    cron_jobs = ENGAGEMENT_CRONS


# --- surviving Redis outages ---------------------------------------------------------------------------

OUTAGE_MAX_PAUSE = 5.0  # seconds between two polls of a Redis that does not answer
RESTART_MAX_PAUSE = 30.0  # seconds before the worker is built again after it stopped on an error


class Worker(ArqWorker):
    """arq's worker, made to ride out a Redis outage.

    arq ends its poll loop (and so the process) on the first connection error. Here a poll that cannot
    reach Redis is logged once per outage, waits (with a growing pause) and tries again; jobs already
    running carry on. A job whose result cannot be written when it ends keeps its claim until the claim
    expires and then runs again: every job is idempotent. Events stored while Redis was down are queued by
    the sweepers from PostgreSQL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage_since: float | None = None
        self.outages = 0  # outages ridden out (tests and the logs)
        self._failed_polls = 0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            await self._redis_down(exc)
            return
        if self.outage_since is not None:
            log.warning("Redis answers again after %.1f s; the worker carries on", monotonic() - self.outage_since)
            self.outage_since, self._failed_polls = None, 0

    async def _redis_down(self, exc: BaseException) -> None:
        self._failed_polls += 1
        if self.outage_since is None:
            self.outage_since = monotonic()
            self.outages += 1
            log.error("Redis does not answer (%s: %s): no new jobs until it does; running jobs carry on",
                      type(exc).__name__, exc)
        elif self._failed_polls % 20 == 0:
            log.warning("Redis still does not answer after %.0f s", monotonic() - self.outage_since)
        await asyncio.sleep(min(OUTAGE_MAX_PAUSE, 0.25 * 2 ** min(self._failed_polls, 5)))

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's claim of each job, one at a time: when Redis fails in the middle of a claim, arq keeps the
        slot it took for that job (its count of running jobs and a semaphore permit) and never gives it back,
        so after `max_jobs` such failures the worker would stop taking jobs for good. Give it back."""
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                self.job_counter -= 1
                self.sem.release()
                raise
            if self.job_counter >= self.max_jobs:
                return


POLL_DELAY = 0.5  # seconds between two polls of the queue (arq's default), varied per process


def build_worker(burst: bool = False, lane: str = "main", **overrides: Any) -> Worker:
    """The worker `siyu worker` runs: WorkerSettings (EngagementWorkerSettings for `--lane engagement`), the
    pool with timeouts, this process's job timeout."""
    settings = EngagementWorkerSettings if lane == "engagement" else WorkerSettings
    # arq reads only a class's own attributes: the lane's settings class inherits the rest from the main one.
    inherited = {k: getattr(settings, k) for k in dir(settings) if not k.startswith("_")}
    kwargs = {**get_kwargs(inherited), "job_timeout": get_settings().job_timeout, "burst": burst,
              # Each process polls at its own pace around arq's 0.5 s: a cron run (due on the second) goes to the
              # worker that polls first after it, and with equal paces that was always the same worker, so the
              # engagement sweepers all ran in one process while the lane's others stayed idle.
              "poll_delay": POLL_DELAY * random.uniform(0.8, 1.2), **overrides}
    # Read here, not when this module is imported (tests import it before they configure the environment).
    if lane != "engagement" and get_settings().engagement_lane:
        kwargs["cron_jobs"] = [c for c in kwargs["cron_jobs"] if c not in ENGAGEMENT_CRONS]
    return Worker(**kwargs)


CLOSE_WAIT_SECONDS = 5.0


async def _close(worker: Worker) -> None:
    """arq's `close`, minus its failures when Redis is down: cancel what runs (it runs again once its claim
    expires), forget the health key if Redis answers, shut down our resources, close the pool."""
    tasks = [t for t in worker.tasks.values() if not t.done()]
    for task in tasks:
        task.cancel()
    # A job that holds on after its cancellation (in a library's cleanup) is left behind, never waited on for
    # longer than this: the stop is what was asked for, and the job runs again once its claim expires.
    _, holding = await asyncio.wait(worker.tasks.values(), timeout=CLOSE_WAIT_SECONDS) if worker.tasks else ((), ())
    if holding:
        log.warning("%d job(s) still running %.0f s after their cancellation: stopping without them",
                    len(holding), CLOSE_WAIT_SECONDS)
    if worker._pool is not None:
        with contextlib.suppress(*REDIS_DOWN, TimeoutError):
            await asyncio.wait_for(worker.pool.delete(worker.health_check_key), CLOSE_WAIT_SECONDS)
    await shutdown(worker.ctx)
    if worker._pool is not None:
        await worker.pool.aclose()


async def run(burst: bool = False, lane: str = "main") -> None:
    """`siyu worker`: run the worker until SIGINT/SIGTERM (or, with `burst`, until the queue is empty).

    A Redis outage is ridden out inside the poll loop (`Worker`). Anything that still stops the worker
    (Redis down when it starts, an error arq does not catch) is logged, and the worker is built again after a
    pause that grows to RESTART_MAX_PAUSE: the process itself keeps going."""
    from siyu.core.logs import configure_logging
    from siyu.core.settings import get_settings

    configure_logging(get_settings().log_level)
    stopping = asyncio.Event()
    pause = 1.0
    while True:
        worker = build_worker(burst, lane, redis_pool=await arq_pool())
        worker.on_stop = lambda _sig: stopping.set()  # a stop signal also ends this loop
        started = monotonic()
        worker.main_task = asyncio.create_task(worker.main())  # what arq's signal handler cancels
        try:
            await worker.main_task
            return  # a burst that emptied the queue
        except asyncio.CancelledError:
            return  # SIGINT / SIGTERM
        except Exception as exc:
            if burst:
                raise
            if monotonic() - started > 60:
                pause = 1.0  # it ran for a while: this is a new problem, not the same one again
            log.error("the worker stopped (%s: %s); starting it again in %.0f s", type(exc).__name__, exc, pause)
        finally:
            await _close(worker)
        # Between two workers arq's signal handlers belong to the one that stopped: listen ourselves.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        if stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause)
        if stopping.is_set():
            return
        pause = min(RESTART_MAX_PAUSE, pause * 2)
