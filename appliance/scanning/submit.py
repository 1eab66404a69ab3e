"""``POST /scans`` bodies: validated field by field into a scan row, or an error with the contract code.

The order of checks is the order a client fixes them in: body shape, scan type, key limits, engine
availability, target, options, then target authorization (which may resolve a name).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from appliance import clock
from appliance.apikeys import KeyGrant
from appliance.bodies import CONFIG_KEYS as CONFIG_KEYS  # re-exported: the documented config keys
from appliance.bodies import SCAN_FIELDS, ScanConfig, given, parse, scan_shape
from appliance.engine_data import require_engine_data
from appliance.errors import ApiError, ValidationError
from appliance.targets import TARGET_TYPES, Target, TargetError, parse_target
from engines.base import Engine, Scanner
from engines.options import OptionError
from engines.registry import target_types

FIELDS = SCAN_FIELDS
_ENCODE = msgspec.json.Encoder().encode


def all_target_types(engines: Mapping[str, Scanner]) -> tuple[str, ...]:
    """Every ``targetType`` a body may name: the contract's and every engine's. Whether the chosen
    engine scans it is the next check (``INVALID_TARGET``)."""
    return tuple(dict.fromkeys((*TARGET_TYPES, *target_types(engines))))


def parse_scan(data: Any, grant: KeyGrant, engines: Mapping[str, Scanner],
               max_timeout: int = 86400) -> tuple[dict[str, Any], Target]:
    """A scan row (status ``queued``) and its parsed target; raises :class:`ApiError`."""
    body = given(parse(data, scan_shape(all_target_types(engines))))
    scan_type: str = body["scanType"]
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
    target_type = body.get("targetType")
    target_text: str = body["target"]
    try:
        target = parse_target(target_text, target_type or engine.infer_target_type(target_text))
    except TargetError as exc:
        raise ValidationError("target", str(exc), "INVALID_TARGET") from None
    if target.type not in engine.target_types:
        raise ValidationError("targetType", f"{scan_type} does not scan {target.type} targets "
                              f"(it scans: {', '.join(sorted(engine.target_types))})", "INVALID_TARGET")
    try:
        options = engine.validate(body.get("options") or {})
    except OptionError as exc:
        raise ValidationError(exc.field, exc.message, "INVALID_OPTIONS") from None
    require_engine_data(engine, options)
    config = engine_config(body.get("config") or {})
    priority: str = body.get("priority", "normal")
    if grant.allowed_priorities is not None and priority not in grant.allowed_priorities:
        raise ApiError(403, "INSUFFICIENT_SCOPE", f"this API key may not submit {priority}-priority scans "
                       f"(allowedPriorities: {', '.join(grant.allowed_priorities)})")
    timeout: int = body.get("timeout") or config.get("timeoutSeconds") or min(engine.default_timeout, max_timeout)
    if timeout > max_timeout:
        raise ValidationError("timeout", f"must be at most {max_timeout} seconds (scans.max_timeout_seconds)")
    now = clock.now()
    row = {
        "id": clock.new_id(), "tenant_id": grant.tenant_id, "api_key_id": grant.id, "scan_type": scan_type,
        "name": body.get("name"), "target": target.value, "target_type": target.type,
        "status": "queued", "priority": priority,
        "options": _json(options), "config": _json(config),
        "tags": _json(list(dict.fromkeys(body.get("tags", [])))),
        "timeout": timeout, "asset_id": body.get("assetId"),
        "callback_url": _callback_url(body.get("callbackUrl")),
        "created_at": now, "queued_at": now,
    }
    return row, target


def _json(value: Any) -> str:
    return _ENCODE(value).decode()


def engine_config(raw: dict[str, Any]) -> dict[str, int]:
    """``config`` of a scan or template: ``INVALID_OPTIONS`` naming ``config.<key>`` when it does not fit."""
    return given(parse(raw, ScanConfig, "INVALID_OPTIONS", root="config", prefix="config."))


def _callback_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:  # no whitespace: the body's schema saw to that
        raise ValidationError("callbackUrl", "must be an https:// URL")
    return url
