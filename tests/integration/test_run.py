"""`siyu run` (what `make run` starts), for real: its own embedded PostgreSQL and Valkey in a fresh data
directory, the simulator, the worker and the web server. A child killed with SIGKILL is started again and
the others keep answering; Ctrl-C still stops everything."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import _free_port

READY = "Press Ctrl-C to stop."


def _wait_for(log: Path, text: str, seconds: float, proc: subprocess.Popen[Any], after: int = 0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace")[after:]:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    output = log.read_text(errors="replace")
    said = "\n".join(line for line in output.splitlines() if line.startswith("[siyu]"))
    raise AssertionError(f"no {text!r} within {seconds} s (exit code {proc.poll()}); it said:\n{said}\n"
                         f"the end of its output:\n{output[-3000:]}")


def _child(run: psutil.Process, marker: str) -> psutil.Process:
    # The main worker, not the re-engagement lane's (`siyu worker --lane engagement`), when the marker names it.
    found = [p for p in run.children() if marker in " ".join(p.cmdline()) and "--lane" not in p.cmdline()]
    assert len(found) == 1, [p.cmdline() for p in run.children()]
    return found[0]


@pytest.fixture
def siyu_run(tmp_path: Path, subprocess_env: dict[str, str]) -> Any:
    port, sim_port = _free_port(), _free_port()
    env = {k: v for k, v in subprocess_env.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "WECHAT_API_BASE", "WECOM_API_BASE")}
    env.update({"SIYU_DATA_DIR": str(tmp_path / "data"), "SIYU_HOST": "127.0.0.1", "SIYU_PORT": str(port),
                "SIYU_SIMULATOR_PORT": str(sim_port), "SIYU_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"})
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        # Its own session, like a terminal's foreground job: Ctrl-C reaches the whole process group.
        proc = subprocess.Popen([sys.executable, "-m", "siyu", "run"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    everything: list[psutil.Process] = []
    try:
        _wait_for(log, READY, 240, proc)
        yield proc, log, f"http://127.0.0.1:{port}", tmp_path / "data", everything
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for p in everything:  # whatever it left behind (it should not)
            if p.is_running():
                p.kill()


def test_siyu_run_restarts_a_child_that_dies_and_ctrl_c_stops_all(siyu_run: Any) -> None:
    proc, log, base, data, everything = siyu_run
    run = psutil.Process(proc.pid)
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200

    worker, valkey = _child(run, "siyu worker"), _child(run, "valkey-server")
    seen = len(log.read_text(errors="replace"))
    worker.kill()
    valkey.kill()
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # the web server keeps answering
    _wait_for(log, "[siyu] the worker was killed by signal 9", 10, proc, seen)
    _wait_for(log, "[siyu] Valkey started again", 30, proc, seen)
    _wait_for(log, "[siyu] the worker started again", 30, proc, seen)
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "Redis did not come back on its port"
        time.sleep(0.5)

    seen = len(log.read_text(errors="replace"))
    _child(run, "siyu web").kill()
    _wait_for(log, "[siyu] the web server started again", 30, proc, seen)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.5)
    assert proc.poll() is None

    # The embedded PostgreSQL (run by its library, not a child of ours) is watched and started again too;
    # the web and the worker reconnect by themselves.
    seen = len(log.read_text(errors="replace"))
    postmaster = data / "postgres" / "postmaster.pid"
    psutil.Process(int(postmaster.read_text().split()[0])).kill()
    _wait_for(log, "[siyu] PostgreSQL started again", 60, proc, seen)
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
        time.sleep(0.5)

    # The embedded servers' files are private.
    valkey_dir = data / "valkey"
    assert stat.S_IMODE(valkey_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((valkey_dir / "password").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "postgres").stat().st_mode) == 0o700

    # Ctrl-C: every child stops, nothing is started again.
    everything.extend(run.children(recursive=True))
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    text = log.read_text(errors="replace")
    assert "[siyu] stopped" in text
    assert "started again" not in text[text.index("[siyu] stopping"):]
    gone, alive = psutil.wait_procs(everything, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert not postmaster.exists() or not psutil.pid_exists(int(postmaster.read_text().split()[0]))
