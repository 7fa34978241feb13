"""`make run`'s supervisor: a child that ends is started again after a pause that doubles while it keeps
failing, every restart is said, and `stop` ends them all. Real processes, a clock the test moves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from siyu.core.processes import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sleeper() -> subprocess.Popen[Any]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def setup() -> Iterator[tuple[Supervisor, Clock, list[str]]]:
    clock, said = Clock(), []
    sup = Supervisor(said.append, min_pause=1, max_pause=8, stable_after=60, clock=clock)
    yield sup, clock, said
    sup.stop(timeout=5)


def kill(proc: subprocess.Popen[Any] | None) -> None:
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_child_that_dies_is_started_again_and_said(setup: tuple[Supervisor, Clock, list[str]]) -> None:
    sup, clock, said = setup
    child = sup.add("the worker", sleeper)
    first = child.proc
    clock.now += 5
    sup.check()
    assert said == []  # running: nothing to do
    kill(first)
    sup.check()
    assert said == ["the worker was killed by signal 9 after 5 s; starting it again in 1 s (restart 1)"]
    assert child.proc is first  # not yet: its pause is not over
    clock.now += 1
    sup.check()
    assert child.proc is not first and child.proc is not None and child.proc.poll() is None
    assert said[-1] == f"the worker started again (pid {child.proc.pid})"


def test_the_pause_doubles_while_it_keeps_failing_and_resets_once_it_ran(
        setup: tuple[Supervisor, Clock, list[str]]) -> None:
    sup, clock, said = setup
    child = sup.add("the web server", lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
    pauses = []
    for _ in range(6):
        assert child.proc is not None
        child.proc.wait(timeout=30)
        sup.check()
        pauses.append(child.pause)
        clock.now += child.pause
        sup.check()
    assert pauses == [1, 2, 4, 8, 8, 8]  # capped at max_pause
    assert "the web server exited with code 3 after 0 s" in said[0]
    assert sum("started again" in m for m in said) == 6

    # Once it ran for `stable_after`, a new failure is a new problem: the shortest pause again.
    child.start = sleeper
    clock.now += child.pause
    assert child.proc is not None
    child.proc.wait(timeout=30)
    sup.check()
    clock.now += child.pause
    sup.check()
    clock.now += 61
    kill(child.proc)
    sup.check()
    assert child.pause == 1 and said[-1].endswith("starting it again in 1 s (restart 8)")


def test_a_child_that_cannot_start_is_tried_again_later(setup: tuple[Supervisor, Clock, list[str]]) -> None:
    sup, clock, said = setup
    attempts: list[int] = []

    def start() -> subprocess.Popen[Any]:
        attempts.append(1)
        if len(attempts) in (2, 3):
            raise RuntimeError("port 6390 is still taken")
        return sleeper()

    child = sup.add("Valkey", start)
    kill(child.proc)
    sup.check()
    clock.now += 1
    sup.check()
    assert said[-1] == "Valkey did not start (RuntimeError: port 6390 is still taken); trying again in 2 s"
    clock.now += 2
    sup.check()
    assert said[-1].endswith("trying again in 4 s")
    clock.now += 4
    sup.check()
    assert said[-1].startswith("Valkey started again")
    assert child.proc is not None and child.proc.poll() is None


def test_a_server_run_by_a_library_is_watched_through_its_check(setup: tuple[Supervisor, Clock, list[str]]) -> None:
    sup, clock, said = setup
    state = {"up": True, "starts": 0}

    def start() -> None:
        state["up"], state["starts"] = True, state["starts"] + 1

    sup.add("PostgreSQL", start, alive=lambda: state["up"])
    assert state["starts"] == 0  # it runs already: not started twice
    state["up"] = False
    sup.check()
    assert said == ["PostgreSQL stopped after 0 s; starting it again in 1 s (restart 1)"]
    clock.now += 1
    sup.check()
    assert state == {"up": True, "starts": 1} and said[-1] == "PostgreSQL started again"


def test_stop_ends_every_child(setup: tuple[Supervisor, Clock, list[str]]) -> None:
    sup, _, _ = setup
    children = [sup.add(f"child {i}", sleeper) for i in range(3)]
    sup.stop(timeout=5)
    assert all(c.proc is not None and c.proc.poll() is not None for c in children)
