"""Rows the event loop has read, kept until anything is written.

A point read on the event loop costs little CPU, but SQLite releases the GIL around it, and under load
the HTTP server's threads take the GIL every time: the serving thread then waits for it. Served from
memory, an authenticated ``GET /scans/:id`` ran about twice as fast in the benchmark.

An entry is served only while nothing has been committed since it was read. The writer counts its
commits, and every commit empties the cache; a commit by another process (a CLI command) is seen
through ``PRAGMA data_version`` by :meth:`RowCache.check_external`, which the server runs every 0.5 s.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

Values = tuple[Any, ...]


class RowCache:
    def __init__(self, commits: Callable[[], int], data_version: Callable[[], int], limit: int = 4096) -> None:
        self._commits = commits
        self._data_version = data_version
        self._limit = limit
        self._rows: dict[Hashable, Values] = {}
        self._generation = (-1, 0)
        self._external = 0
        self._seen_version: int | None = None

    def read(self, key: Hashable, load: Callable[[], Values | None]) -> Values | None:
        """The cached row for ``key``, else ``load()`` (a row not found is not kept)."""
        generation = (self._commits(), self._external)  # taken before the read: a commit during it empties
        if generation != self._generation:
            self._rows.clear()
            self._generation = generation
        values = self._rows.get(key)
        if values is None:
            values = load()
            if values is not None:
                if len(self._rows) >= self._limit:
                    self._rows.clear()
                self._rows[key] = values
        return values

    def check_external(self) -> None:
        """Forget everything if any connection committed since the last check."""
        version = self._data_version()
        if version != self._seen_version:
            self._seen_version = version
            self._external += 1
