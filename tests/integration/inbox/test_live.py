"""The live inbox: Redis pub/sub → each web process → the browsers whose scope includes the conversation.

In-process: the relay's fan-out rules (scope, the previous assignee, the team that saw it waiting), one
subscription per tenant per process, heartbeats, and the unsubscribe when the last viewer leaves. Across
processes: two real web servers (granian) share Redis; an SSE client on one hears a change made through
the other and one made by a service call in this process, and disconnecting unsubscribes the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siyu.core import db
from siyu.core.redis import connect
from siyu.inbox import actions, live
from siyu.inbox.conversations import Viewer, live_channel
from siyu.inbox.handoff import do_handoff
from siyu.tenants import staff as staff_svc
from tests.conftest import PASSWORD, TenantFixture, WebServer, _free_port, _wait_http
from tests.integration.inbox.conftest import ACTOR, MakePerson, MakeRep, email_of, viewer

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


def v(staff_id: int, teams: tuple[int, ...] = (), managed: tuple[int, ...] = (), members: tuple[int, ...] = (),
      admin: bool = False) -> Viewer:
    return Viewer(staff_id, f"staff {staff_id}", admin, teams, managed, members)


def change(event: str, status: str, assignee: int | None, teams: list[int], previous: int | None = None) -> dict[str, Any]:
    return {"conversation": 7, "event": event, "status": status, "assignee": assignee, "teams": teams,
            "previous_assignee": previous}


def test_who_hears_about_a_change() -> None:
    rep_a, rep_b, rep_c = v(1, (10,)), v(2, (10,)), v(3, (20,))
    manager = v(4, (10,), managed=(10,), members=(1, 2))
    admin = v(5, admin=True)
    waiting = change("status:queued", "queued", None, [10])
    assert [live.reaches(x, waiting) for x in (rep_a, rep_b, rep_c, manager, admin)] == [True, True, False, True, True]
    # B takes it: A (who saw it waiting) drops it, C never saw it.
    taken = change("status:assigned", "assigned", 2, [10])
    assert [live.reaches(x, taken) for x in (rep_a, rep_b, rep_c, manager, admin)] == [True, True, False, True, True]
    # A new message in B's conversation: B, the manager, the admin; not A any more.
    message = change("message", "assigned", 2, [10])
    assert [live.reaches(x, message) for x in (rep_a, rep_b, rep_c, manager, admin)] == [False, True, False, True, True]
    # Reassigned from B to C (team 20): B hears it to drop it, and so does B's manager.
    moved = change("status:assigned", "assigned", 3, [20], previous=2)
    assert [live.reaches(x, moved) for x in (rep_a, rep_b, rep_c, manager, admin)] == [False, True, True, True, True]
    # Presence reaches the person's own tabs only.
    presence = {"event": "presence", "staff": 1, "presence": "away"}
    assert [live.reaches(x, presence) for x in (rep_a, rep_b, admin)] == [True, False, False]
    assert live.for_browser(moved) == ("conversation", json.dumps({"id": 7, "kind": "status"}))
    assert live.for_browser(change("sent:99", "assigned", 2, [10])) == ("conversation", '{"id": 7, "kind": "sent"}')
    # Alerts: C is told about the conversation newly given to her, B about a customer's message in his; nobody
    # about their own reply, a note, or a snooze waking up (it was theirs already).
    assert live.for_browser(moved, rep_c) == ("conversation", json.dumps({"id": 7, "kind": "status",
                                                                          "alert": "assigned"}))
    assert live.for_browser(moved, manager) == ("conversation", json.dumps({"id": 7, "kind": "status"}))
    customer = change("message:in", "assigned", 2, [10])
    assert [live.alert_for(x, customer) for x in (rep_a, rep_b, manager)] == [None, "message", None]
    woke = change("status:assigned", "assigned", 2, [10], previous=2)
    assert [live.alert_for(x, m) for x in (rep_b,) for m in (message, woke, change("note", "assigned", 2, [10]))] \
        == [None, None, None]


@pytest.fixture
async def relay() -> AsyncIterator[live.Relay]:
    redis = connect()
    r = live.Relay(redis)
    await r.start()
    yield r
    await r.stop()
    await redis.aclose()


async def subscribers(redis: Any, tenant_id: int) -> int:
    [(_, n)] = await redis.pubsub_numsub(live_channel(tenant_id))
    return int(n)


async def next_event(stream: AsyncIterator[tuple[str | None, str]], seconds: float = 5) -> tuple[str | None, str]:
    while True:
        name, data = await asyncio.wait_for(anext(stream), seconds)
        if name is not None:
            return name, data


async def test_the_relay_fans_out_by_scope_and_unsubscribes(acme: TenantFixture, relay: live.Relay, redis: Any,
                                                            make_rep: MakeRep, make_person: MakePerson) -> None:
    team = await staff_svc.do_create_team(ACTOR, acme.id, "Desk")
    a = await make_rep("A", teams=(team,), online=False)
    b = await make_rep("B", teams=(team,), online=False)
    outsider = await make_rep("Outsider", online=False)
    streams = {name: live.stream(relay, acme.id, await viewer(acme.id, who), heartbeat=0.2)
               for name, who in (("a", a), ("b", b), ("out", outsider))}
    for s in streams.values():
        assert await next_event(s) == ("ready", "{}")
    assert await subscribers(redis, acme.id) == 1  # one subscription for the process, three listeners
    assert relay.listeners(acme.id) == 3

    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)  # nobody online: queued, for everyone (no team rules)
    assert conv["status"] == "queued"
    for name in ("a", "b", "out"):  # no team claims it, so it waits for everyone
        assert await next_event(streams[name]) == ("conversation", json.dumps({"id": conv["id"], "kind": "status"}))
    await db.execute("UPDATE inbox_conversation SET teams = $2 WHERE id = $1", conv["id"], [team])
    await actions.do_assign(acme.id, await viewer(acme.id, acme.admin_id), conv["id"], a)
    # A has it (and is alerted: it is new work for her); B saw it waiting in the team's queue.
    assert (await next_event(streams["a"]))[1] == json.dumps({"id": conv["id"], "kind": "status", "alert": "assigned"})
    assert (await next_event(streams["b"]))[1] == json.dumps({"id": conv["id"], "kind": "status"})
    await actions.do_note(acme.id, await viewer(acme.id, a), conv["id"], "a note")
    assert (await next_event(streams["a"]))[1] == json.dumps({"id": conv["id"], "kind": "note"})
    # B and the outsider heard nothing more: only keep-alives.
    for name in ("b", "out"):
        assert await asyncio.wait_for(anext(streams[name]), 2) == (None, "keep-alive")

    # A gives it to B: A hears it (to drop it), B (to show it).
    await actions.do_assign(acme.id, await viewer(acme.id, a), conv["id"], b)
    assert (await next_event(streams["a"]))[0] == "conversation"
    assert (await next_event(streams["b"]))[0] == "conversation"

    for s in streams.values():
        await s.aclose()  # what a disconnect does
    assert relay.listeners(acme.id) == 0
    for _ in range(50):
        if await subscribers(redis, acme.id) == 0:
            break
        await asyncio.sleep(0.05)
    assert await subscribers(redis, acme.id) == 0


async def test_a_slow_browser_is_told_to_resync(acme: TenantFixture, relay: live.Relay, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    monkeypatch.setattr(live, "QUEUE_SIZE", 3)
    admin = await viewer(acme.id, acme.admin_id)
    s = live.stream(relay, acme.id, admin)
    assert await next_event(s) == ("ready", "{}")
    for n in range(6):
        await redis_publish(acme.id, {"conversation": n, "event": "message", "status": "queued", "assignee": None,
                                      "teams": []})
    await asyncio.sleep(0.3)
    assert await next_event(s) == ("resync", "{}")
    await s.aclose()


async def test_a_stopping_relay_waits_until_its_streams_are_written_to_the_end(acme: TenantFixture) -> None:
    """The ASGI server runs a web process's event loop only while the app stops: a stream response still being
    written when the relay's stop returns would never end, and the server would wait for it forever."""
    from types import SimpleNamespace

    redis = connect()
    relay = live.Relay(redis)
    await relay.start()
    admin = await viewer(acme.id, acme.admin_id)
    written: list[str] = []

    async def response(scope: Any, receive: Any, send: Any) -> None:  # the stream route, as the server runs it
        async for name, _ in live.stream(relay, acme.id, admin):
            written.append(str(name))
        await asyncio.sleep(0.5)  # the last bytes reach the server a while after the stream ended
        written.append("end")

    app = live.counted(response)
    task = asyncio.create_task(app({"app": SimpleNamespace(state=SimpleNamespace(inbox_relay=relay))}, None, None))
    try:
        for _ in range(100):
            if written:
                break
            await asyncio.sleep(0.05)
        assert written == ["ready"]
        await relay.stop(wait=5)
        assert written == ["ready", "end"]  # the stop waited for the whole response
        assert task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()


