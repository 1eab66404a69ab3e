"""``POST /scans`` bodies: validated field by field into a scan row, or an error with the contract code.

The order of checks is the order a client fixes them in: body shape, scan type, key limits, engine
availability, target, options, then target authorization (which may resolve a name).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from appliance import clock
from appliance.apikeys import KeyGrant
from appliance.engine_data import require_engine_data
from appliance.errors import ApiError, ValidationError
from appliance.scanning.model import PRIORITIES
from appliance.targets import Target, TargetError, parse_target
from appliance.validate import Body, check_int
from engines.base import Engine, OptionError, Scanner
from engines.registry import target_types

FIELDS = ("target", "scanType", "name", "targetType", "priority", "options", "config", "tags",
          "timeout", "assetId", "callbackUrl")
CONFIG_KEYS = {"timeoutSeconds": (30, 86400), "maxFindings": (1, 1_000_000)}


def parse_scan(data: Any, grant: KeyGrant, engines: Mapping[str, Scanner],
               max_timeout: int = 86400) -> tuple[dict[str, Any], Target]:
    """A scan row (status ``queued``) and its parsed target; raises :class:`ApiError`."""
    body = Body(data, FIELDS)
    scan_type = body.string("scanType", required=True, max_length=64) or ""
    if scan_type not in engines:
        raise ApiError(400, "INVALID_SCAN_TYPE", f"unknown scanType {scan_type!r}; one of: {', '.join(engines)}",
                       [{"field": "scanType", "message": "unknown scan type"}])
    if grant.allowed_scan_types is not None and scan_type not in grant.allowed_scan_types:
        raise ApiError(403, "SCAN_TYPE_NOT_ALLOWED", f"this API key may not run {scan_type} scans")
    engine = engines[scan_type]
    found = engine.probe()
    if not isinstance(engine, Engine) or not found.available:
        raise ApiError(503, "ENGINE_UNAVAILABLE", f"{scan_type} is not available on this appliance: "
                       + "; ".join(found.missing))
    target_type = body.string("targetType", choices=target_types(engines))
    target_text = body.string("target", required=True, max_length=2048)
    try:
        target = parse_target(target_text, target_type or engine.infer_target_type(target_text or ""))
    except TargetError as exc:
        raise ValidationError("target", str(exc), "INVALID_TARGET") from None
    if target.type not in engine.target_types:
        raise ValidationError("targetType", f"{scan_type} does not scan {target.type} targets "
                              f"(it scans: {', '.join(sorted(engine.target_types))})", "INVALID_TARGET")
    try:
        options = engine.validate(body.mapping("options") or {})
    except OptionError as exc:
        raise ValidationError(exc.field, exc.message, "INVALID_OPTIONS") from None
    require_engine_data(engine, options)
    config = _engine_config(body.mapping("config") or {})
    priority = body.string("priority", choices=PRIORITIES, default="normal") or "normal"
    if grant.allowed_priorities is not None and priority not in grant.allowed_priorities:
        raise ApiError(403, "INSUFFICIENT_SCOPE", f"this API key may not submit {priority}-priority scans "
                       f"(allowedPriorities: {', '.join(grant.allowed_priorities)})")
    timeout = (body.integer("timeout", 30, max_timeout) or config.get("timeoutSeconds")
               or min(engine.default_timeout, max_timeout))
    if timeout > max_timeout:
        raise ValidationError("timeout", f"must be at most {max_timeout} seconds (scans.max_timeout_seconds)")
    now = clock.now()
    row = {
        "id": clock.new_id(), "tenant_id": grant.tenant_id, "api_key_id": grant.id, "scan_type": scan_type,
        "name": body.string("name"), "target": target.value, "target_type": target.type,
        "status": "queued", "priority": priority,
        "options": json.dumps(options), "config": json.dumps(config),
        "tags": json.dumps(body.strings("tags", max_items=20, max_length=64, default=[])),
        "timeout": timeout, "asset_id": body.string("assetId"),
        "callback_url": _callback_url(body.string("callbackUrl", max_length=2048)),
        "created_at": now, "queued_at": now,
    }
    return row, target


def _engine_config(raw: dict[str, Any]) -> dict[str, int]:
    clean = {}
    for name, value in raw.items():
        if name not in CONFIG_KEYS:
            raise ValidationError(f"config.{name}", "unknown configuration key", "INVALID_OPTIONS")
        lo, hi = CONFIG_KEYS[name]
        try:
            clean[name] = check_int(f"config.{name}", value, lo, hi)
        except ValidationError as exc:
            raise ValidationError(exc.field, exc.details[0]["message"] if exc.details else exc.message,
                                  "INVALID_OPTIONS") from None
    return clean


def _callback_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
        raise ValidationError("callbackUrl", "must be an https:// URL")
    return url
