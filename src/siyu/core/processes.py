"""Child processes of the supervisor (`make run`), the benchmarks and the tests: wait until a server
answers, and stop a group of processes politely, then firmly."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
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


def stop_processes(procs: Sequence[subprocess.Popen[Any]], timeout: float = 10) -> None:
    """SIGTERM every process (newest first), wait for each, SIGKILL what does not stop in time."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
