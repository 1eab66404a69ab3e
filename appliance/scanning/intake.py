"""The appliance's side of a running scan: claims, heartbeats, findings and the finish, from the
embedded worker (through :class:`~appliance.scanning.reporter.LocalReporter`) and from remote
workers (through the internal HTTPS routes) alike. Everything a worker says is taken only under the
lease its claim was given.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.scanning import batches, lifecycle, model
from appliance.scanning.dispatch import Dispatcher
from appliance.scanning.job import Job
from appliance.store import Reader, Writer
from appliance.targets import TargetError

log = logging.getLogger(__name__)
TENANT_WAIT_SECONDS = 5.0  # a scan over its tenant's running cap is offered again after this
# Findings turned into rows per turn of the event loop (about 1 ms): a batch of hundreds of findings
# never holds up /health and the other requests for its whole time.
ROWS_PER_TURN = 100


@dataclass(frozen=True)
class Claim:
    lease_id: str
    job: Job  # the appliance's own copy, with freshly vetted addresses


@dataclass(frozen=True)
class IntakeSettings:
    lease_seconds: float
    max_running_per_tenant: int  # 0: no cap


class Intake:
    def __init__(self, reader: Reader, writer: Writer, dispatcher: Dispatcher,
                 enqueue: Callable[[Job, float | None], None], settings: IntakeSettings) -> None:
        self._reader = reader
        self._writer = writer
        self._dispatcher = dispatcher
        self._enqueue = enqueue
        self._settings = settings

    async def claim(self, scan_id: str, owner: str, worker: str, workdir: str | None = None,
                    zones: tuple[str, ...] | None = None) -> Claim | None:
        """queued → running for ``worker``, after checking the target again with the policy and DNS
        of now. None when the scan is no longer queued, is refused, or must wait. ``zones``: the
        zones of a remote worker (None for the embedded one, which serves the default zone)."""
        row = self._reader.one("SELECT * FROM scans WHERE id = ?", (scan_id,))
        if row is None or row["status"] != "queued":
            return None
        if row["zone"] not in (zones or ("",)):
            return None  # not this worker's segment
        try:
            target = self._dispatcher.target_of(row)
            problem, addresses = await asyncio.to_thread(self._dispatcher.vet, row["tenant_id"], target,
                                                         row["scan_type"])
        except (TargetError, KeyError) as exc:
            problem, addresses = f"target can no longer be parsed: {exc}", ()
        if problem:
            await self._writer.write(lifecycle.end(scan_id, "failed", "TARGET_NOT_ALLOWED", problem,
                                                   from_statuses=("queued",)))
            return None
        lease_id = lifecycle.new_lease()
        vetted = [str(a) for a in addresses]
        claimed = await self._writer.write(lifecycle.claim(scan_id, lease_id, owner, worker,
                                                           self._settings.lease_seconds, vetted, workdir,
                                                           self._settings.max_running_per_tenant))
        if not claimed[0]:
            if self._reader.scalar("SELECT status FROM scans WHERE id = ?", (scan_id,)) == "queued":
                # The tenant runs as many scans as it may: offer this one again a little later.
                await asyncio.to_thread(self._enqueue, self._dispatcher.job(row), TENANT_WAIT_SECONDS)
            return None
        return Claim(lease_id, self._dispatcher.job(row, vetted))

    def still_holds(self, scan_id: str, lease_id: str) -> bool:
        row = self._reader.one("SELECT status, lease_id FROM scans WHERE id = ?", (scan_id,))
        return row is not None and row["status"] == "running" and row["lease_id"] == lease_id

    async def heartbeat(self, scan_id: str, lease_id: str, progress: int | None) -> bool:
        """Renews the lease (buffered: durable within a second); False tells the worker to stop —
        the scan was cancelled, timed out, or re-queued to another worker."""
        self._writer.buffer(lifecycle.heartbeat(scan_id, lease_id, self._settings.lease_seconds, progress))
        return self.still_holds(scan_id, lease_id)

    async def process_started(self, scan_id: str, lease_id: str, pid: int) -> None:
        await self._writer.write(lifecycle.process_started(scan_id, lease_id, pid))

    async def findings(self, scan_id: str, lease_id: str, engine: str,
                       batch: Sequence[model.FindingLike], first_seq: int) -> bool:
        """Stores a batch (findings, or a remote worker's checked fields by name); False when the lease
        is lost (nothing stored)."""
        if not batch:
            return self.still_holds(scan_id, lease_id)
        encoder = batches.BatchEncoder(engine)
        for start in range(0, len(batch), ROWS_PER_TURN):
            if start:
                await asyncio.sleep(0)  # a batch's rows take milliseconds: serve what waits meanwhile
            encoder.add(batch[start:start + ROWS_PER_TURN])
        return bool((await self._writer.write(encoder.op(scan_id, lease_id, first_seq)))[0])

    async def finish(self, scan_id: str, lease_id: str, status: str, code: str | None = None,
                     message: str | None = None) -> bool:
        """The run's end. A scan a cancel already ended keeps its status; its summary is recounted
        with the findings that arrived after the cancel."""
        done, _, _ = await self._writer.write(lifecycle.finish(scan_id, lease_id, status, code, message),
                                              lifecycle.recount(scan_id, lease_id), batches.forget(scan_id))
        return bool(done)

    async def release(self, scan_id: str, lease_id: str) -> bool:
        """A worker shutting down hands the scan back: queued again, the attempt not counted."""
        done = (await self._writer.write(lifecycle.requeue(scan_id, "worker shut down", refund=True,
                                                           lease_id=lease_id)))[0]
        if done:
            row = self._reader.one("SELECT * FROM scans WHERE id = ?", (scan_id,))
            if row is not None:
                await asyncio.to_thread(self._enqueue, self._dispatcher.job(row), None)
        return bool(done)


def claim_json(claim: Claim) -> dict[str, object]:
    return {"leaseId": claim.lease_id, "job": claim.job.to_dict()}


def claim_from_json(data: object) -> Claim:
    if not isinstance(data, dict) or not isinstance(data.get("leaseId"), str):
        raise ValueError("a claim answer carries leaseId and job")
    return Claim(data["leaseId"], Job.from_dict(data.get("job")))





