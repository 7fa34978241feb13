"""Browser tests: the real web server (granian, as in production) in a subprocess, driven by headless
Chromium through Playwright's async API.

The server shares the test database and Redis prepared by tests/conftest.py, so the per-test `clean`
fixture and the tenant fixtures (acme, …) apply to what the browser sees. Its public base URL is the
plain-http address it listens on, so cookies are not Secure-only.

Chromium comes from Debian (`apt-get install chromium` → /usr/bin/chromium); Playwright's own browser
download is not used. Without it every e2e test is skipped, loudly: this is the project's only skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MISSING_CHROMIUM = (f"browser tests need Debian's Chromium at {CHROMIUM}, which is missing: "
                    "install it with `apt-get update && apt-get install -y chromium` "
                    "(do not run `playwright install`)")
E2E_DIR = Path(__file__).resolve().parent

_skipped: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    marker = pytest.mark.skip(reason=MISSING_CHROMIUM)
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(marker)
            _skipped.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _skipped:
        terminalreporter.section("E2E BROWSER TESTS SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"{len(_skipped)} browser test(s) did not run: {MISSING_CHROMIUM}",
                                    red=True, bold=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Any, web_server: WebServer) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) per test, in English unless the test switches language."""
    context = await browser.new_context(base_url=web_server.base_url, locale="en-US",
                                        viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    pg = await context.new_page()
    errors: list[str] = []
    refused: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports what the Content-Security-Policy refused (an inline script or style, a foreign
    # source) on the console: no page of Siyu may cause that.
    pg.on("console", lambda msg: refused.append(f"{msg.text} at {msg.location}") if "Content Security Policy" in msg.text else None)
    pg.csp_refusals = refused  # for tests that provoke one on purpose
    try:
        yield pg
    finally:
        await context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
    assert not refused or getattr(pg, "csp_refusals_expected", False), \
        f"the Content-Security-Policy refused something: {refused}"


@pytest.fixture(scope="module")
def worker() -> Iterator[subprocess.Popen[Any]]:
    """`python -m siyu worker` (arq), as `make run` starts it, for the tests of one module: the jobs run as
    in production (callback batches, contacts, the inbox, sends). Module-scoped so it never outlives the
    browser tests and takes jobs that later integration tests run in their own burst workers."""
    from redis import Redis

    from siyu.core.processes import stop_processes

    redis = Redis.from_url(os.environ["REDIS_URL"])
    redis.delete("arq:queue:health-check")
    fd, name = tempfile.mkstemp(prefix="siyu-e2e-worker-", suffix=".log")
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "siyu", "worker"], stdout=fd,
                            stderr=subprocess.STDOUT, env=dict(os.environ))
    os.close(fd)
    log = Path(name)
    try:
        deadline = time.monotonic() + 30
        while not redis.exists("arq:queue:health-check"):  # written as its first poll begins
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; its output:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc
    finally:
        redis.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler prints every thread's stack on SIGABRT
            proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            warnings.warn(f"the worker did not stop within 10 s of SIGTERM:\n{log.read_text(errors='replace')[-8000:]}",
                          stacklevel=1)
        stop_processes([proc], timeout=5)
        log.unlink(missing_ok=True)
