"""Fixed-window rate limits (minute, hour, day) kept in memory and persisted in batches, so that
counters survive a restart without a write per request."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.store.ops import Op

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
        slot = self._counts.get((subject, window))
        if slot is None or slot[0] != start:
            slot = self._counts[(subject, window)] = [start, 0]
        return slot

    def hit(self, subject: str, limits: Mapping[str, int], now: float | None = None,
            count: bool = True) -> Decision:
        """Count one request against every window unless one is already full."""
        now = time.time() if now is None else now
        slots = {w: self._slot(subject, w, now) for w in limits}
        full = [w for w, slot in slots.items() if slot[1] >= limits[w]]
        if full:
            retry = max(slots[w][0] + WINDOWS[w] for w in full) - now
            worst = max(full, key=lambda w: WINDOWS[w])
            return Decision(False, self._headers(slots, limits, worst), max(1, math.ceil(retry)))
        if count:
            for window, slot in slots.items():
                slot[1] += 1
                self._dirty.add((subject, window))
        closest = min(limits, key=lambda w: (limits[w] - slots[w][1], WINDOWS[w]))
        return Decision(True, self._headers(slots, limits, closest))

    @staticmethod
    def _headers(slots: dict[str, list[int]], limits: Mapping[str, int], window: str) -> dict[str, str]:
        start, used = slots[window]
        return {"X-RateLimit-Limit": str(limits[window]),
                "X-RateLimit-Remaining": str(max(0, limits[window] - used)),
                "X-RateLimit-Reset": str(start + WINDOWS[window])}

    def drain(self) -> list[Op]:
        """The counters changed since the last call, as one upsert op."""
        if not self._dirty:
            return []
        rows = [(s, w, *self._counts[(s, w)]) for s, w in self._dirty]
        self._dirty.clear()
        return [Op([("INSERT INTO rate_counters (subject, window, window_start, count) VALUES (?,?,?,?)"
                     " ON CONFLICT (subject, window) DO UPDATE SET window_start = excluded.window_start,"
                     " count = excluded.count", ())], many={0: rows})]
