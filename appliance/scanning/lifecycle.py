"""Every change of a scan's status, as one compare-and-set op that also writes its ``scan_events``
row in the same transaction. No other module changes ``scans.status``.

The event rows are the outbox: a webhook dispatcher reads them in ``id`` order, so no transition is
missed and none is announced that did not commit. Events: ``scan.queued``, ``scan.started``,
``scan.progress``, ``scan.requeued``, ``scan.completed``, ``scan.failed``, ``scan.cancelled``.

A running scan holds a *lease* (``lease_id``, renewed by heartbeats until ``lease_expires_at``).
Whatever a worker reports is accepted only under the lease it was given, so a worker that lost its
lease (the scan was re-queued and runs elsewhere) can neither finish the scan nor add findings.
"""
from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Iterable
from typing import Any

from appliance import clock
from appliance.store.ops import Bulk, Op, Statement
from engines.base import SEVERITIES

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINAL_EVENTS = {"completed": "scan.completed", "failed": "scan.failed", "cancelled": "scan.cancelled"}
_COUNTS = ("total = (SELECT count(*) FROM findings WHERE scan_id = :id), "
           + ", ".join(f"{s} = (SELECT count(*) FROM findings WHERE scan_id = :id AND severity_rank = {rank})"
                       for rank, s in enumerate(SEVERITIES)))


def _event(scan_id: str, event: str, detail: dict[str, Any] | None = None, at: float | None = None) -> Statement:
    return ("INSERT INTO scan_events (scan_id, tenant_id, event, status, detail, created_at)"
            " SELECT id, tenant_id, ?, status, ?, ? FROM scans WHERE id = ?",
            (event, json.dumps(detail or {}), clock.now() if at is None else at, scan_id))


def new_lease() -> str:
    return secrets.token_urlsafe(18)


def submit(scan: dict[str, Any]) -> Op:
    """A new scan row, ``queued``."""
    columns = ", ".join(scan)
    values, at = tuple(scan.values()), clock.now()
    return Op([(f"INSERT INTO scans ({columns}) VALUES ({', '.join('?' * len(scan))})", values),
               _event(scan["id"], "scan.queued", at=at)],
              bulk=Bulk(_bulk_submit(columns, len(scan)), (*values, at)))


@functools.lru_cache(maxsize=8)
def _bulk_submit(columns: str, count: int) -> tuple[str, ...]:
    """:func:`submit` for many scans: each row is the scan's values, then its event's time. The event
    row is what ``_event`` writes: the scan was inserted just before with its id, tenant and status."""
    names = [c.strip() for c in columns.split(",")]
    rows = " FROM json_each(?) ORDER BY key"
    return (f"INSERT INTO scans ({columns}) SELECT {', '.join(f'value ->> {i}' for i in range(count))}{rows}",
            "INSERT INTO scan_events (scan_id, tenant_id, event, status, detail, created_at)"
            f" SELECT value ->> {names.index('id')}, value ->> {names.index('tenant_id')}, 'scan.queued',"
            f" value ->> {names.index('status')}, '{{}}', value ->> {count}{rows}")


def claim(scan_id: str, lease_id: str, owner: str, worker: str, lease_seconds: float,
          vetted: Iterable[str], workdir: str | None = None, max_running_per_tenant: int = 0) -> Op:
    """queued → running under a new lease, once: a second claim of the same scan changes nothing,
    nor does a claim while the tenant already runs ``max_running_per_tenant`` scans (0: no cap).
    Findings of an interrupted earlier attempt are dropped so a retry starts clean."""
    now = clock.now()
    cap = max_running_per_tenant or -1
    return Op([
        ("UPDATE scans SET status = 'running', started_at = ?, heartbeat_at = ?, worker = ?, workdir = ?,"
         " lease_id = ?, lease_owner = ?, lease_expires_at = ?, vetted = ?, attempts = attempts + 1,"
         " progress = 0, pid = NULL WHERE id = ? AND status = 'queued' AND (? < 0 OR (SELECT count(*)"
         " FROM scans AS s WHERE s.tenant_id = scans.tenant_id AND s.status = 'running') < ?)",
         (now, now, worker, workdir, lease_id, owner, now + lease_seconds, json.dumps(list(vetted)), scan_id,
          cap, cap)),
        ("DELETE FROM findings WHERE scan_id = ?", (scan_id,)),
        (f"UPDATE scans SET {_COUNTS} WHERE id = :id", {"id": scan_id}),
        _event(scan_id, "scan.started", {"worker": worker}),
    ], guarded=True)


