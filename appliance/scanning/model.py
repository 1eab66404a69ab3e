"""Scans and findings as contract JSON, and findings batches as ops (status changes live in
:mod:`appliance.scanning.lifecycle`)."""
from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from appliance import clock
from appliance.scanning.lifecycle import holds_lease
from appliance.store.ops import Op
from appliance.store.reader import Reader
from engines.base import SEVERITIES, Finding, fingerprint_of

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


# What a finding comes as: a Finding, its fields by name (the slow way's checked wire form), or a
# remote worker's decoded report entry (workers/wire.py: a Struct of Finding's fields, in its order).
FindingLike = Finding | Mapping[str, Any] | msgspec.Struct
FINDING_FIELDS = tuple(f.name for f in dataclasses.fields(Finding))
_BY_NAME = operator.itemgetter(*FINDING_FIELDS)


def finding_values(finding: FindingLike) -> tuple[Any, ...]:
    """A finding's fields in :class:`Finding`'s order."""
    if isinstance(finding, Mapping | Finding):
        values: tuple[Any, ...] = _BY_NAME(finding if isinstance(finding, Mapping) else vars(finding))
        return values
    return msgspec.structs.astuple(finding)


def finding_json(finding: FindingLike, scan_id: str, engine: str, finding_id: str) -> dict[str, Any]:
    """The contract's finding object (§4), from a :class:`Finding` or its fields (a remote worker's
    checked wire form: no object built for it)."""
    (rule_id, title, severity, confidence, host, ip, port, protocol, url, parameter, cve, cwe, cvss, description,
     evidence, remediation, references, raw) = finding_values(finding)
    return {
        "id": finding_id, "scanId": scan_id, "engine": engine, "ruleId": rule_id,
        "title": title, "severity": severity, "confidence": confidence,
        "host": host, "ip": ip, "port": port, "protocol": protocol,
        "url": url, "parameter": parameter, "cve": cve, "cwe": cwe,
        "cvss": cvss, "description": description, "evidence": evidence,
        "remediation": remediation, "references": references,
        "fingerprint": fingerprint_of(engine, rule_id, host, ip, port, protocol, url, parameter),
        "detectedBy": [engine], "raw": raw,
    }


def _dumps(body: dict[str, Any]) -> str:
    """A finding's stored text: valid JSON (orjson writes NaN as null), so that results can be sent
    as stored. Text that is not valid Unicode is \\u-escaped by json, as before."""
    try:
        return orjson.dumps(body).decode()
    except orjson.JSONEncodeError:
        return json.dumps(body, allow_nan=False)


# A repeated fingerprint within a scan is stored once: the finding the worker found first (lowest
# seq) is kept, whichever batch was committed first. A worker keeps several batches in flight
# (appliance.scanning.sender), so batches may arrive out of order; the result is the same as in order.
_UPSERT = (" ON CONFLICT (scan_id, fingerprint) DO UPDATE SET id = excluded.id,"
           " seq = excluded.seq, severity_rank = excluded.severity_rank, severity = excluded.severity,"
           " body = excluded.body WHERE excluded.seq < findings.seq")
_INSERT = "INSERT INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint, body) VALUES (?,?,?,?,?,?,?)" \
    + _UPSERT
FindingRow = tuple[str, str, int, int, str, str, str]

