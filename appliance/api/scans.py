"""``/scans`` (§4): submit, list, read, cancel, results."""
from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance import clock, exports
from appliance.api.context import authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged, read_json
from appliance.api.results import export_response
from appliance.apikeys import KeyGrant
from appliance.errors import ApiError, ValidationError
from appliance.scanning import lifecycle, model
from appliance.scanning.submit import parse_scan
from appliance.validate import parse_decimal
from engines.base import SEVERITIES

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)
_NOT_FOUND = ApiError(404, "SCAN_NOT_FOUND", "scan not found")
_SCAN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LIST_PARAMS = ("scanType", "status", "tag", "target", "createdAfter", "createdBefore", *PAGE_PARAMS)
# Results filters: query parameter -> SQL matching one value (repeat a parameter to match any of several).
# ruleId, host, ip and port are columns of the body's values (json_extract at insert, migration 7)
# in the scan's covering index: a filter reads the index in results order, not the bodies.
RESULT_FILTERS = {
    "ruleId": "rule_id = ?",
    "host": "(host = ? OR ip = ?)",
    "port": "port = ?",
    "cve": "EXISTS (SELECT 1 FROM json_each(findings.body, '$.cve') WHERE value = ?)",
    "fingerprint": "fingerprint = ?",
}
RESULT_PARAMS = ("format", "severity", "scanType", *RESULT_FILTERS, *PAGE_PARAMS)


_SCAN_BY_ID = f"SELECT {model.SCAN_COLUMNS} FROM scans WHERE id = ? AND tenant_id = ?"
_SCAN_TYPE = model.SCAN_FIELDS.index("scan_type")


def _scan_values(request: Request, services: Services, tenant_id: str) -> tuple[Any, ...]:
    """The tenant's scan (the values of ``model.SCAN_COLUMNS``), else 404 — also for another
    tenant's scan and a ``scanType`` mismatch."""
    scan_id = request.path_params["scan_id"]
    if not _SCAN_ID.match(scan_id):  # scan ids are lower-case UUIDs: anything else is no scan
        raise _NOT_FOUND
    reader = services.reader
    values = services.rows.read((_SCAN_BY_ID, scan_id, tenant_id),
                                lambda: reader.values(_SCAN_BY_ID, (scan_id, tenant_id)))
    if values is None:
        raise _NOT_FOUND
    wanted = request.query_params.get("scanType") if request.scope["query_string"] else None
    if wanted is not None and wanted != values[_SCAN_TYPE]:
        raise _NOT_FOUND
    return values


def _scan_row(request: Request, services: Services, tenant_id: str) -> dict[str, Any]:
    return dict(zip(model.SCAN_FIELDS, _scan_values(request, services, tenant_id), strict=True))


async def submit_scan(services: Services, grant: KeyGrant, data: Any, template_id: str | None = None
                      ) -> dict[str, Any]:
    """The one submission path, for ``POST /scans`` and template launches: validation, target
    authorization and routing, callback egress and quota, the queued row, the queue task."""
    row, target = parse_scan(data, grant, services.engines, services.config["scans.max_timeout_seconds"])
    tenant_id, scan_type = grant.tenant_id, row["scan_type"]
    if services.dispatcher.needs_lookup(target, scan_type):
        problem, addresses = await asyncio.to_thread(services.dispatcher.vet, tenant_id, target, scan_type)
    else:  # a literal address: microseconds of CPU, no DNS
        problem, addresses = services.dispatcher.vet(tenant_id, target, scan_type)
    if problem:
        raise ApiError(403, "TARGET_NOT_ALLOWED", f"target not allowed: {problem}")
    row["zone"] = services.dispatcher.route(target, addresses)
    row["template_id"] = template_id
    stored = {**services.scan_defaults, **row}  # what is committed (a test compares it with the row)
    job = services.dispatcher.job(stored, addresses)
    insert = lifecycle.submit(row)
    queued = services.queue.adding_task(insert, job)  # the task in the same transaction (SQLite queue)
    if not (await services.writer.write(await services.events.admit(row, queued or insert)))[0]:
        raise services.events.quota_refused(grant.tenant_id)
    if queued is None:
        # Redis: Huey's storage blocks (a round trip), so the enqueue runs off the event loop after the
        # commit. A crash between the two writes leaves a queued scan without a task, which the
        # reconciler enqueues; so does a failed enqueue here: the scan is stored, and a 500 would make
        # the client submit it twice.
        try:
            await services.enqueue_async(job)
        except Exception:
            log.exception("enqueue of scan %s failed; the reconciler will enqueue it", row["id"])
    return model.scan_json(stored)