async def test_a_stopping_relay_waits_no_longer_than_its_limit(acme: TenantFixture) -> None:
    import time

    redis = connect()
    relay = live.Relay(redis)
    await relay.start()
    relay.response_started()  # a response that never ends
    started = time.monotonic()
    await relay.stop(wait=0.5)
    assert 0.4 < time.monotonic() - started < 3
    await redis.aclose()


async def redis_publish(tenant_id: int, message: dict[str, Any]) -> None:
    client = connect()
    try:
        await client.publish(live_channel(tenant_id), json.dumps(message))
    finally:
        await client.aclose()


# --- two web processes ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_web_servers() -> Iterator[list[WebServer]]:
    """Two `siyu web` processes (granian) on their own ports, sharing the suite's database and Redis."""
    from siyu.core.processes import stop_processes

    procs, servers = [], []
    try:
        for _ in range(2):
            port = _free_port()
            fd, name = tempfile.mkstemp(prefix="siyu-live-web-", suffix=".log")
            env = {**os.environ, "SIYU_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
            proc = subprocess.Popen([sys.executable, "-m", "siyu", "web", "--host", "127.0.0.1", "--port", str(port),
                                     "--workers", "1"], stdout=fd, stderr=subprocess.STDOUT, env=env)
            os.close(fd)
            procs.append(proc)
            servers.append(WebServer(f"http://127.0.0.1:{port}", port, Path(name)))
        for server, proc in zip(servers, procs, strict=True):
            try:
                _wait_http(f"{server.base_url}/healthz", proc, seconds=60)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; server output:\n{server.log.read_text(errors='replace')}") from exc
        yield servers
    finally:
        stop_processes(procs, timeout=15)
        for server in servers:
            server.log.unlink(missing_ok=True)


async def sign_in(base: str, email: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=base, headers={"Accept-Language": "en"}, timeout=10)
    await c.get("/login")
    token = c.cookies["siyu_csrf"]
    r = await c.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token})
    assert r.status_code == 302, r.text
    c.headers["x-csrftoken"] = token
    return c