# A whole batch in one statement, its rows cut out of two blobs in SQLite's C code: ``executemany``
# takes the GIL back for every row's parameters and waits up to the switch interval (5 ms) whenever
# the event loop runs Python meanwhile, which under ingest it nearly always does. ?2 holds one
# fixed-width record per row (severity rank, id, fingerprint, body offset and length), ?3 the bodies'
# UTF-8 one after another; a blob's substr is by byte (a text's counts characters from the start).
# The bodies are copied byte for byte: the stored text is the one ``_dumps`` made.
_ID, _FP, _NUM = 36, 32, 12
_RECORD = 1 + _ID + _FP + 2 * _NUM
_SEVERITY_OF_RANK = " ".join(f"WHEN {rank} THEN '{name}'" for name, rank in SEVERITY_RANK.items())
_PACKED_INSERT = (
    f"WITH RECURSIVE n(k, r) AS (SELECT 0, substr(?2, 1, {_RECORD}) UNION ALL"
    f" SELECT k + 1, substr(?2, (k + 1) * {_RECORD} + 1, {_RECORD}) FROM n WHERE k + 1 < ?5)"
    " INSERT INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint, body)"
    f" SELECT CAST(substr(r, 2, {_ID}) AS TEXT), ?1, ?4 + k, CAST(substr(r, 1, 1) AS INTEGER),"
    f" CASE CAST(substr(r, 1, 1) AS INTEGER) {_SEVERITY_OF_RANK} END, CAST(substr(r, {2 + _ID}, {_FP}) AS TEXT),"
    f" CAST(substr(?3, CAST(substr(r, {2 + _ID + _FP}, {_NUM}) AS INTEGER),"
    f" CAST(substr(r, {2 + _ID + _FP + _NUM}, {_NUM}) AS INTEGER)) AS TEXT)"
    " FROM n WHERE true" + _UPSERT)
_MAX_SEQ = 2**63 - 1


def finding_rows(scan_id: str, engine: str, findings: Sequence[FindingLike], first_seq: int,
                 ids: Sequence[str] | None = None) -> list[FindingRow]:
    """The ``findings`` rows of findings (objects, or fields by name) numbered from ``first_seq``,
    with the given ids (:func:`appliance.clock.new_ids`) or new ones."""
    rows = []
    ids = clock.new_ids(len(findings)) if ids is None else ids
    for offset, (finding, finding_id) in enumerate(zip(findings, ids, strict=True)):
        body = finding_json(finding, scan_id, engine, finding_id)
        severity = body["severity"]
        rows.append((finding_id, scan_id, first_seq + offset, SEVERITY_RANK[severity], severity,
                     body["fingerprint"], _dumps(body)))
    return rows


def findings_op(scan_id: str, lease_id: str, rows: Sequence[FindingRow]) -> Op:
    """A batch of findings rows, stored only while ``lease_id`` holds the scan; a repeated
    fingerprint within a scan is stored once."""
    packed = _packed(scan_id, rows)
    if packed is None:
        return Op([holds_lease(scan_id, lease_id), (_INSERT, ())], many={1: rows}, guarded=True, bounded=True)
    return Op([holds_lease(scan_id, lease_id), (_PACKED_INSERT, packed)], guarded=True, bounded=True)


def _packed(scan_id: str, rows: Sequence[FindingRow]) -> tuple[str, bytes, bytes, int, int] | None:
    """The parameters of ``_PACKED_INSERT`` for ``rows``, or None for rows it cannot carry (none the
    appliance makes; they go through ``executemany``, as before): ids and fingerprints of another
    length, seqs not counted up by one, text that is not ASCII where the records are fixed-width."""
    if not rows or rows[0][2] < 0 or rows[0][2] + len(rows) > _MAX_SEQ:
        return None
    first_seq = rows[0][2]
    records, bodies, offset = [], [], 1
    try:
        for index, (finding_id, row_scan, seq, rank, severity, fp, text) in enumerate(rows):
            body = text.encode()
            record = f"{rank}{finding_id}{fp}{offset:0{_NUM}d}{len(body):0{_NUM}d}"
            if (len(record) != _RECORD or row_scan != scan_id or seq != first_seq + index
                    or SEVERITY_RANK.get(severity) != rank):
                return None
            records.append(record)
            bodies.append(body)
            offset += len(body)
        return scan_id, "".join(records).encode("ascii"), b"".join(bodies), first_seq, len(rows)
    except (UnicodeEncodeError, TypeError):
        return None
