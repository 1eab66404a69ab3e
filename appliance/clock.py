"""Time in one place: ISO-8601 UTC with ``Z`` as the contract wants, and id makers."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def iso(ts: float | None) -> str | None:
    """Unix seconds → ``2026-11-29T02:39:40.123Z`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    """ISO-8601 (``Z`` or offset; date alone means midnight UTC) → unix seconds; ValueError if bad."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"
