"""Scans as contract JSON, and a finding's values (findings batches are stored by
:mod:`appliance.scanning.batches`, status changes by :mod:`appliance.scanning.lifecycle`)."""
from __future__ import annotations

import dataclasses
import json
import operator
import sqlite3
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
import orjson

from appliance import clock
from appliance.store.reader import Reader
from engines.base import CONFIDENCES, SEVERITIES, Finding

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


def _field(spec: dataclasses.Field[Any]) -> tuple[str, Any] | tuple[str, Any, Any]:
    kind = _CHECKED.get(spec.name, _SCALAR)
    if spec.default_factory is not dataclasses.MISSING:
        return spec.name, kind, msgspec.field(default_factory=spec.default_factory)
    if spec.default is dataclasses.MISSING:
        return spec.name, kind
    return spec.name, kind, spec.default


# A finding's fields as msgspec decodes a remote worker's report entry (appliance.workers.wire) and
# encodes a stored finding (appliance.scanning.batches): Finding's fields in its order, by their
# Python names, known fields only; ruleId and title strings, a known severity and confidence, the
# fingerprint's text fields text or null; the other fields in the shapes findings have them: a JSON
# scalar, for cve, cwe and references also a list of scalars, for cvss an object of scalars, raw
# anything. So only raw can nest deeper than one level (the depth check walks it alone). A report
# the slow way accepts in other shapes (a list for a description) goes the slow way, with its
# answer. Not tracked by the garbage collector: decoded JSON holds no reference cycles, and a
# report's thousand entries would otherwise set off collections.
_SCALAR = str | int | float | bool | None
# The fingerprint's text fields must be text (the slow way refuses anything else too: routes._finding).
IDENTITY_TEXT = ("host", "ip", "protocol", "url", "parameter")
_CHECKED: dict[str, Any] = {**dict.fromkeys(IDENTITY_TEXT, str | None), "rule_id": str, "title": str,
                            "severity": Literal[SEVERITIES],
                            "confidence": Literal[CONFIDENCES], "cve": list[_SCALAR] | _SCALAR,
                            "cwe": list[_SCALAR] | _SCALAR, "references": list[_SCALAR] | _SCALAR,
                            "cvss": dict[str, _SCALAR] | _SCALAR, "raw": Any}
FindingStruct = msgspec.defstruct("FindingStruct", [_field(f) for f in dataclasses.fields(Finding)],
                                  forbid_unknown_fields=True, gc=False)
# What a finding comes as: a Finding, its fields by name (the slow way's checked wire form), or a
# remote worker's decoded report entry.
FindingLike = Finding | Mapping[str, Any] | msgspec.Struct
FINDING_FIELDS = tuple(f.name for f in dataclasses.fields(Finding))
_BY_NAME = operator.itemgetter(*FINDING_FIELDS)


def finding_struct(finding: FindingLike) -> Any:
    """``finding`` as a :data:`FindingStruct` (a decoded report entry is one already)."""
    if type(finding) is FindingStruct:
        return finding
    return FindingStruct(*finding_values(finding))


def finding_values(finding: FindingLike) -> tuple[Any, ...]:
    """A finding's fields in :class:`Finding`'s order."""
    if isinstance(finding, Mapping | Finding):
        values: tuple[Any, ...] = _BY_NAME(finding if isinstance(finding, Mapping) else vars(finding))
        return values
    return msgspec.structs.astuple(finding)
