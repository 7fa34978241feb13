"""Where media bytes live: a small interface (put, get, delete by key) that the local directory implements
today (`SIYU_MEDIA_DIR`, by default `media/` under the data dir) and an S3-compatible store can implement later
without any caller changing. Keys are Siyu's own (`t<tenant>/<yyyy>/<mm>/<random>`), never a name a customer
or WeChat chose, so they cannot climb out of the store's root.

File I/O runs in a worker thread: a 20 MB file must not hold the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from siyu.core.settings import get_settings

KEY = re.compile(r"^t\d{1,12}/\d{4}/\d{2}/[A-Za-z0-9_-]{16,64}(\.[a-z0-9]{1,8})?$")


class MediaStore(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Keep `data` under `key` (replacing what was there), durably, before returning."""

    async def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None when there are none."""

    async def delete(self, key: str) -> None:
        """Forget `key` (nothing happens when it is not there)."""


def new_key(tenant_id: int, suffix: str = "", at: datetime | None = None) -> str:
    """A fresh key for a tenant's media: unguessable, grouped by month for the operators' sake."""
    when = at or datetime.now(UTC)
    return f"t{tenant_id}/{when:%Y/%m}/{secrets.token_urlsafe(24)}{suffix}"


def check_key(key: str) -> str:
    if not KEY.match(key):
        raise ValueError(f"not a media key: {key!r}")
    return key


class LocalMediaStore:
    """Files under one directory: written to a temporary name, fsynced, renamed (a crash leaves the old file
    or the new one, never half of one), readable by this user only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        await asyncio.to_thread(write)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)


@lru_cache(maxsize=1)
def media_store() -> MediaStore:
    """The process's store: the local directory of the settings (the one implementation today)."""
    return LocalMediaStore(get_settings().media_dir)
