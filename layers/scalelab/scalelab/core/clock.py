"""Timestamps as every step writes them: ISO-8601, UTC, whole seconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_iso(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as ``2026-11-25T02:00:00+00:00``."""
    moment = time.time() if seconds is None else seconds
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds_between(start: str, end: str) -> int:
    """Whole seconds from one ISO-8601 timestamp to another."""
    return int((as_utc(datetime.fromisoformat(end)) - as_utc(datetime.fromisoformat(start))).total_seconds())


def whole_seconds(timestamp: str) -> str:
    """An ISO-8601 timestamp in the steps' own form: UTC, whole seconds (a fraction is cut off)."""
    return utc_iso(as_utc(datetime.fromisoformat(timestamp)).timestamp())
