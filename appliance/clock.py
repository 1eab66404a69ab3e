"""Time in one place: ISO-8601 UTC with ``Z`` as the contract wants, and id makers."""
from __future__ import annotations

import functools
import os
import time
import uuid
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    """Unix seconds → ``2026-11-29T02:39:40.123Z`` (None stays None)."""
    if ts is None:
        return None
    return _iso(ts)


@functools.lru_cache(maxsize=65536)
def _iso(ts: float) -> str:
    # Cached: the same stored timestamps are formatted on every read of a scan (strftime costs µs).
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    """ISO-8601 (``Z`` or offset; date alone means midnight UTC) → unix seconds; ValueError if bad."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"


def new_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs from one read of the system's random source: ``new_id``
    per finding made a system call per row of a findings batch."""
    data = os.urandom(16 * count)
    ids = []
    for offset in range(0, 16 * count, 16):
        h = data[offset:offset + 16].hex()
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return ids


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits 10xx