class SseClient:
    """Reads `GET /inbox/stream` of one server as one signed-in person."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.comments = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())
        assert await self.next(10) == ("ready", "{}")

    async def _read(self) -> None:
        async with self.client.stream("GET", "/inbox/stream", timeout=httpx.Timeout(10, read=60)) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            name, data = "message", []
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    await self.events.put((name, "\n".join(data)))
                    name, data = "message", []

    async def next(self, seconds: float = 10) -> tuple[str, str]:
        return await asyncio.wait_for(self.events.get(), seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def test_a_change_through_one_web_process_reaches_a_browser_on_the_other(
        acme: TenantFixture, two_web_servers: list[WebServer], make_rep: MakeRep, make_person: MakePerson,
        redis: Any) -> None:
    one, two = two_web_servers
    rep = await make_rep("Li Na", online=False)
    other_rep = await make_rep("Wang Wu", online=False)
    rep_email, other_email = await email_of(rep), await email_of(other_rep)
    identity, _ = await make_person()
    conv = await do_handoff(acme.id, identity)
    await actions.do_assign(acme.id, await viewer(acme.id, acme.admin_id), conv["id"], other_rep)

    rep_on_one = await sign_in(one.base_url, rep_email)
    admin_on_two = await sign_in(two.base_url, acme.admin_email)
    other_on_two = await sign_in(two.base_url, other_email)
    listening = SseClient(rep_on_one)
    bystander = SseClient(other_on_two)
    try:
        await listening.start()
        await bystander.start()
        assert await subscribers(redis, acme.id) == 2  # one per web process

        # The admin, on the other process, gives Wang Wu's conversation to Li Na.
        r = await admin_on_two.post(f"/inbox/conversations/{conv['id']}/transfer", data={"to": f"staff:{rep}"},
                                    headers={"HX-Request": "true"})
        assert r.status_code == 200, r.text
        assert await listening.next() == ("conversation", json.dumps({"id": conv["id"], "kind": "status",
                                                                       "alert": "assigned"}))
        assert await bystander.next() == ("conversation", json.dumps({"id": conv["id"], "kind": "status"}))
        # Li Na's browser re-fetches the row from her server: it is hers now.
        row = await rep_on_one.get(f"/inbox/conversations/{conv['id']}/row?box=mine",
                                   headers={"HX-Request": "true"})
        assert row.status_code == 200 and f'id="conv-row-{conv["id"]}"' in row.text

        # A service call in this process (a worker would do the same): a new customer, Li Na online.
        await actions.do_set_presence(acme.id, rep, "online", ACTOR)
        assert (await listening.next())[0] == "presence"
        identity2, _ = await make_person()
        second = await do_handoff(acme.id, identity2)
        assert second["assignee"] == rep
        # Queued (for everyone: no team rules), then assigned to Li Na, both announced after the commit.
        assert await listening.next() == ("conversation", json.dumps({"id": second["id"], "kind": "status"}))
        assert await listening.next() == ("conversation", json.dumps({"id": second["id"], "kind": "status",
                                                                       "alert": "assigned"}))
        # A note in Li Na's conversation is nothing Wang Wu may know about.
        await asyncio.sleep(0.5)
        while not bystander.events.empty():
            bystander.events.get_nowait()
        await actions.do_note(acme.id, await viewer(acme.id, rep), second["id"], "between us")
        assert await listening.next() == ("conversation", json.dumps({"id": second["id"], "kind": "note"}))
        with pytest.raises(TimeoutError):
            await bystander.next(1.5)
    finally:
        await listening.close()
        await bystander.close()
        for c in (rep_on_one, admin_on_two, other_on_two):
            await c.aclose()
    # Both servers noticed the disconnects and left the channel.
    for _ in range(100):
        if await subscribers(redis, acme.id) == 0:
            break
        await asyncio.sleep(0.1)
    assert await subscribers(redis, acme.id) == 0


async def test_a_web_process_stops_at_once_with_browsers_connected(acme: TenantFixture) -> None:
    """An event stream never ends by itself, and the server waits for open requests before it stops: the relay
    ends the streams when the process is told to stop (the browsers reconnect elsewhere)."""
    import signal
    import time

    from siyu.core.processes import stop_processes

    port = _free_port()
    # The server's output goes to a file, with every thread's stack (faulthandler) if it has to be aborted:
    # a stop that hangs names where it hangs.
    env = {**os.environ, "SIYU_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "PYTHONFAULTHANDLER": "1",
           "GRANIAN_LOG_LEVEL": "debug"}
    output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen([sys.executable, "-m", "siyu", "web", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2"], env=env, stdout=output, stderr=subprocess.STDOUT,
                            start_new_session=True)
    client = None
    try:
        await asyncio.to_thread(_wait_http, f"http://127.0.0.1:{port}/healthz", proc, 60)
        client = await sign_in(f"http://127.0.0.1:{port}", acme.admin_email)
        streams = [SseClient(client), SseClient(client)]
        for s in streams:
            await s.start()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGABRT)
            await asyncio.sleep(2)
            output.seek(0)
            pytest.fail("the web process did not stop within 20 s; its output:\n"
                        + output.read().decode(errors="replace")[-20000:])
        assert code == 0
        assert time.monotonic() - started < 10
        for s in streams:
            await s.close()
    finally:
        output.close()
        if client is not None:
            await client.aclose()
        stop_processes([proc], timeout=5)
        # Under heavy load a granian worker has once outlived its exited server: end the whole session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
