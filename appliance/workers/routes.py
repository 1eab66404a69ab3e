"""The internal HTTPS routes remote workers report through (``/internal/v1/worker/...``).

A worker token opens these routes and nothing else; an API key opens none of them. Each call is
checked against the database (no cache), so a revoked token is refused at once. What a worker says
about a scan is taken only under the lease its claim was given (see :mod:`appliance.scanning.intake`).
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import __version__
from appliance.api.auth import client_ip
from appliance.api.envelope import ok, read_json, read_typed
from appliance.credentials import hash_key
from appliance.errors import ApiError, ValidationError
from appliance.scanning.batches import MAX_SEQ
from appliance.scanning.intake import ROWS_PER_TURN, claim_json
from appliance.scanning.lifecycle import TERMINAL
from appliance.scanning.model import IDENTITY_TEXT
from appliance.scanning.reporter import INTERNAL_PREFIX, WORKER_TOKEN_HEADER
from appliance.workers import wire
from appliance.workers.store import TOKEN_RE, WorkerIdentity, identity, seen_op
from engines.base import CONFIDENCES, SEVERITIES, Finding

_LOST = ApiError(409, "CONFLICT", "this worker does not hold the scan's lease")
_FINDING_FIELDS = {f.name for f in dataclasses.fields(Finding)}


def _worker(request: Request) -> WorkerIdentity:
    services = request.app.state.services
    ip = client_ip(request.scope, services.auth.proxies)
    subject = f"ip:{ip}"
    if not services.limiter.hit(subject, services.auth.failed_limit, count=False).allowed:
        raise ApiError(429, "RATE_LIMIT_EXCEEDED", "too many failed authentications from this address")
    raw = request.headers.get(WORKER_TOKEN_HEADER.lower())
    if not raw:
        raise ApiError(401, "MISSING_API_KEY", f"{WORKER_TOKEN_HEADER} header is required")
    row = services.reader.one("SELECT * FROM workers WHERE token_hash = ?", (hash_key(raw),)) \
        if TOKEN_RE.match(raw) else None
    if row is None:
        services.limiter.hit(subject, services.auth.failed_limit)
        raise ApiError(401, "INVALID_API_KEY", "invalid worker token")
    if row["revoked_at"] is not None:
        raise ApiError(401, "KEY_REVOKED", "this worker token has been revoked")
    return identity(row)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValidationError(name, "must be a non-empty string")
    return value


async def hello(request: Request) -> JSONResponse:
    """A worker announces itself (and keeps doing so): its version, engines and running scans."""
    me = _worker(request)
    body = await read_json(request)
    engines = body.get("engines", [])
    running = body.get("running", 0)
    version = body.get("version", "")
    if (not isinstance(engines, list) or not all(isinstance(e, str) for e in engines)
            or not isinstance(running, int) or not isinstance(version, str)):
        raise ValidationError("body", "engines (strings), running (integer) and version (string) expected")
    request.app.state.services.writer.buffer(seen_op(me.id, version[:64], engines[:32], running))
    return ok({"name": me.name, "zones": list(me.zones), "applianceVersion": __version__})


async def claim(request: Request) -> JSONResponse:
    me = _worker(request)
    body = await read_json(request)
    workdir = body.get("workdir")
    got = await request.app.state.services.intake.claim(
        _text(body, "scanId"), me.owner, me.name, workdir if isinstance(workdir, str) else None,
        zones=me.zones or ("",))
    if got is None:
        raise ApiError(409, "CONFLICT", "the scan is not waiting for this worker")
    return ok(claim_json(got))


async def heartbeat(request: Request) -> JSONResponse:
    me = _worker(request)
    body = await read_json(request)
    progress = body.get("progress")
    if progress is not None and (not isinstance(progress, int) or not 0 <= progress <= 100):
        raise ValidationError("progress", "must be an integer from 0 to 100")
    scan_id, lease_id = _text(body, "scanId"), _text(body, "leaseId")
    _owned(request, me, scan_id, lease_id)
    keep_going = await request.app.state.services.intake.heartbeat(scan_id, lease_id, progress)
    return ok({"continue": keep_going})


async def findings(request: Request) -> JSONResponse:
    me = _worker(request)
    # The usual report is decoded and checked by msgspec in one pass; anything it refuses is read
    # and checked the slow way, which gives the answer (wire.py).
    report = await read_typed(request, wire.DECODER)
    body = report.envelope() if report is not None else await read_json(request)
    # The depth check of the decoded findings first: read_json's error comes before the others.
    raw: Any = wire.checked_findings(report) if report is not None else body.get("findings")
    scan_id, lease_id = _text(body, "scanId"), _text(body, "leaseId")
    first_seq = body.get("firstSeq")
    if (not isinstance(first_seq, int) or not isinstance(raw, list) or len(raw) > 5000
            or not 0 <= first_seq <= MAX_SEQ - len(raw)):
        raise ValidationError("findings", f"firstSeq (integer, its batch's seqs up to {MAX_SEQ}) and up to 5000"
                                          " findings expected")
    batch: list[Any] = raw if report is not None else []
    if report is None:
        # A batch of hundreds of findings takes milliseconds to check: the loop serves what else
        # waits (other requests, /health) between slices of it.
        for start in range(0, len(raw), ROWS_PER_TURN):
            await asyncio.sleep(0)
            batch += [_finding(item, index) for index, item in enumerate(raw[start:start + ROWS_PER_TURN], start)]
    row = _owned(request, me, scan_id, lease_id)
    if not await request.app.state.services.intake.findings(scan_id, lease_id, row["scan_type"], batch, first_seq):
        raise _LOST
    return ok({"stored": len(batch)})


async def finish(request: Request) -> JSONResponse:
    me = _worker(request)
    body = await read_json(request)
    scan_id, lease_id, status = _text(body, "scanId"), _text(body, "leaseId"), _text(body, "status")
    code, message = body.get("errorCode"), body.get("message")
    if status not in TERMINAL or not isinstance(code, (str, type(None))) \
            or not isinstance(message, (str, type(None))):
        raise ValidationError("status", "a terminal status with optional errorCode and message expected")
    _owned(request, me, scan_id, lease_id)
    done = await request.app.state.services.intake.finish(scan_id, lease_id, status, code and code[:64],
                                                          message and message[:2000])
    if not done:
        raise _LOST
    return ok({"status": status})


async def release(request: Request) -> JSONResponse:
    me = _worker(request)
    body = await read_json(request)
    scan_id, lease_id = _text(body, "scanId"), _text(body, "leaseId")
    _owned(request, me, scan_id, lease_id)
    if not await request.app.state.services.intake.release(scan_id, lease_id):
        raise _LOST
    return ok({"released": True})


def _owned(request: Request, me: WorkerIdentity, scan_id: str, lease_id: str) -> Any:
    """The scan, when this worker holds its lease; a lease another worker lost is refused here."""
    row = request.app.state.services.reader.one(
        "SELECT scan_type, lease_id, lease_owner FROM scans WHERE id = ?", (scan_id,))
    if row is None or row["lease_id"] != lease_id or row["lease_owner"] != me.owner:
        raise _LOST
    return row


def _finding(item: Any, index: int) -> dict[str, Any]:
    """A wire finding checked as ``Finding(**item)`` would check it (known fields only, ruleId and title
    given as strings, a known severity and confidence), as its fields by name with the defaults
    filled in: what :class:`~appliance.scanning.batches.BatchEncoder` stores, without building an object."""
    if type(item) is not dict or not item.keys() <= _FINDING_FIELDS:
        raise ValidationError(f"findings[{index}]", "must be a finding object")
    fields = {**_DEFAULTS, **item}
    if not isinstance(fields["rule_id"], str) or not isinstance(fields["title"], str):
        raise ValidationError(f"findings[{index}]", "ruleId and title must be strings")
    if not all(fields[name] is None or isinstance(fields[name], str) for name in IDENTITY_TEXT):
        raise ValidationError(f"findings[{index}]", f"{', '.join(IDENTITY_TEXT)} must be strings or null")
    if fields["severity"] not in SEVERITIES or fields["confidence"] not in CONFIDENCES:
        raise ValidationError(f"findings[{index}]", f"bad severity {fields['severity']!r} or confidence "
                                                    f"{fields['confidence']!r}")
    return fields


def _default(spec: dataclasses.Field[Any]) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()  # an empty list or dict, shared: stored fields are only read
    return None if spec.default is dataclasses.MISSING else spec.default  # rule_id, title: refused above


_DEFAULTS = {f.name: _default(f) for f in dataclasses.fields(Finding)}


routes = [Route(f"{INTERNAL_PREFIX}/{name}", handler, methods=["POST"])
          for name, handler in (("hello", hello), ("claim", claim), ("heartbeat", heartbeat),
                                ("findings", findings), ("finish", finish), ("release", release))]
