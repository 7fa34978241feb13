"""The worker's composition root: arq `WorkerSettings` with every domain's jobs under stable names."""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import func

from siyu.commerce import imports as commerce_imports
from siyu.commerce import jobs as commerce_jobs
from siyu.commerce import purchases as commerce_purchases
from siyu.contacts import jobs as contact_jobs
from siyu.core import db, effects
from siyu.core.redis import JOB_SERIALIZATION, arq_settings
from siyu.inbox import jobs as inbox_jobs
from siyu.tenants import jobs as tenant_jobs
from siyu.wechat import jobs as wechat_jobs
from siyu.wechat.outbound import WeChatRuntime


async def startup(ctx: dict[str, Any]) -> None:
    from siyu.core.logs import configure_logging
    from siyu.core.settings import get_settings

    configure_logging(get_settings().log_level)
    await db.start_pool(min_size=1, max_size=5)
    commerce_purchases.install()  # merges carry purchases in this process
    ctx["wechat"] = WeChatRuntime(ctx["redis"])
    effects.install(ctx["redis"])


async def shutdown(ctx: dict[str, Any]) -> None:
    await effects.flush()
    effects.uninstall(ctx.get("redis"))
    if "wechat" in ctx:
        await ctx["wechat"].close()
    await db.close_pool()


def redis_settings() -> RedisSettings:
    return arq_settings()


FUNCTIONS = [
    func(tenant_jobs.purge_expired_invitations, name="tenants.purge_expired_invitations", max_tries=3),
    func(wechat_jobs.process_inbound, name="wechat.process_inbound", max_tries=5),
    func(wechat_jobs.process_inbound_batch, name="wechat.process_inbound_batch", max_tries=5),
    func(wechat_jobs.sweep_inbound, name="wechat.sweep_inbound", max_tries=1),
    func(wechat_jobs.kf_sync, name="wechat.kf_sync", max_tries=5),
    func(contact_jobs.resolve_inbound, name="contacts.resolve_inbound", max_tries=contact_jobs.RESOLVE_TRIES),
    func(contact_jobs.sweep_parked, name="contacts.sweep_parked", max_tries=1),
    func(contact_jobs.enrich_identity, name="contacts.enrich_identity", max_tries=8),
    func(inbox_jobs.handle_inbound, name="inbox.handle_inbound", max_tries=5),
    func(inbox_jobs.send_message, name="inbox.send_message", max_tries=5),
    func(inbox_jobs.notify_customer, name="inbox.notify_customer", max_tries=3),
    func(inbox_jobs.bot_reply, name="inbox.bot_reply", max_tries=3),
    func(inbox_jobs.send_owner_task, name="inbox.send_owner_task", max_tries=5),
    func(inbox_jobs.send_template_notice, name="inbox.send_template_notice", max_tries=5),
    func(inbox_jobs.sla_check, name="inbox.sla_check", max_tries=3),
    func(inbox_jobs.drain, name="inbox.drain", max_tries=3),
    func(inbox_jobs.sweep, name="inbox.sweep", max_tries=1),
    func(commerce_jobs.process_pay_notification, name=commerce_jobs.PROCESS_PAY,
         max_tries=commerce_jobs.PROCESS_PAY_TRIES),
    func(commerce_jobs.sweep, name=commerce_jobs.SWEEP, max_tries=1),
    func(commerce_imports.run_import, name=commerce_imports.RUN_IMPORT, max_tries=commerce_imports.RUN_IMPORT_TRIES),
    func(commerce_imports.sweep_imports, name=commerce_imports.SWEEP_IMPORTS, max_tries=1),
]


class WorkerSettings:
    functions = FUNCTIONS
    cron_jobs = [
        cron(tenant_jobs.purge_expired_invitations, name="cron:tenants.purge_expired_invitations",
             hour={3}, minute={17}, run_at_startup=False),
        cron(wechat_jobs.sweep_inbound, name="cron:wechat.sweep_inbound", second={5}, run_at_startup=True),
        cron(contact_jobs.sweep_parked, name="cron:contacts.sweep_parked", second={40}, run_at_startup=True),
        cron(inbox_jobs.sweep, name="cron:inbox.sweep", second={20, 50}, run_at_startup=True),
        cron(commerce_jobs.sweep, name=f"cron:{commerce_jobs.SWEEP}", second={35}, run_at_startup=True),
        cron(commerce_imports.sweep_imports, name=f"cron:{commerce_imports.SWEEP_IMPORTS}", second={50},
             run_at_startup=True),
    ]
    job_serializer = JOB_SERIALIZATION["job_serializer"]
    job_deserializer = JOB_SERIALIZATION["job_deserializer"]
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 20
    job_timeout = 60
    keep_result = 3600
    # redis_settings is filled in by `siyu worker` (it depends on the environment).
