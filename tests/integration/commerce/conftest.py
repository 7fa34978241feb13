"""Commerce fixtures: acme with its Mini Program and WeChat Pay merchant linked (public-key mode, a key made
here), a sender that signs and encrypts notifications as WeChat Pay does, and a burst worker for the jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from siyu import worker as siyu_worker
from siyu.commerce import merchants
from siyu.commerce import purchases as commerce_purchases
from siyu.core import effects
from siyu.core.redis import JOB_SERIALIZATION, arq_pool
from siyu.tenants import services as tenants
from tests.conftest import MP, Client, TenantFixture
from tests.pay_payloads import APIV3_KEY, MCHID, Notification, PaySender, new_rsa_key, public_pem

ACTOR = tenants.Actor.cli()
PAY_KEY = new_rsa_key()  # made once per run: 2048-bit keys take a moment
OTHER_KEY = new_rsa_key()
PUB_KEY_ID = "PUB_KEY_ID_0119000001092024090100000001"
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture(autouse=True)
async def effects_pool(pool: None) -> AsyncIterator[Any]:
    arq = await arq_pool()
    effects.install(arq)
    commerce_purchases.install()
    yield arq
    await effects.flush()
    effects.uninstall(arq)
    await arq.aclose()


def pay_form(**over: str) -> dict[str, str]:
    return {"mch_id": MCHID, "app_id": MP["app_id"], "api_v3_key": APIV3_KEY, "public_key": public_pem(PAY_KEY),
            "public_key_id": PUB_KEY_ID, **over}


@pytest.fixture
async def paying(acme: TenantFixture) -> PaySender:
    """Acme with its Mini Program and WeChat Pay merchant linked; WeChat Pay's side of it."""
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    await merchants.do_link_pay(ACTOR, acme.id, pay_form())
    return PaySender(PAY_KEY, key_id=PUB_KEY_ID)


async def deliver(client: Client | httpx.AsyncClient, n: Notification, slug: str = "acme") -> httpx.Response:
    return await client.post(f"/wechat/{slug}/pay", content=n.body, headers=n.headers)


async def run_jobs() -> int:
    """Run every queued job with the worker's registered functions (a burst worker); raises if one failed.
    The Pay notifications' enqueues run after their answers: they are waited for first."""
    from siyu.core import groupcommit

    await groupcommit.settle()
    w = Worker(functions=siyu_worker.FUNCTIONS, redis_settings=siyu_worker.redis_settings(), burst=True,
               **JOB_SERIALIZATION, handle_signals=False, poll_delay=0.05)
    try:
        return await w.run_check()
    finally:
        await w.close()
