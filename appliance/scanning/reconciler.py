"""Keeps the scan table honest: no scan stays ``running`` or ``queued`` forever.

At start-up and every ``scans.reconcile_interval_seconds``:
- a ``running`` scan whose lease expired (its worker stopped heartbeating: kill -9, a network cut)
  or was held by an earlier run of this appliance is re-queued once, then failed ``INTERRUPTED``;
  a scanner process an earlier run of this appliance left behind is killed first;
- a ``running`` scan past its deadline is failed with ``TIMEOUT`` (its worker's next heartbeat is
  told to stop);
- a ``queued`` scan without a queue task is enqueued again (the claim makes duplicates harmless);
  one queued longer than ``scans.max_queued_seconds`` is failed with ``TIMEOUT``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance import clock
from appliance.scanning import lifecycle
from appliance.scanning.dispatch import Dispatcher
from appliance.scanning.job import Job
from appliance.scanning.runner import kill_group
from appliance.store import Reader, Writer

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # the first run and one retry
DEADLINE_SLACK = 60  # the runner enforces the timeout; this catches a runner that could not
RECENT_ENQUEUE = 5  # seconds a freshly queued scan is given to reach the queue


@dataclass(frozen=True)
class ReconcilerSettings:
    boot_id: str  # the lease owner of this process's embedded worker
    max_queued_seconds: float
    kill_grace: float


class Reconciler:
    def __init__(self, reader: Reader, writer: Writer, dispatcher: Dispatcher,
                 enqueue: Callable[[Job, float | None], None], pending_ids: Callable[[str, str], set[str]],
                 settings: ReconcilerSettings) -> None:
        self._reader = reader
        self._writer = writer
        self._dispatcher = dispatcher
        self._enqueue = enqueue
        self._pending_ids = pending_ids
        self._settings = settings

    async def run_once(self, startup: bool = False) -> dict[str, int]:
        """One pass; returns counts per action (for logs and tests). At ``startup`` no request can be
        between its insert and its enqueue, so every queued scan without a task is enqueued."""
        counts = {"requeued": 0, "interrupted": 0, "timed_out": 0, "enqueued": 0}
        now = clock.now()
        for row in self._reader.all("SELECT * FROM scans WHERE status = 'running'"):
            if row["started_at"] and now > row["started_at"] + row["timeout"] + DEADLINE_SLACK:
                await asyncio.to_thread(self._kill_left_behind, row)
                if (await self._writer.write(lifecycle.end(
                        row["id"], "failed", "TIMEOUT", f"scan exceeded its timeout of {row['timeout']} s",
                        from_statuses=("running",))))[0]:
                    counts["timed_out"] += 1
            elif self._from_earlier_boot(row) or (row["lease_expires_at"] or 0) < now:
                await self._recover(row, counts)
        queued = self._reader.all("SELECT * FROM scans WHERE status = 'queued'")
        waiting: dict[tuple[str, str], set[str]] = {}
        for row in queued:
            if now > row["queued_at"] + self._settings.max_queued_seconds:
                if (await self._writer.write(lifecycle.end(row["id"], "failed", "TIMEOUT",
                                                           "scan waited in the queue too long",
                                                           from_statuses=("queued",))))[0]:
                    counts["timed_out"] += 1
                continue
            if not (startup or row["queued_at"] < now - RECENT_ENQUEUE):
                continue
            queue = (row["zone"], row["scan_type"])
            if queue not in waiting:
                waiting[queue] = await asyncio.to_thread(self._pending_ids, *queue)
            if row["id"] not in waiting[queue]:
                await asyncio.to_thread(self._enqueue, self._dispatcher.job(row), None)
                counts["enqueued"] += 1
        if any(counts.values()):
            log.info("reconciler: %s", counts)
        return counts

    def _from_earlier_boot(self, row: sqlite3.Row) -> bool:
        owner = row["lease_owner"] or ""
        return owner.startswith("boot-") and owner != self._settings.boot_id

    async def _recover(self, row: sqlite3.Row, counts: dict[str, int]) -> None:
        await asyncio.to_thread(self._kill_left_behind, row)
        if row["attempts"] < MAX_ATTEMPTS and (await self._writer.write(
                lifecycle.requeue(row["id"], "worker lost", lease_id=row["lease_id"])))[0]:
            fresh = self._reader.one("SELECT * FROM scans WHERE id = ?", (row["id"],))
            if fresh is not None:
                await asyncio.to_thread(self._enqueue, self._dispatcher.job(fresh), None)
            counts["requeued"] += 1
        elif (await self._writer.write(lifecycle.end(
                row["id"], "failed", "INTERRUPTED", "the worker running this scan stopped",
                from_statuses=("running",))))[0]:
            counts["interrupted"] += 1

    def _kill_left_behind(self, row: sqlite3.Row) -> None:
        """Kill the scanner an earlier run of this appliance left, but only if that pid still runs
        in the scan's work dir (a reused pid is spared). Live runs stop on their next heartbeat."""
        if not self._from_earlier_boot(row):
            return
        pid, workdir = row["pid"], row["workdir"]
        if pid and workdir and _runs_in(pid, Path(workdir)):
            log.warning("killing scanner process group %s left by scan %s", pid, row["id"])
            kill_group(pid, self._settings.kill_grace)


def _runs_in(pid: int, workdir: Path) -> bool:
    """True when ``pid`` is alive and its working directory is ``workdir``."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == workdir
    except OSError:
        return False
