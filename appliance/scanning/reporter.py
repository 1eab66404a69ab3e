"""The narrow interface a scan task reports through, and its two implementations: the embedded
worker's (straight into :class:`~appliance.scanning.intake.Intake`, on the server's event loop) and a
remote worker's (the same calls over HTTPS to the appliance, with a worker token)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from appliance.scanning.intake import Claim, Intake, claim_from_json
from appliance.scanning.job import Job
from engines.base import Finding

if TYPE_CHECKING:
    import httpx  # only a remote worker's reporter uses it; the appliance imports this module at start

T = TypeVar("T")
WORKER_TOKEN_HEADER = "X-Worker-Token"
INTERNAL_PREFIX = "/internal/v1/worker"


class Reporter(Protocol):
    name: str  # the worker's name, shown as the scan's ``worker``

    def claim(self, job: Job, workdir: str) -> Claim | None: ...

    def heartbeat(self, claim: Claim, progress: int | None) -> bool:
        """False: stop now (cancelled, timed out, or the lease went to another worker)."""
        ...

    def process_started(self, claim: Claim, pid: int) -> None: ...

    def findings(self, claim: Claim, engine: str, batch: list[Finding], first_seq: int) -> bool:
        """False: the lease is lost and nothing was stored."""
        ...

    def finish(self, claim: Claim, status: str, code: str | None = None, message: str | None = None) -> bool: ...

    def release(self, claim: Claim) -> None:
        """Hand the scan back to the queue (this worker is shutting down)."""
        ...


class LocalReporter:
    """The embedded worker's reporter: worker threads call the intake on the server's loop."""

    def __init__(self, intake: Intake, loop: asyncio.AbstractEventLoop, owner: str, name: str = "embedded",
                 timeout: float = 60) -> None:
        self._intake = intake
        self._loop = loop
        self.owner = owner
        self.name = name
        self._timeout = timeout

    def _call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)  # type: ignore[arg-type]

    def claim(self, job: Job, workdir: str) -> Claim | None:
        return self._call(self._intake.claim(job.scan_id, self.owner, self.name, workdir))

    def heartbeat(self, claim: Claim, progress: int | None) -> bool:
        return self._call(self._intake.heartbeat(claim.job.scan_id, claim.lease_id, progress))

    def process_started(self, claim: Claim, pid: int) -> None:
        self._call(self._intake.process_started(claim.job.scan_id, claim.lease_id, pid))

    def findings(self, claim: Claim, engine: str, batch: list[Finding], first_seq: int) -> bool:
        return self._call(self._intake.findings(claim.job.scan_id, claim.lease_id, engine, batch, first_seq))

    def finish(self, claim: Claim, status: str, code: str | None = None, message: str | None = None) -> bool:
        return self._call(self._intake.finish(claim.job.scan_id, claim.lease_id, status, code, message))

    def release(self, claim: Claim) -> None:
        self._call(self._intake.release(claim.job.scan_id, claim.lease_id))


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # what orjson refuses (text that is not valid Unicode): as httpx did
        return json.dumps(body).encode()


# The appliance refuses request bodies over 1 MiB (413): a findings report stays under this, the
# rest of the MiB left for the envelope's other fields.
MAX_REPORT_BYTES = 1000 * 1024
_LONG_FIELDS = ("evidence", "description")
_KEEP_CHARS = 64 * 1024


class ReportError(Exception):
    """The appliance could not be told (network down, or it answered an error)."""


class RemoteReporter:
    """A remote worker's reporter: one HTTPS call per report, authenticated by the worker token."""

    def __init__(self, client: httpx.Client, name: str) -> None:
        self._client = client
        self.name = name

    def _post(self, path: str, body: dict[str, Any], content: bytes | None = None) -> Any:
        import httpx

        try:
            # orjson: a findings batch is hundreds of kilobytes of JSON, encoded on the scan's thread.
            response = self._client.post(f"{INTERNAL_PREFIX}/{path}", content=content or _encode(body),
                                         headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise ReportError(f"appliance unreachable: {exc}") from exc
        if response.status_code == 409:
            return None  # the lease is not (or no longer) ours
        if response.status_code >= 400:
            raise ReportError(f"appliance answered {response.status_code}: {response.text[:200]}")
        return response.json()["data"]

    def claim(self, job: Job, workdir: str) -> Claim | None:
        data = self._post("claim", {"scanId": job.scan_id, "workdir": workdir})
        return None if data is None else claim_from_json(data)

    def heartbeat(self, claim: Claim, progress: int | None) -> bool:
        try:
            data = self._post("heartbeat", {"scanId": claim.job.scan_id, "leaseId": claim.lease_id,
                                            "progress": progress})
        except ReportError:
            return True  # a passing network fault: keep scanning; a lost lease is refused later
        return bool(data and data.get("continue"))

    def process_started(self, claim: Claim, pid: int) -> None:
        """A remote scanner's pid means nothing to the appliance: the worker ends its own groups."""

    def findings(self, claim: Claim, engine: str, batch: list[Finding], first_seq: int) -> bool:
        # A finding's wire form is its fields by name: its ``vars`` (``dataclasses.asdict`` deep-copies).
        return self._send_findings(claim, [vars(f) for f in batch], first_seq)

    def _send_findings(self, claim: Claim, items: list[dict[str, Any]], first_seq: int) -> bool:
        """One report, or halves of it until each fits the appliance's body limit (each finding keeps
        its seq); a single finding too large alone is sent with its long texts cut and no raw data."""
        body = {"scanId": claim.job.scan_id, "leaseId": claim.lease_id, "firstSeq": first_seq, "findings": items}
        content = _encode(body)
        if len(content) > MAX_REPORT_BYTES and len(items) > 1:
            half = len(items) // 2
            return (self._send_findings(claim, items[:half], first_seq)
                    and self._send_findings(claim, items[half:], first_seq + half))
        if len(content) > MAX_REPORT_BYTES and not _is_trimmed(items[0]):
            return self._send_findings(claim, [_trimmed(items[0])], first_seq)
        return self._post("findings", body, content) is not None  # if still too large, the appliance says why

    def finish(self, claim: Claim, status: str, code: str | None = None, message: str | None = None) -> bool:
        data = self._post("finish", {"scanId": claim.job.scan_id, "leaseId": claim.lease_id, "status": status,
                                     "errorCode": code, "message": message})
        return data is not None

    def release(self, claim: Claim) -> None:
        self._post("release", {"scanId": claim.job.scan_id, "leaseId": claim.lease_id})


def _trimmed(item: dict[str, Any]) -> dict[str, Any]:
    cut = {name: item[name][:_KEEP_CHARS] + " [truncated: too large to report]"
           for name in _LONG_FIELDS if isinstance(item.get(name), str) and len(item[name]) > _KEEP_CHARS}
    return {**item, **cut, "raw": {"truncated": True}}


def _is_trimmed(item: dict[str, Any]) -> bool:
    return item.get("raw") == {"truncated": True}
