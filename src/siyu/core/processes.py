"""Child processes of the supervisor (`make run`), the benchmarks and the tests: wait until a server
answers, stop a group of processes politely, then firmly, and keep children running (`Supervisor`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def wait_http(url: str, seconds: float, watch: Sequence[subprocess.Popen[Any]] = ()) -> bool:
    """True once `url` answers below HTTP 500; False on timeout or when a watched process exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in watch):
            return False
        try:
            # Our own local servers only: the stdlib suffices (httpx is kept for talking to WeChat).
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (a local http URL we built)
                if resp.status < 500:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


# `siyu run` starts its children each in a process group of its own: the terminal's Ctrl-C reaches `siyu run`
# alone, which stops them in order, and a child's own children (granian's workers) stop with it.
OWN_GROUP: dict[str, Any] = {"start_new_session": True}


def _signal(p: subprocess.Popen[Any], sig: int) -> None:
    """The process, and its whole group when it leads one (what it started, even once it is gone itself)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(p.pid) == p.pid:
            os.killpg(p.pid, sig)
            return
    if p.poll() is None:
        p.send_signal(sig)


def sweep_group(p: subprocess.Popen[Any]) -> None:
    """Kill what is left of the group an ended child led (a killed granian's worker holds its port). A child
    that led no group has none by its pid: nothing happens."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)


def stop_processes(procs: Sequence[subprocess.Popen[Any]], timeout: float = 10) -> None:
    """SIGTERM every process (newest first), wait for each, SIGKILL what does not stop in time; then sweep
    the group each led, so nothing it started outlives it."""
    for p in reversed(procs):
        if p.poll() is None:
            _signal(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait(timeout=5)
        sweep_group(p)


@dataclass(eq=False)
class Child:
    """One supervised child: a process started by `start` (which may also wait for it to answer), or a
    server run by a library (`start` returns None and `alive` says whether it runs)."""

    name: str
    start: Callable[[], subprocess.Popen[Any] | None]
    alive: Callable[[], bool] | None = None
    proc: subprocess.Popen[Any] | None = None
    started_at: float = 0.0
    restarts: int = 0
    pause: float = 0.0  # the last pause before a restart; doubles while the child keeps failing
    due: float | None = None  # when to start it again (None: it runs)

    def running(self) -> bool:
        if self.alive is not None:
            return self.alive()
        return self.proc is not None and self.proc.poll() is None

    def how_it_ended(self) -> str:
        if self.proc is not None and self.proc.returncode is not None:
            code = self.proc.returncode
            return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return "stopped"


class Supervisor:
    """Keeps children running, as `make run` needs: a child that ends is started again after a pause of
    `min_pause` seconds, doubling up to `max_pause` while it keeps ending soon after its start (and back to
    `min_pause` once it ran for `stable_after` seconds); every restart is said. `stop` ends them all, the
    newest first."""

    def __init__(self, say: Callable[[str], None], min_pause: float = 1.0, max_pause: float = 30.0,
                 stable_after: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.min_pause, self.max_pause, self.stable_after = min_pause, max_pause, stable_after
        self.clock = clock
        self.children: list[Child] = []

    def add(self, name: str, start: Callable[[], subprocess.Popen[Any] | None],
            alive: Callable[[], bool] | None = None, proc: subprocess.Popen[Any] | None = None) -> Child:
        """Supervise a child; started now unless `proc` (or, for a library's server, `alive`) says it runs."""
        child = Child(name, start, alive, proc)
        self.children.append(child)
        if proc is not None or (alive is not None and alive()):
            child.started_at = self.clock()
        else:
            self._launch(child)
        return child

    def procs(self) -> list[subprocess.Popen[Any]]:
        return [c.proc for c in self.children if c.proc is not None]

    def _launch(self, child: Child) -> None:
        child.due = None
        child.proc = child.start()
        child.started_at = self.clock()

    def check(self) -> None:
        """One round: note the children that ended, start again those whose pause is over."""
        now = self.clock()
        for child in self.children:
            if child.due is None:
                if child.running():
                    continue
                if child.proc is not None:
                    sweep_group(child.proc)
                ran = now - child.started_at
                child.pause = self.min_pause if ran >= self.stable_after or not child.pause else min(
                    self.max_pause, child.pause * 2)
                child.due = now + child.pause
                child.restarts += 1
                self.say(f"{child.name} {child.how_it_ended()} after {ran:.0f} s; starting it again in "
                         f"{child.pause:.0f} s (restart {child.restarts})")
            elif now >= child.due:
                try:
                    self._launch(child)
                except Exception as exc:  # e.g. its port is still taken: try again after a longer pause
                    child.pause = min(self.max_pause, max(self.min_pause, child.pause * 2))
                    child.due = self.clock() + child.pause
                    self.say(f"{child.name} did not start ({type(exc).__name__}: {exc}); "
                             f"trying again in {child.pause:.0f} s")
                else:
                    pid = f" (pid {child.proc.pid})" if child.proc is not None else ""
                    self.say(f"{child.name} started again{pid}")

    def stop(self, timeout: float = 10) -> None:
        """The newest first, each gone before the next is asked: the web server and the workers stop while
        Redis and the simulator they use still answer (no errors logged on a clean stop)."""
        for child in self.children:
            child.due = None
        for proc in reversed(self.procs()):
            stop_processes([proc], timeout=timeout)
