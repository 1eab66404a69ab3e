"""The pure scan task: given a job, claim it, run its engine, report findings and the end.

No database, no config object, no service locator: it reports through a
:class:`~appliance.scanning.reporter.Reporter`, so the very same code runs in the serve process and on a
remote worker. A bug or a scanner crash fails the scan; it never leaves it running.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import logs
from appliance.scanning.intake import Claim
from appliance.scanning.job import Job, JobError
from appliance.scanning.reporter import Reporter, ReportError
from appliance.scanning.runner import ProcessControl
from appliance.scanning.sender import send_batches
from engines.base import Engine, Finding, RunResult, Scanner, ScanSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSettings:
    kill_grace: float = 3.0
    output_cap: int = 1 << 20
    tick_seconds: float = 1.0
    # Findings per report. A commit's cost is largely per commit (index pages dirtied all over a large
    # scan, written once per commit): measured at 100,000 findings (bench/README.md), 1,000 took about
    # 30 % more rows a second than 500 (median 26,600 vs 20,400) with /health's p99 about 24 ms; 1,500
    # and 2,000 were no faster. 1,000 findings of the usual size stay well under the 1 MiB request limit.
    batch: int = 1000
    # Findings batches sent before the first is answered (appliance.scanning.sender). Measured at 100,000
    # findings since the writer's work per finding was cut (bench/README.md, "fourth round"): 3 kept
    # the event loop busier than 2 (about 49,000-53,000 rows/s against 37,000-50,000 in the same hour),
    # /health's p99 10-16 ms with either; 4 was no faster than 3.
    in_flight: int = 3


class ScanTask:
    def __init__(self, engines: Mapping[str, Scanner], reporter: Reporter, workdirs: Path,
                 settings: TaskSettings, stopping: threading.Event) -> None:
        self._engines = engines
        self._reporter = reporter
        self._workdirs = workdirs
        self._settings = settings
        self._stopping = stopping  # this worker is shutting down: hand running scans back

    def __call__(self, message: dict[str, Any]) -> str:
        """The queue task body; returns what happened, for logs and tests."""
        try:
            job = Job.from_dict(message)
        except JobError as exc:
            log.error("dropped a malformed queue message: %s", exc)
            return "malformed"
        if self._stopping.is_set():
            return "stopping"  # the reconciler re-enqueues what is still queued
        with logs.scan_context(job.scan_id):
            return self._claim_and_run(job)

    def _claim_and_run(self, job: Job) -> str:
        workdir = self._workdirs / job.scan_id
        try:
            claim = self._reporter.claim(job, str(workdir))
        except ReportError as exc:
            log.warning("scan %s: could not claim: %s", job.scan_id, exc)
            return "unclaimed"
        if claim is None:
            return "skipped"  # cancelled while queued, claimed elsewhere, refused, or must wait
        started = time.monotonic()
        try:
            outcome = self._run(claim, workdir)
        except Exception as exc:  # a bug must fail the scan, never leave it running
            log.exception("scan %s crashed", job.scan_id)
            # Unreachable appliance: the lease expires and the reconciler takes over.
            with contextlib.suppress(ReportError):
                self._reporter.finish(claim, "failed", "INTERNAL_ERROR", f"worker error: {type(exc).__name__}")
            outcome = "crashed"
        seconds = round(time.monotonic() - started, 3)
        log.info("scan %s: %s on %s ended: %s after %.1f s", job.scan_id, job.scan_type, job.target, outcome, seconds,
                 extra={"cix": {"event": "scan.end", "engine": job.scan_type, "target": job.target,
                                "status": outcome, "durationSeconds": seconds}})
        return outcome

    def _run(self, claim: Claim, workdir: Path) -> str:
        job = claim.job
        engine = self._engines.get(job.scan_type)
        found = engine.probe() if engine is not None else None
        # Offline data this scan reads may have been removed since submit (engines.base.missing_data).
        lacking = engine.missing_data(job.options) if isinstance(engine, Engine) else []
        if not isinstance(engine, Engine) or found is None or not found.available or lacking:
            missing = "; ".join([*found.missing, *lacking]) if found else "unknown engine"
            self._reporter.finish(claim, "failed", "ENGINE_UNAVAILABLE", f"{job.scan_type}: {missing}")
            return "failed"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        spec = ScanSpec(job.scan_id, job.target, job.target_type, job.options, job.timeout, workdir,
                        found.path or engine.binary, job.addresses, engine.data_dir)
        log.info("scan %s: %s started on %s", job.scan_id, job.scan_type, job.target,
                 extra={"cix": {"event": "scan.start", "engine": job.scan_type, "target": job.target,
                                "targetType": job.target_type}})
        result, lost = self._execute(engine, spec, claim)
        stored, kept = self._store(claim, engine.name, engine.parse(spec), job.max_findings)
        if lost or not kept:
            # Cancelled, timed out by the appliance, or re-queued elsewhere. The finish is refused,
            # but a cancelled scan's summary is recounted with the findings stored after the cancel.
            self._reporter.finish(claim, "cancelled")
            return "stopped"
        if result.stopped:
            if self._stopping.is_set():
                self._reporter.release(claim)
                return "released"
            self._reporter.finish(claim, "cancelled")
            return "cancelled"
        if result.timed_out:
            return self._finish(claim, "failed", "TIMEOUT",
                                f"scan exceeded its timeout of {job.timeout} s ({stored} findings kept)")
        outcome = engine.outcome(spec, result.returncode or 0, result.stderr_tail)
        if not outcome.success:
            return self._finish(claim, "failed", outcome.error_code or "ENGINE_ERROR", outcome.message)
        return self._finish(claim, "completed")

    def _finish(self, claim: Claim, status: str, code: str | None = None, message: str | None = None) -> str:
        self._reporter.finish(claim, status, code, message)
        if code:
            log.info("scan %s: %s (%s: %s)", claim.job.scan_id, status, code, message)
        return status

    def _execute(self, engine: Engine, spec: ScanSpec, claim: Claim) -> tuple[RunResult, bool]:
        """Runs the engine; the second value is True when the appliance told the run to stop."""
        told_to_stop = threading.Event()
        progress: list[int | None] = [None]

        def tick() -> None:
            value = engine.progress(spec)
            if value is not None:
                progress[0] = value
            if not self._reporter.heartbeat(claim, progress[0]):
                told_to_stop.set()

        def on_progress(value: int) -> None:
            progress[0] = value

        control = ProcessControl(spec.workdir, spec.timeout,
                                 should_stop=lambda: told_to_stop.is_set() or self._stopping.is_set(),
                                 on_tick=tick, on_start=lambda pid: self._reporter.process_started(claim, pid),
                                 on_progress=on_progress, kill_grace=self._settings.kill_grace,
                                 output_cap=self._settings.output_cap, tick_seconds=self._settings.tick_seconds)
        try:
            result = engine.run(spec, control)
        finally:
            control.close()
        # A cancel is still a cancel when the scanner ended on its own at the same moment.
        lost = told_to_stop.is_set() and not self._stopping.is_set()
        return result, lost

    def _store(self, claim: Claim, engine: str, findings: Iterator[Finding], limit: int | None) -> tuple[int, bool]:
        """Findings in batches as the parser yields them, at most ``limit``, a few batches in flight
        (:mod:`appliance.scanning.sender`); ``(stored, lease kept)``."""
        def send(batch: list[Finding], first_seq: int) -> bool:
            return self._reporter.findings(claim, engine, batch, first_seq)
        return send_batches(send, findings, self._settings.batch, self._settings.in_flight, limit)
