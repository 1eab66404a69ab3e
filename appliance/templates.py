"""Scan templates (§5): saved scan settings a pipeline launches with only a target.

Options are checked with the engine's own schema when a template is created or changed, and the
launch goes through the same submission path as ``POST /scans`` with the template's settings
under the launch's overrides (``options`` merged key by key), so the result is checked again
in full: scope, scan type, engine, target, options, target authorization, callback, quota.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from appliance import clock
from appliance.apikeys import KeyGrant
from appliance.audit import audit_op
from appliance.bodies import LaunchRequest, given, parse, template_shape
from appliance.errors import ApiError, ValidationError
from appliance.scanning.submit import all_target_types, engine_config
from appliance.store.ops import Op
from engines.base import Engine, Scanner
from engines.options import OptionError

# column -> JSON field of the template object
_COLUMNS = {"name": "name", "description": "description", "scan_type": "scanType", "target_type": "targetType",
            "priority": "priority", "options": "options", "config": "config", "tags": "tags", "timeout": "timeout"}


def _json_fields(row: sqlite3.Row | Mapping[str, Any]) -> dict[str, Any]:
    """The template's settings in request-body form (what a PATCH starts from)."""
    out: dict[str, Any] = {}
    for column, name in _COLUMNS.items():
        value = row[column]
        out[name] = json.loads(value) if column in ("options", "config", "tags") else value
    return out


def validate(data: Any, grant: KeyGrant, engines: Mapping[str, Scanner]) -> dict[str, Any]:
    """A full template body → column values; raises the contract's errors."""
    body = given(parse(data, template_shape(all_target_types(engines))))
    scan_type: str = body["scanType"]
    if scan_type not in engines:
        raise ApiError(400, "INVALID_SCAN_TYPE", f"unknown scanType {scan_type!r}; one of: {', '.join(engines)}",
                       [{"field": "scanType", "message": "unknown scan type"}])
    if grant.allowed_scan_types is not None and scan_type not in grant.allowed_scan_types:
        raise ApiError(403, "SCAN_TYPE_NOT_ALLOWED", f"this API key may not run {scan_type} scans")
    engine = engines[scan_type]
    if not isinstance(engine, Engine):
        raise ApiError(503, "ENGINE_UNAVAILABLE", f"{scan_type} has no adapter on this appliance")
    target_type = body.get("targetType")
    if target_type is not None and target_type not in engine.target_types:
        raise ValidationError("targetType", f"{scan_type} does not scan {target_type} targets", "INVALID_TARGET")
    try:
        options = engine.validate(body.get("options") or {})
    except OptionError as exc:
        raise ValidationError(exc.field, exc.message, "INVALID_OPTIONS") from None
    return {
        "name": body["name"], "description": body.get("description"),
        "scan_type": scan_type, "target_type": target_type,
        "priority": body.get("priority", "normal"),
        "options": json.dumps(options), "config": json.dumps(engine_config(body.get("config") or {})),
        "tags": json.dumps(list(dict.fromkeys(body.get("tags", [])))),
        "timeout": body.get("timeout"),
    }


def patched(row: sqlite3.Row, data: Any, engines: Mapping[str, Scanner]) -> dict[str, Any]:
    """A PATCH body over the stored template, as a full body to validate again."""
    parse(data, template_shape(all_target_types(engines), partial=True))
    if not data:
        raise ValidationError("body", "names no field to change")
    return {**_json_fields(row), **data}


def create_ops(tenant_id: str, fields: dict[str, Any], actor: str) -> tuple[str, list[Op]]:
    template_id = clock.new_id("tmpl-")
    now = clock.now()
    row = {"id": template_id, "tenant_id": tenant_id, **fields, "created_at": now, "updated_at": now}
    return template_id, [
        Op([(f"INSERT INTO scan_templates ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
             tuple(row.values()))]),
        audit_op(tenant_id, actor, "template.created", "template", template_id,
                 {"name": fields["name"], "scanType": fields["scan_type"]})]


def update_ops(row: sqlite3.Row, fields: dict[str, Any], actor: str) -> list[Op]:
    changed = sorted(_COLUMNS[c] for c, v in fields.items() if row[c] != v)
    return [Op([(f"UPDATE scan_templates SET {', '.join(f'{c} = ?' for c in fields)}, updated_at = ? WHERE id = ?",
                 (*fields.values(), clock.now(), row["id"]))]),
            audit_op(row["tenant_id"], actor, "template.updated", "template", row["id"], {"changed": changed})]


def delete_ops(row: sqlite3.Row, actor: str) -> list[Op]:
    """The template only: scans launched from it keep their ``templateId``."""
    return [Op([("DELETE FROM scan_templates WHERE id = ?", (row["id"],))]),
            audit_op(row["tenant_id"], actor, "template.deleted", "template", row["id"], {"name": row["name"]})]


def launch_body(row: sqlite3.Row, data: Any) -> dict[str, Any]:
    """The ``POST /scans`` body a launch stands for: the template under the launch's fields."""
    body = given(parse(data, LaunchRequest))
    overrides = body.get("options") or {}
    template = _json_fields(row)
    scan: dict[str, Any] = {
        "scanType": template["scanType"], "target": body.get("target"),
        "name": body.get("name") or template["name"],
        "priority": body.get("priority") or template["priority"],
        "options": {**template["options"], **overrides}, "config": template["config"],
        "tags": body.get("tags", template["tags"]),
    }
    for name in ("targetType", "timeout"):
        if template[name] is not None:
            scan[name] = template[name]
    if body.get("callbackUrl") is not None:
        scan["callbackUrl"] = body["callbackUrl"]
    return scan


def to_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], **_json_fields(row), "createdAt": clock.iso(row["created_at"]),
            "updatedAt": clock.iso(row["updated_at"])}
