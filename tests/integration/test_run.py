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
    lanes = [p for p in run.children() if p.cmdline()[-2:] == ["--lane", "engagement"]]
    assert len(lanes) == 2  # SIYU_ENGAGEMENT_WORKERS: two re-engagement lane workers by default
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


REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_on_make_run_ends_without_make_reporting_an_error(tmp_path: Path,
                                                                 subprocess_env: dict[str, str]) -> None:
    """`make run` in a terminal, stopped with Ctrl-C, twice as impatient people do while it stops: the
    terminal sends SIGINT to the whole foreground process group (make, `siyu run`, its children). Everything
    stops all the same, `siyu run` ends with status 0, and make has nothing to report: no
    "make: *** [Makefile:…: run] Interrupt" or "Error" line. (GNU make then ends itself by the same signal,
    on purpose, as every program interrupted from a terminal does: the shell's $? is 130 and says nothing.)"""
    port, sim_port = _free_port(), _free_port()
    env = {k: v for k, v in subprocess_env.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "WECHAT_API_BASE", "WECOM_API_BASE", "MAKEFLAGS", "MAKELEVEL")}
    env.update({"SIYU_DATA_DIR": str(tmp_path / "data"), "SIYU_HOST": "127.0.0.1", "SIYU_PORT": str(port),
                "SIYU_SIMULATOR_PORT": str(sim_port), "SIYU_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"})
    venv = Path(sys.prefix)  # the virtualenv running these tests, in place of the Makefile's .venv
    assert (venv / "bin" / "siyu").exists(), venv
    log = tmp_path / "make.log"
    with open(log, "wb") as out:
        # -o: installing is not what is tested here (and needs no network this way).
        make = subprocess.Popen(["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "run"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    everything: list[psutil.Process] = []
    try:
        _wait_for(log, READY, 240, make)
        [run] = [p for p in psutil.Process(make.pid).children() if "run" in p.cmdline()]
        everything.extend([run, *run.children(recursive=True)])
        postmaster = tmp_path / "data" / "postgres" / "postmaster.pid"
        postgres = psutil.Process(int(postmaster.read_text().split()[0]))
        everything.append(postgres)

        os.killpg(make.pid, signal.SIGINT)
        _wait_for(log, "[siyu] stopping", 30, make)
        os.killpg(make.pid, signal.SIGINT)  # again, while it stops
        make.wait(timeout=90)
        text = log.read_text(errors="replace")
        assert make.returncode in (0, -signal.SIGINT), text[-3000:]
        assert "make: ***" not in text, text[-3000:]
        stopping = text[text.index("[siyu] stopping"):]
        # Not cut short by the second Ctrl-C (click's "Aborted!", status 1). (A job that was running may still
        # log its failure: the terminal's Ctrl-C reaches every child at once, the simulator too.)
        assert "Aborted" not in stopping and "KeyboardInterrupt" not in stopping, stopping
        assert "[siyu] still stopping" in stopping and "[siyu] stopped" in stopping
        gone, alive = psutil.wait_procs(everything, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        for p in everything:
            if p.is_running():
                p.kill()