def heartbeat(scan_id: str, lease_id: str, lease_seconds: float, progress: int | None) -> Op:
    """Renew the lease; a changed progress is also an event."""
    now = clock.now()
    return Op([
        ("INSERT INTO scan_events (scan_id, tenant_id, event, status, detail, created_at)"
         " SELECT id, tenant_id, 'scan.progress', status, json_object('progress', ?), ? FROM scans"
         " WHERE id = ? AND lease_id = ? AND status = 'running' AND ? IS NOT NULL AND progress != ?",
         (progress, now, scan_id, lease_id, progress, progress)),
        ("UPDATE scans SET heartbeat_at = ?, lease_expires_at = ?, progress = COALESCE(?, progress)"
         " WHERE id = ? AND lease_id = ? AND status = 'running'",
         (now, now + lease_seconds, progress, scan_id, lease_id)),
    ])


def process_started(scan_id: str, lease_id: str, pid: int) -> Op:
    """The scanner's process group, so that a restarted appliance can end what it left behind."""
    return Op([("UPDATE scans SET pid = ? WHERE id = ? AND lease_id = ? AND status = 'running'",
                (pid, scan_id, lease_id))])


def finish(scan_id: str, lease_id: str, status: str, error_code: str | None = None,
           message: str | None = None) -> Op:
    """running → a terminal status, by the worker holding the lease."""
    return Op([
        ("UPDATE scans SET status = ?, completed_at = ?, error_code = ?, error_message = ?, pid = NULL"
         " WHERE id = ? AND lease_id = ? AND status = 'running'",
         (status, clock.now(), error_code, message, scan_id, lease_id)),
        (f"UPDATE scans SET {_COUNTS} WHERE id = :id", {"id": scan_id}),
        _event(scan_id, FINAL_EVENTS[status], _error(error_code, message)),
    ], guarded=True)


def end(scan_id: str, status: str, error_code: str | None = None, message: str | None = None,
        from_statuses: Iterable[str] = ACTIVE) -> Op:
    """Into a terminal status regardless of lease: a cancel, a timeout, an interrupted run, a
    target refused at claim time. Only from ``from_statuses``."""
    sources = tuple(from_statuses)
    marks = ",".join("?" * len(sources))
    return Op([
        (f"UPDATE scans SET status = ?, completed_at = ?, error_code = ?, error_message = ?, pid = NULL"
         f" WHERE id = ? AND status IN ({marks})",
         (status, clock.now(), error_code, message, scan_id, *sources)),
        (f"UPDATE scans SET {_COUNTS} WHERE id = :id", {"id": scan_id}),
        _event(scan_id, FINAL_EVENTS[status], _error(error_code, message)),
    ], guarded=True)


def requeue(scan_id: str, reason: str, refund: bool = False, lease_id: str | None = None) -> Op:
    """running → queued, dropping the lease: the one retry of a scan whose worker is gone, or a
    worker shutting down and handing the scan back (``refund``: that attempt does not count)."""
    lease_clause, params = ("", ()) if lease_id is None else (" AND lease_id = ?", (lease_id,))
    return Op([
        ("UPDATE scans SET status = 'queued', queued_at = ?, worker = NULL, pid = NULL, lease_id = NULL,"
         " lease_owner = NULL, lease_expires_at = NULL, started_at = NULL, progress = 0,"
         f" attempts = attempts - ? WHERE id = ? AND status = 'running'{lease_clause}",
         (clock.now(), int(refund), scan_id, *params)),
        _event(scan_id, "scan.requeued", {"reason": reason}),
    ], guarded=True)


def recount(scan_id: str, lease_id: str) -> Op:
    """The result summary again, after the last findings of a run a cancel had already ended."""
    return Op([(f"UPDATE scans SET {_COUNTS} WHERE id = :id AND lease_id = :lease",
                {"id": scan_id, "lease": lease_id})])


def holds_lease(scan_id: str, lease_id: str) -> Statement:
    """A guard statement: changes one row while ``lease_id`` is the scan's lease."""
    return ("UPDATE scans SET heartbeat_at = ? WHERE id = ? AND lease_id = ?", (clock.now(), scan_id, lease_id))


def _error(code: str | None, message: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}} if code else {}
