"""The queue task of a scan: claim it, check the target again, run the engine, store what it found.

Runs on a Huey worker thread inside the serve process. The engine part (argv, process, parse) is
pure; only this module turns its output into writes, through the one writer.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from appliance.scanning import model
from appliance.scanning.runner import RunResult, run_process
from appliance.targets import parse_target
from engines.base import Engine, Finding, ScanSpec

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)
BATCH = 500


class ScanWorker:
    def __init__(self, services: "Services") -> None:
        self.s = services
        self.cancels: set[str] = set()  # scan ids whose process must stop now
        self.stopping = threading.Event()  # the server is shutting down
        self._caps = {name: threading.BoundedSemaphore(n)
                      for name, n in services.config["engines.concurrency"].items()}

    # -- entry point (Huey task body) -----------------------------------------------------------
    def execute(self, scan_id: str) -> str:
        """Returns what happened, for logs; never raises for a scan-level problem."""
        row = self.s.reader.one("SELECT * FROM scans WHERE id = ?", (scan_id,))
        if row is None or row["status"] != "queued":
            self.cancels.discard(scan_id)
            return "skipped"  # cancelled while queued, or a duplicate task
        cap = self._caps.get(row["scan_type"])
        if cap is not None and not cap.acquire(blocking=False):
            self.s.queue.enqueue(scan_id, row["priority"], delay=1)
            return "deferred"
        try:
            return self._run(row)
        finally:
            if cap is not None:
                cap.release()

    def _run(self, row) -> str:
        scan_id = row["id"]
        workdir = self.s.config.scans_dir / scan_id
        if not self.s.writer.write_threadsafe(model.claim_op(scan_id, self.s.boot_id, str(workdir)))[0]:
            return "skipped"  # someone else claimed or cancelled it first
        try:
            return self._run_claimed(row, workdir)
        except Exception as exc:  # a bug must fail the scan, never leave it running
            log.exception("scan %s crashed", scan_id)
            self.s.writer.write_threadsafe(model.finish_op(scan_id, "failed", "INTERNAL_ERROR",
                                                           f"worker error: {type(exc).__name__}"))
            return "crashed"
        finally:
            self.cancels.discard(scan_id)

    def _run_claimed(self, row, workdir: Path) -> str:
        scan_id = row["id"]
        engine = self.s.engines[row["scan_type"]]
        if not isinstance(engine, Engine) or not engine.probe().available:
            return self._finish(scan_id, "failed", "ENGINE_UNAVAILABLE", f"{row['scan_type']} is not available")
        # The submit-time check again, with the policy and DNS of now.
        target = parse_target(row["target"], row["target_type"])
        problem, addresses = self.s.policy(row["tenant_id"]).vet(target, engine.connects_to_target)
        if problem:
            return self._finish(scan_id, "failed", "TARGET_NOT_ALLOWED", problem)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        spec = ScanSpec(scan_id, row["target"], row["target_type"], json.loads(row["options"]),
                        row["timeout"], workdir, engine.probe().path or engine.binary,
                        tuple(str(a) for a in addresses), engine.data_dir)
        config = json.loads(row["config"])
        result = self._execute(engine, spec)
        stored = self._store(scan_id, engine.name, engine.parse(spec), config.get("maxFindings"))
        # Recounted here too: a cancel may have ended the scan before these findings arrived.
        self.s.writer.write_threadsafe(model.summary_op(scan_id))
        if result.stopped:
            if self.stopping.is_set() and scan_id not in self.cancels:
                # Shutdown, not a cancel: give the scan back to the queue for the next start.
                if self.s.writer.write_threadsafe(model.requeue_op(scan_id, refund=True))[0]:
                    self.s.queue.enqueue(scan_id, row["priority"])
                return "requeued"
            return self._finish(scan_id, "cancelled")
        if result.timed_out:
            return self._finish(scan_id, "failed", "TIMEOUT",
                                f"scan exceeded its timeout of {row['timeout']} s ({stored} findings kept)")
        outcome = engine.outcome(spec, result.returncode or 0, result.stderr_tail)
        if not outcome.success:
            return self._finish(scan_id, "failed", outcome.error_code or "ENGINE_ERROR", outcome.message)
        return self._finish(scan_id, "completed")

    def _finish(self, scan_id: str, status: str, code: str | None = None, message: str | None = None) -> str:
        self.s.writer.write_threadsafe(model.finish_op(scan_id, status, code, message))
        return status

    def _execute(self, engine: Engine, spec: ScanSpec) -> RunResult:
        scan_id = spec.scan_id

        def tick() -> None:
            self.s.writer.buffer_threadsafe(model.heartbeat_op(scan_id, engine.progress(spec)))

        return run_process(
            engine.build_argv(spec), spec.workdir, spec.timeout,
            should_stop=lambda: scan_id in self.cancels or self.stopping.is_set(),
            on_tick=tick,
            on_start=lambda pid: self.s.writer.write_threadsafe(model.pid_op(scan_id, pid)),
            kill_grace=self.s.config["scans.kill_grace_seconds"],
            output_cap=self.s.config["scans.output_cap_bytes"],
            tick_seconds=min(1.0, self.s.config["scans.heartbeat_seconds"]),
        )

    def _store(self, scan_id: str, engine: str, findings: Iterator[Finding], limit: int | None) -> int:
        """Findings in batches as the parser yields them; at most ``limit`` (config.maxFindings)."""
        batch: list[Finding] = []
        stored = 0
        for finding in findings:
            if limit is not None and stored + len(batch) >= limit:
                break
            batch.append(finding)
            if len(batch) >= BATCH:
                self.s.writer.write_threadsafe(model.findings_op(scan_id, engine, batch, stored))
                stored += len(batch)
                batch = []
        if batch:
            self.s.writer.write_threadsafe(model.findings_op(scan_id, engine, batch, stored))
            stored += len(batch)
        return stored
