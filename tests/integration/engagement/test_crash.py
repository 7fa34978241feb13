"""Exactly once, whatever fails: a real worker (`python -m siyu worker`, its crons included) is killed with
SIGKILL in the middle of a paced broadcast and Redis is flushed (every queued and deferred job gone); a new
worker takes over from PostgreSQL alone. Afterwards every person has exactly one ledger row and the simulated
WeChat accepted at most one message for each of them: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from siyu.core import db
from siyu.engagement import broadcasts, jobs
from siyu.segments import services as segments
from siyu.wechat import outbound
from siyu.wechat.outbound import WeChatRuntime
from tests.conftest import OA
from tests.integration.engagement.conftest import ACTOR, World, rows

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
CUSTOM = "cgi-bin/message/custom/send"
PEOPLE = 40


def start_worker(log: Path) -> subprocess.Popen[Any]:
    env = {**os.environ, "SIYU_ENGAGEMENT_LEASE_SECONDS": "3", "SIYU_WORKER_NICE": "0"}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "siyu", "worker"], stdout=fh, stderr=subprocess.STDOUT, env=env)


async def wait_for(condition: Any, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s; worker log:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.2)


async def states(tenant_id: int) -> Counter[str]:
    return Counter({r["state"]: int(r["n"]) for r in await db.fetch(
        "SELECT state, count(*) AS n FROM engagement_delivery WHERE tenant = $1 GROUP BY state", tenant_id)})


async def test_kill_9_and_flushall_in_the_middle_of_a_broadcast(world: World, redis: Any, runtime: WeChatRuntime) -> None:
    tid = world.tenant.id
    people = [await world.person(f"c{n:02d}", window=True) for n in range(PEOPLE)]
    world.sim.faults(OA["app_id"], latency_ms=40)  # each send takes a while: the kill lands among them
    seg = await segments.do_create_segment(tid, "Followers", {"channels": ["oa"]}, ACTOR)
    log = Path(tempfile.mkstemp(prefix="siyu-crash-worker-", suffix=".log")[1])
    first = start_worker(log)
    second = None
    try:
        b = await broadcasts.do_create_broadcast(tid, {
            "name": "年终", "segment_id": seg, "message": {"purpose": "service", "text": "年终回馈", "channels": ["window"]},
            "rate_per_minute": 480}, ACTOR)  # 40 people over 5 seconds

        async def some_sent() -> bool:
            return (await states(tid))["sent"] >= 8

        await wait_for(some_sent, 60, "the first sends", log)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await redis.flushall()  # every queued, deferred and in-progress job is gone
        mid = await states(tid)
        assert 8 <= mid["sent"] < PEOPLE, mid

        second = start_worker(log)

        async def settled() -> bool:
            s = await states(tid)
            return sum(s.values()) == PEOPLE and not (s["scheduled"] or s["due"])

        await wait_for(settled, 90, "the rest of the broadcast", log)
        # A send the kill interrupted mid-call is settled by the send-once ledger (unknown, never repeated).
        await outbound.settle_stale(sending_after=0, queued_after=0)
        await jobs.sweep_once(runtime, budget=10, idle_exit=0, lease=0)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    final = await rows(tid)
    per_person = Counter(r.contact for r in final)
    assert sorted(per_person) == sorted(p.contact_id for p in people) and set(per_person.values()) == {1}
    assert {r.state for r in final} <= {"sent", "unknown"}, Counter(r.state for r in final)
    received = Counter(m["person"] for m in world.sim.messages(app_id=OA["app_id"], endpoint=CUSTOM))
    assert all(n == 1 for n in received.values()), received  # no duplicate reached anyone
    sent = {r.contact for r in final if r.state == "sent"}
    assert {p.key for p in people if p.contact_id in sent} <= set(received)
    assert len(received) >= len(sent)
    assert b.id
    log.unlink(missing_ok=True)
