"""Retention: old API calls and deliveries, scan work dirs and findings are pruned in the background,
in small batches so that the writer never holds its lock for long. Audit rows are never pruned:
the hash chain stays whole from its first row.

``retention.calls_days`` (API call log, finished webhook deliveries), ``retention.scan_dirs_days``
(a finished scan's work dir with the raw scanner output), ``retention.findings_days`` (a finished
scan's findings; the scan and its result summary stay). 0 keeps forever.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from appliance import clock
from appliance.config import Config
from appliance.store import Reader, Writer
from appliance.store.ops import Op

log = logging.getLogger(__name__)
BATCH = 500
DAY = 86400
_FINISHED = "('completed', 'failed', 'cancelled')"


class Pruner:
    def __init__(self, config: Config, reader: Reader, writer: Writer) -> None:
        self._config = config
        self._reader = reader
        self._writer = writer

    async def run_once(self) -> dict[str, int]:
        now = clock.now()
        counts = {"calls": 0, "deliveries": 0, "events": 0, "findings": 0, "scanDirs": 0}
        if days := self._config["retention.calls_days"]:
            cut = now - days * DAY
            counts["calls"] = await self._batches(
                "DELETE FROM api_calls WHERE id IN (SELECT id FROM api_calls WHERE created_at < ? LIMIT ?)", cut)
            counts["deliveries"] = await self._batches(
                "DELETE FROM webhook_deliveries WHERE rowid IN (SELECT rowid FROM webhook_deliveries"
                " WHERE status != 'pending' AND created_at < ? LIMIT ?)", cut)
            # The scan-event outbox: only events the webhook dispatcher has already passed.
            counts["events"] = await self._batches(
                "DELETE FROM scan_events WHERE id IN (SELECT id FROM scan_events WHERE created_at < ? AND id <="
                " (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'events_cursor') ORDER BY id LIMIT ?)", cut)
        if days := self._config["retention.findings_days"]:
            counts["findings"] = await self._batches(
                "DELETE FROM findings WHERE rowid IN (SELECT f.rowid FROM findings f JOIN scans s ON s.id = f.scan_id"
                f" WHERE s.status IN {_FINISHED} AND s.completed_at < ? LIMIT ?)", now - days * DAY)
        if days := self._config["retention.scan_dirs_days"]:
            counts["scanDirs"] = await asyncio.to_thread(self._prune_dirs, now - days * DAY)
        if any(counts.values()):
            log.info("retention: pruned %s", counts)
        return counts

    async def _batches(self, sql: str, cut: float) -> int:
        total = 0
        while True:
            deleted = (await self._writer.write(Op([(sql, (cut, BATCH))])))[0]
            total += deleted
            if deleted < BATCH:
                return total
            await asyncio.sleep(0.05)  # let other writes in between batches

    def _prune_dirs(self, cut: float) -> int:
        root: Path = self._config.scans_dir
        if not root.is_dir():
            return 0
        removed = 0
        for entry in root.iterdir():
            row = self._reader.one(f"SELECT 1 FROM scans WHERE id = ? AND status IN {_FINISHED} AND completed_at < ?",
                                   (entry.name, cut))
            if row is not None and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
