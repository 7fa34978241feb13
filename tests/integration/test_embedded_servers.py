"""The embedded servers are private: Valkey asks for a generated password kept with mode 0600, its files
are readable by this user alone, and PostgreSQL's data directory is not open to others either."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from siyu.core.embedded import start_redis
from siyu.core.processes import stop_processes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    stop_processes([p for p in started if p is not None], timeout=10)


def test_valkey_refuses_a_client_without_the_password(tmp_path: Path, servers: list[Any]) -> None:
    url, proc = start_redis(tmp_path / "valkey", persist=False)
    servers.append(proc)
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.password
    anonymous = Redis(host="127.0.0.1", port=parts.port, socket_timeout=2)
    with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
        anonymous.ping()
    with pytest.raises((AuthenticationError, ResponseError)):
        anonymous.set("k", "v")
    wrong = Redis(host="127.0.0.1", port=parts.port, password="guess", socket_timeout=2)
    with pytest.raises((AuthenticationError, ResponseError)):
        wrong.ping()
    assert Redis.from_url(url, socket_timeout=2).ping() is True
    for c in (anonymous, wrong):
        c.close()


def test_the_password_is_kept_0600_and_never_on_the_command_line(tmp_path: Path, servers: list[Any]) -> None:
    directory = tmp_path / "valkey"
    url, proc = start_redis(directory, persist=False)
    servers.append(proc)
    password = urlsplit(url).password
    assert (directory / "password").read_text().strip() == password
    assert _mode(directory / "password") == 0o600
    assert _mode(directory / "valkey.conf") == 0o600
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    assert password not in cmdline  # `ps` shows every argument to every local user


def test_valkey_files_are_readable_by_this_user_alone(tmp_path: Path, servers: list[Any]) -> None:
    directory = tmp_path / "valkey"
    url, proc = start_redis(directory, persist=True)
    servers.append(proc)
    client = Redis.from_url(url, socket_timeout=5)
    client.set("siyu:probe", "x")
    client.save()  # the snapshot, besides the append-only file
    client.close()
    assert _mode(directory) == 0o700
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert {"dump.rdb", "valkey.log", "password"} <= {p.name for p in files}
    assert any(p.parent.name == "appendonlydir" for p in files)
    for path in [*files, *(p for p in directory.rglob("*") if p.is_dir())]:
        assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"


def test_files_an_older_version_left_open_are_closed_at_start(tmp_path: Path, servers: list[Any]) -> None:
    directory = tmp_path / "valkey"
    (directory / "appendonlydir").mkdir(parents=True)
    directory.chmod(0o755)
    (directory / "appendonlydir").chmod(0o755)
    log = directory / "valkey.log"
    log.write_text("an old log\n")
    log.chmod(0o644)
    _, proc = start_redis(directory, persist=False)
    servers.append(proc)
    assert _mode(directory) == 0o700
    assert _mode(directory / "appendonlydir") & 0o077 == 0
    assert _mode(log) & 0o077 == 0


def test_a_restart_on_its_port_keeps_the_url_and_the_data(tmp_path: Path, servers: list[Any]) -> None:
    directory = tmp_path / "valkey"
    url, proc = start_redis(directory, persist=True)
    servers.append(proc)
    client = Redis.from_url(url, socket_timeout=5)
    client.set("siyu:kept", "yes")
    client.close()
    assert start_redis(directory, persist=True) == (url, None)  # a running server is reused
    # On a busy disk the server may hold a write back for up to 2 s (appendfsync everysec): wait until the
    # append-only file has it, which is what this test is about.
    deadline = time.monotonic() + 5
    while not any(b"siyu:kept" in f.read_bytes() for f in (directory / "appendonlydir").glob("*.aof")):
        assert time.monotonic() < deadline, "the write never reached the append-only file"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    again, proc2 = start_redis(directory, persist=True, port=urlsplit(url).port)
    servers.append(proc2)
    assert again == url
    client = Redis.from_url(url, socket_timeout=5)
    assert client.get("siyu:kept") == b"yes", (directory / "valkey.log").read_text()  # from the append-only file
    client.close()


def test_the_suites_valkey_asks_for_a_password_too(tmp_path: Path, servers: list[Any]) -> None:
    """The conftest starts its server through the same function: the suite's REDIS_URL carries a password. When
    you run the suite on your own Redis (REDIS_URL), an embedded server started here is checked instead."""
    from tests.conftest import _state

    url = os.environ["REDIS_URL"]
    if _state.get("valkey") is None:
        url, proc = start_redis(tmp_path / "valkey", persist=False)
        servers.append(proc)
    parts = urlsplit(url)
    assert parts.password
    anonymous = Redis(host=parts.hostname, port=parts.port, socket_timeout=2)
    with pytest.raises((AuthenticationError, ResponseError)):
        anonymous.ping()
    anonymous.close()


def test_the_embedded_postgres_data_directory_is_private(tmp_path: Path) -> None:
    """The suite's own PostgreSQL; when you run the suite on yours (DATABASE_URL), one started here."""
    from siyu.core import embedded

    query = urlsplit(os.environ["DATABASE_URL"]).query
    started = None
    if "host=" in query:
        pgdata = Path(dict(p.split("=", 1) for p in query.split("&"))["host"])
    else:
        pgdata = tmp_path / "pg"
        embedded.start_postgres(pgdata, cleanup_mode="delete")
        started = embedded._keep_alive.pop()  # stopped here, not with the suite's
    try:
        assert (pgdata / "PG_VERSION").exists()
        assert _mode(pgdata) == 0o700
        for name in ("postgresql.conf", "pg_hba.conf", "PG_VERSION"):
            assert _mode(pgdata / name) & 0o077 == 0, name
    finally:
        if started is not None:
            started.cleanup()  # type: ignore[attr-defined]


def test_a_redis_url_that_reaches_a_log_keeps_its_password_out() -> None:
    from siyu.core.logs import redact

    url = "redis://:s3cr3t-Pass_word@127.0.0.1:6390/0"
    assert redact(f"cannot connect to {url}") == "cannot connect to redis://:***@127.0.0.1:6390/0"
    assert redact("postgresql://siyu:pw@db:5432/siyu?x=1") == "postgresql://siyu:***@db:5432/siyu?x=1"
    assert redact("postgresql://postgres:@/siyu?host=/tmp/pg") == "postgresql://postgres:@/siyu?host=/tmp/pg"
