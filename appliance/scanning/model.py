"""Scans and findings as rows, as contract JSON, and every status transition as a guarded op.

The scan table is the source of truth: each transition is a compare-and-set on ``status``, so a
lost race (a cancel beside a finish, a reconciler beside a worker) changes nothing.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from appliance import clock
from appliance.store.ops import Op
from engines.base import SEVERITIES, Finding

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
PRIORITIES = ("critical", "high", "normal", "low")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
SUMMARY_SQL = ("UPDATE scans SET total = (SELECT count(*) FROM findings WHERE scan_id = :id), "
               + ", ".join(f"{s} = (SELECT count(*) FROM findings WHERE scan_id = :id AND severity = '{s}')"
                           for s in SEVERITIES) + " WHERE id = :id")


def scan_json(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's scan object (§4)."""
    started, completed = row["started_at"], row["completed_at"]
    data = {
        "id": row["id"], "scanType": row["scan_type"], "name": row["name"], "target": row["target"],
        "targetType": row["target_type"], "status": row["status"], "priority": row["priority"],
        "progress": 100 if row["status"] == "completed" else row["progress"],
        "options": json.loads(row["options"]), "config": json.loads(row["config"]),
        "tags": json.loads(row["tags"]), "timeout": row["timeout"], "assetId": row["asset_id"],
        "callbackUrl": row["callback_url"], "templateId": row["template_id"],
        "createdAt": clock.iso(row["created_at"]), "startedAt": clock.iso(started),
        "completedAt": clock.iso(completed),
        "durationMs": round((completed - started) * 1000) if started and completed else None,
        "resultSummary": summary_json(row),
    }
    if row["status"] == "failed":
        data["error"] = {"code": row["error_code"], "message": row["error_message"]}
    return data


def summary_json(row: sqlite3.Row) -> dict[str, int]:
    return {"total": row["total"], **{s: row[s] for s in SEVERITIES}}


def insert_op(scan: dict[str, Any]) -> Op:
    columns = ", ".join(scan)
    return Op([(f"INSERT INTO scans ({columns}) VALUES ({', '.join('?' * len(scan))})",
                tuple(scan.values()))])


def claim_op(scan_id: str, worker: str, workdir: str) -> Op:
    """queued → running, once: a second claim of the same scan changes nothing. Findings of an
    interrupted earlier attempt are dropped so a retry starts clean."""
    now = clock.now()
    return Op([
        ("UPDATE scans SET status = 'running', started_at = ?, heartbeat_at = ?, worker = ?, workdir = ?,"
         " attempts = attempts + 1, progress = 0, pid = NULL WHERE id = ? AND status = 'queued'",
         (now, now, worker, workdir, scan_id)),
        ("DELETE FROM findings WHERE scan_id = ?", (scan_id,)),
    ], guarded=True)


def finish_op(scan_id: str, status: str, error_code: str | None = None, message: str | None = None,
              from_statuses: Iterable[str] = ("running",)) -> Op:
    """Into a terminal status, only from ``from_statuses``; the result summary is recounted."""
    sources = tuple(from_statuses)
    marks = ",".join("?" * len(sources))
    return Op([
        (f"UPDATE scans SET status = ?, completed_at = ?, error_code = ?, error_message = ?, pid = NULL"
         f" WHERE id = ? AND status IN ({marks})",
         (status, clock.now(), error_code, message, scan_id, *sources)),
        (SUMMARY_SQL, {"id": scan_id}),
    ], guarded=True)


def requeue_op(scan_id: str, refund: bool = False) -> Op:
    """running → queued: the reconciler's one retry for a scan whose worker is gone, or a graceful
    shutdown handing the scan back (``refund``: that attempt does not count)."""
    return Op([("UPDATE scans SET status = 'queued', queued_at = ?, worker = NULL, pid = NULL,"
                " started_at = NULL, progress = 0, attempts = attempts - ? WHERE id = ? AND status = 'running'",
                (clock.now(), int(refund), scan_id))], guarded=True)


def summary_op(scan_id: str) -> Op:
    return Op([(SUMMARY_SQL, {"id": scan_id})])


def heartbeat_op(scan_id: str, progress: int | None) -> Op:
    return Op([("UPDATE scans SET heartbeat_at = ?, progress = COALESCE(?, progress)"
                " WHERE id = ? AND status = 'running'", (clock.now(), progress, scan_id))])


def pid_op(scan_id: str, pid: int) -> Op:
    return Op([("UPDATE scans SET pid = ? WHERE id = ? AND status = 'running'", (pid, scan_id))])


def finding_json(finding: Finding, scan_id: str, engine: str, finding_id: str) -> dict[str, Any]:
    return {
        "id": finding_id, "scanId": scan_id, "engine": engine, "ruleId": finding.rule_id,
        "title": finding.title, "severity": finding.severity, "confidence": finding.confidence,
        "host": finding.host, "ip": finding.ip, "port": finding.port, "protocol": finding.protocol,
        "url": finding.url, "parameter": finding.parameter, "cve": finding.cve, "cwe": finding.cwe,
        "cvss": finding.cvss, "description": finding.description, "evidence": finding.evidence,
        "remediation": finding.remediation, "references": finding.references,
        "fingerprint": finding.fingerprint(engine), "detectedBy": [engine], "raw": finding.raw,
    }


def findings_op(scan_id: str, engine: str, findings: list[Finding], first_seq: int) -> Op:
    """One batch of findings; a repeated fingerprint within a scan is stored once."""
    rows = []
    for offset, finding in enumerate(findings):
        finding_id = clock.new_id()
        body = finding_json(finding, scan_id, engine, finding_id)
        rows.append((finding_id, scan_id, first_seq + offset, SEVERITY_RANK[finding.severity],
                     finding.severity, body["fingerprint"], json.dumps(body)))
    return Op([("INSERT OR IGNORE INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint,"
                " body) VALUES (?,?,?,?,?,?,?)", ())], many={0: rows})
