"""Fixed-window rate limits (minute, hour, day) kept in memory and persisted in batches, so that
counters survive a restart without a write per request."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.store.ops import Op, json_rows, rows_op

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0


class RateLimiter:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}  # (subject, window) -> [start, count]
        self._dirty: set[tuple[str, str]] = set()

    def load(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        for subject, window, start, count in rows:
            self._counts[(subject, window)] = [start, count]

    def _slot(self, subject: str, window: str, now: float) -> list[int]:
        size = WINDOWS[window]
        start = int(now // size * size)
        key = (subject, window)
        slot = self._counts.get(key)
        if slot is None or slot[0] != start:
            slot = self._counts[key] = [start, 0]
        return slot

    def hit(self, subject: str, limits: Mapping[str, int], now: float | None = None,
            count: bool = True) -> Decision:
        """Count one request against every window unless one is already full. Runs on every
        authenticated request: plain loops, no intermediate dicts."""
        now = time.time() if now is None else now
        slots = [(window, limit, self._slot(subject, window, now)) for window, limit in limits.items()]
        worst: tuple[int, list[int], int] | None = None  # (limit, slot, window size) of the longest full window
        resets = 0.0
        for window, limit, slot in slots:
            if slot[1] >= limit:
                size = WINDOWS[window]
                resets = max(resets, slot[0] + size)
                if worst is None or size > worst[2]:
                    worst = (limit, slot, size)
        if worst is not None:
            return Decision(False, self._headers(*worst), max(1, math.ceil(resets - now)))
        closest: tuple[int, list[int], int] | None = None
        best: tuple[int, int] | None = None
        for window, limit, slot in slots:
            if count:
                slot[1] += 1
                self._dirty.add((subject, window))
            size = WINDOWS[window]
            rank = (limit - slot[1], size)
            if best is None or rank < best:
                best, closest = rank, (limit, slot, size)
        assert closest is not None, "at least one window"
        return Decision(True, self._headers(*closest))

    def blocked(self, subject: str, limits: Mapping[str, int], now: float | None = None) -> int:
        """Seconds until ``subject`` may try again (0: not blocked); counts nothing. The cheap form of
        ``hit(..., count=False).allowed`` for the check made before every authentication."""
        now = time.time() if now is None else now
        retry = 0.0
        for window, limit in limits.items():
            slot = self._counts.get((subject, window))
            if slot is None:
                continue
            size = WINDOWS[window]
            if slot[0] == int(now // size * size) and slot[1] >= limit:
                retry = max(retry, slot[0] + size - now)
        return max(1, math.ceil(retry)) if retry else 0

    @staticmethod
    def _headers(limit: int, slot: list[int], size: int) -> dict[str, str]:
        start, used = slot
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - used)),
                "X-RateLimit-Reset": str(start + size)}

    def drain(self) -> list[Op]:
        """The counters changed since the last call, as one upsert op."""
        if not self._dirty:
            return []
        rows = [(s, w, *self._counts[(s, w)]) for s, w in self._dirty]
        self._dirty.clear()
        upsert = (" ON CONFLICT (subject, window) DO UPDATE SET window_start = excluded.window_start,"
                  " count = excluded.count")
        return [rows_op("INSERT INTO rate_counters (subject, window, window_start, count) VALUES (?,?,?,?)" + upsert,
                        f"INSERT INTO rate_counters (subject, window, window_start, count) {json_rows(4)}{upsert}",
                        rows)]
