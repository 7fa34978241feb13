"""Live updates stop when access stops: `/inbox/stream`, served by the real web server (granian), ends
within 2 s of the session's sign-out, of a password change, and of the staff member's deactivation; a
stream of someone else keeps going meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, TenantFixture, WebServer
from tests.integration.inbox.test_live import sign_in

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

DEADLINE = 2.0


class Stream:
    """One open `GET /inbox/stream`; `ended` is set when the server ends the response."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> Stream:
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", "/inbox/stream", timeout=httpx.Timeout(10, read=120)) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line.startswith("event: ready"):
                        self.ready.set()
        finally:
            self.ended.set()

    async def ends_within(self, seconds: float) -> float:
        started = time.monotonic()
        await asyncio.wait_for(self.ended.wait(), seconds)
        return time.monotonic() - started

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@pytest.fixture
async def streams() -> Any:
    opened: list[Stream] = []
    clients: list[httpx.AsyncClient] = []

    async def open_for(base: str, email: str) -> tuple[httpx.AsyncClient, Stream]:
        client = await sign_in(base, email)
        clients.append(client)
        stream = await Stream(client).open()
        opened.append(stream)
        return client, stream

    yield open_for
    for s in opened:
        await s.close()
    for c in clients:
        await c.aclose()


async def test_signing_out_ends_the_stream(acme: TenantFixture, web_server: WebServer, streams: Any) -> None:
    agent, stream = await streams(web_server.base_url, acme.agent_email)
    _, bystander = await streams(web_server.base_url, acme.admin_email)

    r = await agent.post("/logout")
    assert r.status_code == 302
    assert await stream.ends_within(DEADLINE) < DEADLINE
    assert not bystander.ended.is_set()


async def test_a_password_change_ends_every_stream_of_the_person(acme: TenantFixture, web_server: WebServer,
                                                                 streams: Any) -> None:
    here, own = await streams(web_server.base_url, acme.agent_email)
    _, elsewhere = await streams(web_server.base_url, acme.agent_email)  # another browser of theirs
    _, bystander = await streams(web_server.base_url, acme.admin_email)

    r = await here.post("/account/password", data={"current_password": PASSWORD, "new_password": "a new horse 42",
                                                    "confirm_password": "a new horse 42"})
    assert r.status_code == 200, r.text
    await asyncio.gather(own.ends_within(DEADLINE), elsewhere.ends_within(DEADLINE))
    assert not bystander.ended.is_set()
    # The browser that changed it carries on with its new session: a new stream opens.
    again = await Stream(here).open()
    await again.close()


async def test_deactivation_ends_the_stream(acme: TenantFixture, web_server: WebServer, streams: Any) -> None:
    _, stream = await streams(web_server.base_url, acme.agent_email)
    admin, bystander = await streams(web_server.base_url, acme.admin_email)

    r = await admin.post(f"/settings/staff/{acme.agent_id}", data={"role": "agent", "name": "Gone",
                                                                    "max_concurrent": "5", "is_active": ""})
    assert r.status_code in (200, 303), r.text
    assert await stream.ends_within(DEADLINE) < DEADLINE
    assert not bystander.ended.is_set()
