"""Time in one place: ISO-8601 UTC with ``Z`` as the contract wants, and id makers."""
from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Callable
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
    """A random UUID (version 4), as ``uuid.uuid4()`` makes it, from the operating system's random
    source read 4 KiB at a time: one read per id gives up the GIL on every submitted scan, and the
    event loop then waits to get it back."""
    with _pool_lock:
        if len(_pool) < 16 or _pool_pid[0] != os.getpid():  # a forked child never reuses its parent's bytes
            _pool[:] = os.urandom(4096)
            _pool_pid[0] = os.getpid()
        bits = int.from_bytes(_pool[-16:], "big")
        del _pool[-16:]
    h = f"{bits & _V4_KEEP | _VERSION_4 | _VARIANT:032x}"
    return f"{prefix}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_pool = bytearray()
_pool_pid = [0]
_pool_lock = threading.Lock()


def unique_ids() -> Callable[[], str]:
    """A maker of UUID-shaped ids, unique in this process by a counter and across processes by a
    random prefix: for ids that need not be secret, made without reading the random source each time
    (a read gives up the GIL, and a busy event loop makes the thread wait to get it back)."""
    prefix = new_id()[:24]
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter) & 0xFFFFFFFFFFFF:012x}"


def id_block() -> tuple[str, int]:
    """The ids of a findings batch, as its insert makes them in SQLite (``printf('%s%012x', prefix,
    start + k)`` for the k-th row): time-ordered UUIDs (version 7 layout), the first 24 characters
    (48-bit milliseconds, the version, 12 random bits, the variant, 14 random bits) shared, the last
    group a random 47-bit start counted up, which leaves room for any batch a request can carry."""
    ms = int(time.time() * 1000) & _MS_MASK
    bits = int.from_bytes(os.urandom(16), "big")
    h = f"{(ms << 80) | _VERSION_7 | bits & _RAND_MASK | _VARIANT:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-", bits >> 81


_MS_MASK = (1 << 48) - 1
# 12 bits after the version nibble and 14 after the variant bits (the 48 below them are the count)
_RAND_MASK = ((1 << 12) - 1) << 64 | ((1 << 62) - 1) ^ ((1 << 48) - 1)
_VERSION_7 = 0x7 << 76
_VERSION_4 = 0x4 << 76
_V4_KEEP = ((1 << 128) - 1) ^ (0xF << 76) ^ (0b11 << 62)  # every bit but the version's and the variant's
_VARIANT = 0b10 << 62
