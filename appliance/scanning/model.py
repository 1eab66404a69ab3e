"""Scans and findings as contract JSON, and findings batches as ops (status changes live in
:mod:`appliance.scanning.lifecycle`)."""
from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson

from appliance import clock
from appliance.scanning.lifecycle import holds_lease
from appliance.store.ops import Op
from appliance.store.reader import Reader
from engines.base import SEVERITIES, Finding

PRIORITIES = ("critical", "high", "normal", "low")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


# The columns scan_json reads: routes that only render scans select these, not ``*`` (fewer values to
# convert per row).
SCAN_COLUMNS = ("id, scan_type, name, target, target_type, status, priority, progress, options, config, tags,"
                " timeout, asset_id, callback_url, template_id, created_at, started_at, completed_at, worker,"
                " error_code, error_message, total, critical, high, medium, low, info")


SCAN_FIELDS = tuple(c.strip() for c in SCAN_COLUMNS.split(","))
_SCAN_VALUES = operator.itemgetter(*SCAN_FIELDS)


def new_scan_row(reader: Reader) -> dict[str, Any]:
    """Every column of ``scans`` with its DEFAULT (None without one), evaluated by SQLite itself: a
    submitted row over these is the row stored, so a submission need not read it back."""
    return {row["name"]: None if row["dflt_value"] is None else reader.scalar(f"SELECT {row['dflt_value']}")
            for row in reader.all("PRAGMA table_info(scans)")}


def scan_json(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
    """The contract's scan object (§4)."""
    return scan_json_values(_SCAN_VALUES(row))


def scan_json_values(values: tuple[Any, ...]) -> dict[str, Any]:
    """The contract's scan object from the values of ``SELECT {SCAN_COLUMNS}``, in that order (the
    list routes read plain tuples: no name lookups per row)."""
    (scan_id, scan_type, name, target, target_type, status, priority, progress, options, config, tags, timeout,
     asset_id, callback_url, template_id, created_at, started_at, completed_at, worker, error_code, error_message,
     total, critical, high, medium, low, info) = values
    data = {
        "id": scan_id, "scanType": scan_type, "name": name, "target": target,
        "targetType": target_type, "status": status, "priority": priority,
        "progress": 100 if status == "completed" else progress,
        "options": _loads(options), "config": _loads(config),
        "tags": _loads(tags), "timeout": timeout, "assetId": asset_id,
        "callbackUrl": callback_url, "templateId": template_id,
        "createdAt": clock.iso(created_at), "startedAt": clock.iso(started_at),
        "completedAt": clock.iso(completed_at),
        "durationMs": round((completed_at - started_at) * 1000) if started_at and completed_at else None,
        "resultSummary": {"total": total, "critical": critical, "high": high, "medium": medium, "low": low,
                          "info": info},
        "worker": worker,
    }
    if status == "failed":
        data["error"] = {"code": error_code, "message": error_message}
    return data


def summary_json(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, int]:
    return {"total": row["total"], "critical": row["critical"], "high": row["high"], "medium": row["medium"],
            "low": row["low"], "info": row["info"]}


def _loads(text: str) -> Any:
    """A stored JSON column. Most are empty; the rest go through orjson, or json for what orjson
    refuses (NaN, which json.dumps may have written)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


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


def _dumps(body: dict[str, Any]) -> str:
    """A finding's stored text: valid JSON (orjson writes NaN as null), so that results can be sent
    as stored. Text that is not valid Unicode is \\u-escaped by json, as before."""
    try:
        return orjson.dumps(body).decode()
    except orjson.JSONEncodeError:
        return json.dumps(body, allow_nan=False)


def findings_op(scan_id: str, lease_id: str, engine: str, findings: list[Finding], first_seq: int) -> Op:
    """One batch of findings, stored only while ``lease_id`` holds the scan; a repeated fingerprint
    within a scan is stored once."""
    rows = []
    for offset, (finding, finding_id) in enumerate(zip(findings, clock.new_ids(len(findings)), strict=True)):
        body = finding_json(finding, scan_id, engine, finding_id)
        rows.append((finding_id, scan_id, first_seq + offset, SEVERITY_RANK[finding.severity],
                     finding.severity, body["fingerprint"], _dumps(body)))
    return Op([holds_lease(scan_id, lease_id),
               ("INSERT OR IGNORE INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint,"
                " body) VALUES (?,?,?,?,?,?,?)", ())], many={1: rows}, guarded=True)
