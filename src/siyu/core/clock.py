"""Time in one place, so tests and jobs agree on 'now' (always timezone-aware UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