async def create_scan(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:create")
    return ok(await submit_scan(services, grant, await read_json(request)), 201)


def _filters(request: Request, tenant_id: str) -> tuple[str, list[Any]]:
    check_query(request, LIST_PARAMS)
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
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
                         model.scan_json_values, columns=model.SCAN_COLUMNS, as_values=True)
    return ok(items, pagination=pages)


async def get_scan(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:read")
    check_query(request, ("scanType",))
    return ok(model.scan_json_values(_scan_values(request, services, grant.tenant_id)))


async def cancel_scan(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:cancel")
    row = _scan_row(request, services, grant.tenant_id)
    # A running scan's worker learns of the cancel from its next heartbeat (about a second).
    if row["status"] in lifecycle.TERMINAL or not (await services.writer.write(
            lifecycle.end(row["id"], "cancelled")))[0]:
        raise ApiError(409, "SCAN_NOT_CANCELLABLE", "scan has already finished")
    return ok(model.scan_json(_scan_row(request, services, grant.tenant_id)))


async def scan_results(request: Request) -> Response:
    services, grant = authorize(request, "results:read")
    check_query(request, RESULT_PARAMS)
    row = _scan_row(request, services, grant.tenant_id)
    fmt = request.query_params.get("format", "json")
    if fmt != "json" and fmt not in exports.FORMATS:
        raise ValidationError("format", f"must be one of json, {', '.join(exports.FORMATS)}")
    where, params = _result_filters(request, row["id"])
    if fmt != "json":
        for name in PAGE_PARAMS:
            if name in request.query_params:
                raise ValidationError(name, f"an export (format={fmt}) is the whole result set; it has no pages")
        return await export_response(services, row, fmt, where, params)
    # Each finding is sent as stored (valid JSON, written by scanning.batches): no parse and re-render.
    findings, pages = paged(request, services.reader, "findings", where, params, "severity_rank, seq",
                            lambda r: r[0], max_limit=1000, default_limit=100, columns="body", as_values=True)
    data = {"scanId": row["id"], "scanType": row["scan_type"], "status": row["status"],
            "summary": model.summary_json(row), "findings": orjson.Fragment("[" + ",".join(findings) + "]")}
    return ok(data, pagination=pages)


def _result_filters(request: Request, scan_id: str) -> tuple[str, list[Any]]:
    """``severity`` and the finding filters; each may repeat (any of the values matches)."""
    query = request.query_params
    where: list[str] = ["scan_id = ?"]
    params: list[Any] = [scan_id]
    severities = query.getlist("severity")
    for severity in severities:
        if severity not in SEVERITIES:
            raise ValidationError("severity", f"must be one of {', '.join(SEVERITIES)}")
    if severities:
        where.append(f"severity_rank IN ({','.join('?' * len(severities))})")  # in the covering index
        params += [SEVERITIES.index(s) for s in severities]
    for name, sql in RESULT_FILTERS.items():
        values: list[Any] = query.getlist(name)
        if not values:
            continue
        if name == "port":
            values = [_port(v) for v in values]
        elif name == "cve":
            values = [v.upper() for v in values]
        where.append("(" + " OR ".join([sql] * len(values)) + ")")
        for value in values:
            params += [value] * sql.count("?")
    return " AND ".join(where), params


def _port(text: str) -> int:
    port = parse_decimal(text, max_digits=5)
    if port is None or not 1 <= port <= 65535:
        raise ValidationError("port", "must be an integer between 1 and 65535")
    return port


routes = [  # the routes pipelines poll first: Starlette tries them in order
    Route("/scans/{scan_id}", get_scan, methods=["GET"]),
    Route("/scans", list_scans, methods=["GET"]),
    Route("/scans", create_scan, methods=["POST"]),
    Route("/scans/{scan_id}/cancel", cancel_scan, methods=["POST"]),
    Route("/scans/{scan_id}/results", scan_results, methods=["GET"]),
]
