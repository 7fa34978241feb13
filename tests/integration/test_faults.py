"""A Redis or worker failure degrades Siyu, never stops it, and loses nothing.

Each test runs its own Valkey (as `make run` starts it: persistent, with a password), a web server and a
worker as real processes against the suite's PostgreSQL, and kills or freezes them for real (SIGKILL,
SIGSTOP); the suite's own Redis is not touched. The WeChat simulator pushes real signed callbacks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from redis import Redis

from siyu.core import db
from siyu.core.embedded import start_redis
from siyu.core.processes import stop_processes, wait_http
from siyu.tenants import services as tenants
from siyu.wechat.services import do_create_rule
from tests.conftest import MP, PASSWORD, Simulator, TenantFixture, _free_port

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

ACTOR = tenants.Actor.cli()
REPLY = "春季价目表已发送。"


@dataclass
class Stack:
    """Valkey, web and worker of one test, each killable and restartable."""

    directory: Path
    env: dict[str, str]
    base_url: str
    redis_url: str
    valkey: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[Any] | None = None
    worker: subprocess.Popen[Any] | None = None
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def redis_port(self) -> int:
        return int(urlsplit(self.redis_url).port or 0)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[Any]:
        log = self.logs.setdefault(name, Path(tempfile.mkstemp(prefix=f"siyu-faults-{name}-", suffix=".log")[1]))
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "siyu", *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env)

    def start_valkey(self) -> None:
        url, self.valkey = start_redis(self.directory / "valkey", persist=True, port=self.redis_port or None)
        assert url == self.redis_url or not self.redis_url
        self.redis_url = url

    def start_web(self) -> None:
        self.web = self._spawn("web", "web", "--host", "127.0.0.1", "--port", str(urlsplit(self.base_url).port),
                               "--workers", "1")
        if not wait_http(f"{self.base_url}/healthz", 60, [self.web]):
            raise RuntimeError(f"the web server did not start:\n{self.output('web')}")

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", "worker")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = getattr(self, name)
        assert proc is not None and proc.poll() is None, f"{name} is not running"
        os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=10)

    def output(self, name: str, whole: bool = False) -> str:
        path = self.logs.get(name)
        text = path.read_text(errors="replace") if path and path.exists() else ""
        return text if whole else text[-6000:]

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=5)


@pytest.fixture
def stack(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Stack]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**subprocess_env, "SIYU_PUBLIC_BASE_URL": base, "SIYU_LOG_LEVEL": "INFO",
           # A killed worker's claims expire after this + 10 s; then the jobs run again.
           "SIYU_JOB_TIMEOUT": "5"}
    s = Stack(tmp_path, env, base, "")
    s.start_valkey()
    env["REDIS_URL"] = s.redis_url
    try:
        s.start_web()
        s.start_worker()
        yield s
    finally:
        for name in ("valkey",):
            proc = getattr(s, name)
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen server cannot stop
        stop_processes([p for p in (s.worker, s.web, s.valkey) if p is not None], timeout=15)
        for log in s.logs.values():
            log.unlink(missing_ok=True)


def _link_mp(sim: Simulator, stack: Stack) -> str:
    sim.register("mp", MP["app_id"], MP["app_secret"], token=MP["token"], aes_key=MP["aes_key"],
                 callback_url=f"{stack.base_url}/wechat/acme/mp", message_mode="safe", push_format="json")
    return MP["app_id"]


@pytest.fixture
async def mp(acme: TenantFixture, sim: Simulator, stack: Stack) -> str:
    """The Mini Program, whose bot answers 价格 with a customer-service message (sent by the worker)."""
    await tenants.do_link_channel(ACTOR, acme.id, "mp", MP)
    await do_create_rule(ACTOR, acme.id, {"trigger": "keyword", "match_type": "contains", "keyword": "价格",
                                           "reply": REPLY})
    return _link_mp(sim, stack)


def _push(sim: Simulator, app_id: str, person: str) -> dict[str, Any]:
    return sim.push(app_id, person, "text", text="请问价格？", timeout_seconds=5)


def _answered_at_once(result: dict[str, Any]) -> bool:
    """Stored and answered on the first delivery: WeChat never had to retry."""
    return bool(result["delivered"]) and result["attempts"] == 1 and result["answer_status"] == 200 \
        and result["answer"] == "success"


async def _until(predicate: Any, seconds: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s\n--- worker ---\n{stack.output('worker')}"
                                 f"\n--- web ---\n{stack.output('web')}")
        await asyncio.sleep(0.5)


def _sign_in(stack: Stack, email: str) -> httpx.Client:
    c = httpx.Client(base_url=stack.base_url, headers={"Accept-Language": "en"}, timeout=10)
    c.get("/login")
    token = c.cookies["siyu_csrf"]
    r = c.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token})
    assert r.status_code == 302, r.text
    c.headers["x-csrftoken"] = token
    return c


async def test_killing_valkey_and_the_worker_during_traffic_loses_nothing_and_sends_nothing_twice(
        acme: TenantFixture, sim: Simulator, stack: Stack, mp: str) -> None:
    before = [_push(sim, mp, f"before{i:02d}") for i in range(6)]
    admin = _sign_in(stack, acme.admin_email)

    # Traffic goes on while Valkey and the worker are killed.
    during: list[dict[str, Any]] = []
    first_answered = threading.Event()

    def traffic() -> None:
        with ThreadPoolExecutor(4) as pool:
            for result in pool.map(lambda i: (_push(sim, mp, f"during{i:02d}"), time.sleep(0.05))[0], range(24)):
                during.append(result)
                first_answered.set()

    pusher = threading.Thread(target=traffic)
    pusher.start()
    try:
        assert first_answered.wait(30)
        stack.kill("valkey")
        stack.kill("worker")

        started = time.monotonic()
        ready = httpx.get(f"{stack.base_url}/readyz", timeout=10)
        assert time.monotonic() - started < 2
        assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
        # A page that needs the session store says so at once, in words; no 500, no hang.
        started = time.monotonic()
        page = admin.get("/settings/channels/")
        assert time.monotonic() - started < 3
        assert page.status_code == 503 and "cannot reach Redis" in page.text
    finally:
        pusher.join(timeout=120)
    assert len(during) == 24
    waiting = await db.fetchrow("SELECT count(*) AS n FROM wechat_inbound_event WHERE processed_at IS NULL")
    assert waiting["n"] >= 10  # stored while nothing could queue them: only PostgreSQL has them

    stack.start_valkey()
    # The sweeper waits SWEEP_AFTER_SECONDS before it takes an event nobody queued (its normal path might
    # still be on the way); let that time pass for the events stored during the outage.
    await db.execute("UPDATE wechat_inbound_event SET received_at = received_at - interval '60 seconds' "
                     "WHERE processed_at IS NULL")
    stack.start_worker()  # its sweeper runs at start
    after = [_push(sim, mp, f"after{i:02d}") for i in range(6)]

    pushes = before + during + after
    assert all(_answered_at_once(r) for r in pushes), [r for r in pushes if not _answered_at_once(r)][:3]

    async def all_processed() -> bool:
        row = await db.fetchrow("SELECT count(*) AS n, count(processed_at) AS done FROM wechat_inbound_event")
        return bool(row["n"] == len(pushes) and row["done"] == row["n"])

    await _until(all_processed, 60, "every stored callback processed", stack)

    def replied() -> Counter[str]:
        return Counter(m["person"] for m in sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send"))

    async def all_answered() -> bool:
        settled = await db.fetchrow("SELECT count(*) AS n FROM wechat_outbound WHERE state NOT IN ('sent', 'unknown')")
        return settled["n"] == 0 and sum(replied().values()) + await _unknown() >= len(pushes)

    await _until(all_answered, 60, "every customer answered (or the send recorded as unknown)", stack)
    await asyncio.sleep(1)  # a second copy would have had its chance

    # Every callback stored once and processed exactly once, each on the timeline once, in the inbox once.
    events = await db.fetch("SELECT id, attempts, processed_at FROM wechat_inbound_event")
    assert len(events) == len(pushes)
    assert {r["attempts"] for r in events} == {1}
    on_timeline = await db.fetch("SELECT source_key, count(*) AS n FROM timeline_event GROUP BY source_key")
    assert {r["source_key"] for r in on_timeline} >= {f"wechat:{r['id']}" for r in events}
    assert {r["n"] for r in on_timeline} == {1}
    inbound = await db.fetchrow("SELECT count(*) AS n FROM inbox_message WHERE direction = 'in'")
    assert inbound["n"] == len(pushes)

    # Nothing sent twice: one reply per customer; a send the killed worker left in the middle is "unknown",
    # never sent again by itself.
    copies = replied()
    assert max(copies.values()) == 1, copies.most_common(3)
    assert len(copies) + await _unknown() == len(pushes)
    assert "Redis does not answer" not in stack.output("web")  # the web never needed it to answer callbacks
    admin.close()


async def _unknown() -> int:
    row = await db.fetchrow("SELECT count(*) AS n FROM wechat_outbound WHERE state = 'unknown'")
    return int(row["n"])


async def test_the_worker_rides_out_a_redis_outage_without_restarting(
        acme: TenantFixture, sim: Simulator, stack: Stack, mp: str) -> None:
    """arq's worker ends on the first connection error; ours waits for Redis and carries on."""
    assert _answered_at_once(_push(sim, mp, "first"))

    def answered() -> int:
        return len(sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send"))

    async def first_answered() -> bool:
        return answered() == 1

    await _until(first_answered, 30, "the first customer answered", stack)
    worker = stack.worker
    assert worker is not None
    stack.kill("valkey")
    time.sleep(3)  # several polls fail
    assert worker.poll() is None, stack.output("worker")
    stack.start_valkey()
    assert _answered_at_once(_push(sim, mp, "second"))

    async def both_answered() -> bool:
        return answered() == 2

    await _until(both_answered, 45, "both customers answered by the same worker", stack)
    assert worker.poll() is None
    log = stack.output("worker", whole=True)
    assert "Redis does not answer" in log and "Redis answers again" in log


async def test_a_frozen_redis_is_named_by_readyz_and_pages_answer_with_an_error(
        acme: TenantFixture, stack: Stack) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP): every client gives up within its timeout."""
    admin = _sign_in(stack, acme.admin_email)
    anonymous = httpx.Client(base_url=stack.base_url, headers={"Accept-Language": "en"}, timeout=30)
    anonymous.get("/login")
    csrf = anonymous.cookies["siyu_csrf"]
    stack.kill("valkey", signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = anonymous.get("/readyz")
        assert time.monotonic() - started < 2
        assert r.status_code == 503, r.text
        assert r.json()["failed"] == ["redis"] and r.json()["checks"]["postgres"] == "ok"

        for client, method, url, data in [
            (admin, "GET", "/settings/channels/", None),
            (admin, "GET", "/inbox", None),
            (anonymous, "POST", "/login", {"email": acme.admin_email, "password": PASSWORD, "_csrf_token": csrf}),
        ]:
            started = time.monotonic()
            r = client.request(method, url, data=data)
            assert time.monotonic() - started < 5, url  # the client's timeout (2 s), not a hang
            assert r.status_code == 503, (url, r.status_code, r.text[:300])
            assert "cannot reach Redis" in r.text and r.headers.get("retry-after") == "30"
        chinese = anonymous.post("/login", data={"email": "x@y.z", "password": "p", "_csrf_token": csrf},
                                 headers={"Accept-Language": "zh-CN"})
        assert chinese.status_code == 503 and "无法连接 Redis" in chinese.text
        assert anonymous.get("/login").status_code == 200  # the sign-in page itself needs no Redis
        assert anonymous.get("/healthz").status_code == 200
    finally:
        os.kill(stack.valkey.pid, signal.SIGCONT)  # type: ignore[union-attr]
    assert anonymous.get("/readyz").status_code == 200
    assert admin.get("/settings/channels/").status_code == 200
    assert stack.worker is not None and stack.worker.poll() is None
    admin.close()
    anonymous.close()


# --- the worker's own bookkeeping ------------------------------------------------------------------------

@pytest.fixture
async def own_valkey(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    url, proc = start_redis(tmp_path / "valkey", persist=False)
    assert proc is not None
    yield url, proc
    stop_processes([proc], timeout=10)


async def test_a_claim_cut_short_by_redis_gives_its_slot_back(own_valkey: tuple[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """arq takes a slot (its count of running jobs, a semaphore permit) before it claims a job in Redis and
    does not give it back when the claim fails on a connection error: after `max_jobs` failed claims the
    worker would never take a job again."""
    from siyu import worker as worker_root
    from siyu.core.redis import REDIS_DOWN, arq_pool
    from siyu.core.settings import reset_settings

    url, proc = own_valkey
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()
    pool = await arq_pool()
    w = worker_root.build_worker(redis_pool=pool, handle_signals=False, max_jobs=2)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for _ in range(5):
            with pytest.raises(REDIS_DOWN):
                await w.start_jobs([b"some-job"])
        assert w.job_counter == 0
        assert w.sem._value == w.max_jobs + 1  # every permit back
    finally:
        await pool.aclose()
        monkeypatch.undo()
        reset_settings()


# --- the sweeper after a failed run ---------------------------------------------------------------------

async def test_the_sweeper_queues_an_event_again_after_its_job_failed(acme: TenantFixture, client: Any, app: Any,
                                                                      redis: Any) -> None:
    """A per-event job that failed (here: handed something it cannot read) must not keep the sweeper from
    queueing that event again: arq refuses a job id while a result is kept under it."""
    from siyu.core.redis import arq_pool
    from siyu.wechat.jobs import sweep_inbound
    from tests.conftest import OA
    from tests.integration.wechat.test_inbound_jobs import run_worker
    from tests.wechat_payloads import Sender, text

    await tenants.do_link_channel(ACTOR, acme.id, "oa", OA)

    async def redis_down(ids: list[int]) -> None:
        raise ConnectionError("redis down")

    real, app.state.ingestor._enqueue = app.state.ingestor._enqueue, redis_down
    try:
        cb = Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe").callback(text("oLate", "hi", 1))
        assert (await client.post(cb.url, content=cb.body)).text == "success"
        await app.state.ingestor.settle()
    finally:
        app.state.ingestor._enqueue = real
    [event] = await db.fetch("SELECT id FROM wechat_inbound_event")
    await db.execute("UPDATE wechat_inbound_event SET received_at = now() - interval '5 minutes'")
    pool = await arq_pool()
    try:
        await pool.enqueue_job("wechat.process_inbound", "not an id", _job_id=f"wechat.inbound:{event['id']}")
        failed = await run_worker()
        assert failed.jobs_failed == 1
        assert await sweep_inbound({"redis": pool}) == 1
        assert await redis.exists(f"arq:job:wechat.inbound:{event['id']}")  # queued again
    finally:
        await pool.aclose()
    await run_worker()
    row = await db.fetchrow("SELECT processed_at, attempts FROM wechat_inbound_event WHERE id = $1", event["id"])
    assert row["processed_at"] is not None and row["attempts"] == 1


async def test_the_web_starts_while_redis_is_down_and_goes_live_when_it_returns(
        acme: TenantFixture, sim: Simulator, stack: Stack, mp: str) -> None:
    """A web process (re)started during a Redis outage serves from PostgreSQL, and its live inbox subscribes
    once Redis is back (it used to fail its start on the pub/sub subscription)."""
    stack.kill("web", signal.SIGTERM)  # granian's own stop (SIGKILL would leave its worker child serving)
    assert stack.web is not None
    stack.web.wait(timeout=30)
    stack.kill("valkey")
    stack.start_web()  # waits for /healthz
    ready = httpx.get(f"{stack.base_url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
    assert _answered_at_once(_push(sim, mp, "while-down"))  # stored in PostgreSQL and acknowledged
    assert "live updates wait for it" in stack.output("web", whole=True)

    stack.start_valkey()
    deadline = time.monotonic() + 20
    while httpx.get(f"{stack.base_url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.5)
    agent = _sign_in(stack, acme.agent_email)
    started = time.monotonic()
    with agent.stream("GET", "/inbox/stream", timeout=15) as live:
        assert live.status_code == 200
        for line in live.iter_lines():
            if line.startswith("event: ready"):
                break
            assert time.monotonic() - started < 15, "the live inbox never subscribed"

    async def answered() -> bool:
        return len(sim.messages(app_id=mp, endpoint="cgi-bin/message/custom/send")) == 1

    # The sweeper queues what the web could not: it takes events older than 30 s, once a minute in the worker;
    # run here on an aged event, so the test does not wait for its minute.
    from arq.connections import ArqRedis

    from siyu.core.redis import JOB_SERIALIZATION
    from siyu.wechat.jobs import sweep_inbound

    await db.execute("UPDATE wechat_inbound_event SET received_at = now() - interval '5 minutes' "
                     "WHERE processed_at IS NULL")
    pool = ArqRedis.from_url(stack.redis_url)
    pool.job_serializer = JOB_SERIALIZATION["job_serializer"]
    pool.job_deserializer = JOB_SERIALIZATION["job_deserializer"]
    try:
        await sweep_inbound({"redis": pool})  # (the worker's own sweep may have queued it already: arq keeps one)
    finally:
        await pool.aclose()
    await _until(answered, 60, "the customer who wrote while Redis was away answered once", stack)
