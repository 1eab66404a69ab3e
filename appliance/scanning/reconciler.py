"""Keeps the scan table honest: no scan stays ``running`` or ``queued`` forever.

At start-up and every ``scans.reconcile_interval_seconds``:
- a ``running`` scan whose worker is gone (an earlier process, or no heartbeat) is re-queued once,
  then failed with ``INTERRUPTED``; a scanner process it left behind is killed first;
- a ``running`` scan past its deadline is failed with ``TIMEOUT`` and its process stopped;
- a ``queued`` scan without a queue task is enqueued again (the claim makes duplicates harmless);
  one queued longer than ``scans.max_queued_seconds`` is failed with ``TIMEOUT``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import clock
from appliance.scanning import model
from appliance.scanning.runner import kill_group

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # the first run and one retry
DEADLINE_SLACK = 60  # the runner enforces the timeout; this catches a runner that could not
RECENT_ENQUEUE = 5  # seconds a freshly queued scan is given to reach the queue


class Reconciler:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def run_once(self, startup: bool = False) -> dict[str, int]:
        """One pass; returns counts per action (for logs and tests). At ``startup`` no request can be
        between its insert and its enqueue, so every queued scan without a task is enqueued."""
        counts = {"requeued": 0, "interrupted": 0, "timed_out": 0, "enqueued": 0}
        now = clock.now()
        stale = max(60, 6 * self.s.config["scans.heartbeat_seconds"])
        for row in self.s.reader.all("SELECT * FROM scans WHERE status = 'running'"):
            if row["started_at"] and now > row["started_at"] + row["timeout"] + DEADLINE_SLACK:
                self._stop_process(row)
                if (await self.s.writer.write(model.finish_op(
                        row["id"], "failed", "TIMEOUT", f"scan exceeded its timeout of {row['timeout']} s")))[0]:
                    counts["timed_out"] += 1
            elif row["worker"] != self.s.boot_id or (row["heartbeat_at"] or 0) < now - stale:
                await self._recover(row, counts)
        queued = self.s.reader.all("SELECT id, priority, queued_at FROM scans WHERE status = 'queued'")
        if queued:
            waiting = self.s.queue.queued_ids()
            for row in queued:
                if now > row["queued_at"] + self.s.config["scans.max_queued_seconds"]:
                    if (await self.s.writer.write(model.finish_op(
                            row["id"], "failed", "TIMEOUT", "scan waited in the queue too long",
                            from_statuses=("queued",))))[0]:
                        counts["timed_out"] += 1
                elif row["id"] not in waiting and (startup or row["queued_at"] < now - RECENT_ENQUEUE):
                    self.s.queue.enqueue(row["id"], row["priority"])
                    counts["enqueued"] += 1
        if any(counts.values()):
            log.info("reconciler: %s", counts)
        return counts

    async def _recover(self, row: sqlite3.Row, counts: dict[str, int]) -> None:
        self._stop_process(row)
        if row["attempts"] < MAX_ATTEMPTS and (await self.s.writer.write(model.requeue_op(row["id"])))[0]:
            self.s.queue.enqueue(row["id"], row["priority"])
            counts["requeued"] += 1
        elif (await self.s.writer.write(model.finish_op(
                row["id"], "failed", "INTERRUPTED", "the worker running this scan stopped")))[0]:
            counts["interrupted"] += 1

    def _stop_process(self, row: sqlite3.Row) -> None:
        """Kill the scanner of a lost run, but only if that pid still runs in the scan's work dir."""
        if row["worker"] == self.s.boot_id:
            self.s.worker.cancels.add(row["id"])
            return
        pid, workdir = row["pid"], row["workdir"]
        if pid and workdir and _runs_in(pid, Path(workdir)):
            log.warning("killing scanner process group %s left by scan %s", pid, row["id"])
            kill_group(pid, self.s.config["scans.kill_grace_seconds"])


def _runs_in(pid: int, workdir: Path) -> bool:
    """True when ``pid`` is alive and its working directory is ``workdir``: a reused pid is spared."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == workdir
    except OSError:
        return False
