"""``/scans`` (§4): submit, list, read, cancel, results."""
from __future__ import annotations

import asyncio
import json
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import clock
from appliance.api.context import authorize
from appliance.api.envelope import ok, paged, read_json
from appliance.errors import ApiError, ValidationError
from appliance.scanning import lifecycle, model
from appliance.scanning.submit import parse_scan
from engines.base import SEVERITIES

_NOT_FOUND = ApiError(404, "SCAN_NOT_FOUND", "scan not found")


def _scan_row(request: Request, tenant_id: str):
    """The tenant's scan, else 404 — also for another tenant's scan and a ``scanType`` mismatch."""
    scan_id = request.path_params["scan_id"]
    try:
        uuid.UUID(scan_id)
    except ValueError:
        raise _NOT_FOUND from None
    row = request.app.state.services.reader.one(
        "SELECT * FROM scans WHERE id = ? AND tenant_id = ?", (scan_id, tenant_id))
    wanted = request.query_params.get("scanType")
    if row is None or (wanted is not None and wanted != row["scan_type"]):
        raise _NOT_FOUND
    return row


async def create_scan(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:create")
    row, target = parse_scan(await read_json(request), grant, services.engines,
                             services.config["scans.max_timeout_seconds"])
    problem, addresses = await asyncio.to_thread(services.dispatcher.vet, grant.tenant_id, target, row["scan_type"])
    if problem:
        raise ApiError(403, "TARGET_NOT_ALLOWED", f"target not allowed: {problem}")
    row["zone"] = services.dispatcher.route(target, addresses)
    await services.writer.write(lifecycle.submit(row))
    stored = services.reader.one("SELECT * FROM scans WHERE id = ?", (row["id"],))
    # Huey's storage blocks (SQLite lock, Redis round trip): keep it off the event loop. A crash
    # between the two writes leaves a queued scan without a task, which the reconciler enqueues.
    await asyncio.to_thread(services.enqueue, services.dispatcher.job(stored, addresses))
    return ok(model.scan_json(stored), 201)


def _filters(request: Request, tenant_id: str) -> tuple[str, list]:
    where, params = ["tenant_id = ?"], [tenant_id]
    query = request.query_params
    for name, column in (("scanType", "scan_type"), ("status", "status"), ("target", "target")):
        if name in query:
            if name == "status" and query[name] not in lifecycle.STATUSES:
                raise ValidationError("status", f"must be one of {', '.join(lifecycle.STATUSES)}")
            where.append(f"{column} = ?")
            params.append(query[name])
    if "tag" in query:
        where.append("EXISTS (SELECT 1 FROM json_each(scans.tags) WHERE value = ?)")
        params.append(query["tag"])
    for name, op in (("createdAfter", ">="), ("createdBefore", "<")):
        if name in query:
            try:
                params.append(clock.parse_iso(query[name]))
            except ValueError:
                raise ValidationError(name, "must be an ISO-8601 timestamp") from None
            where.append(f"created_at {op} ?")
    return " AND ".join(where), params


async def list_scans(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:list")
    where, params = _filters(request, grant.tenant_id)
    items, pages = paged(request, services.reader, "scans", where, params, "created_at DESC, id",
                         model.scan_json)
    return ok(items, pagination=pages)


async def get_scan(request: Request) -> JSONResponse:
    _, grant = authorize(request, "scans:read")
    return ok(model.scan_json(_scan_row(request, grant.tenant_id)))


async def cancel_scan(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:cancel")
    row = _scan_row(request, grant.tenant_id)
    # A running scan's worker learns of the cancel from its next heartbeat (about a second).
    if row["status"] in lifecycle.TERMINAL or not (await services.writer.write(
            lifecycle.end(row["id"], "cancelled")))[0]:
        raise ApiError(409, "SCAN_NOT_CANCELLABLE", "scan has already finished")
    return ok(model.scan_json(_scan_row(request, grant.tenant_id)))


async def scan_results(request: Request) -> JSONResponse:
    services, grant = authorize(request, "results:read")
    row = _scan_row(request, grant.tenant_id)
    fmt = request.query_params.get("format", "json")
    if fmt != "json":
        raise ValidationError("format", "only json is served by this release")
    severities = request.query_params.getlist("severity")
    for severity in severities:
        if severity not in SEVERITIES:
            raise ValidationError("severity", f"must be one of {', '.join(SEVERITIES)}")
    where, params = "scan_id = ?", [row["id"]]
    if severities:
        where += f" AND severity IN ({','.join('?' * len(severities))})"
        params += severities
    findings, pages = paged(request, services.reader, "findings", where, params, "severity_rank, seq",
                            lambda r: json.loads(r["body"]), max_limit=1000, default_limit=100)
    data = {"scanId": row["id"], "scanType": row["scan_type"], "status": row["status"],
            "summary": model.summary_json(row), "findings": findings}
    return ok(data, pagination=pages)


routes = [
    Route("/scans", create_scan, methods=["POST"]),
    Route("/scans", list_scans, methods=["GET"]),
    Route("/scans/{scan_id}", get_scan, methods=["GET"]),
    Route("/scans/{scan_id}/cancel", cancel_scan, methods=["POST"]),
    Route("/scans/{scan_id}/results", scan_results, methods=["GET"]),
]
