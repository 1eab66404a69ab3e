"""``/usage`` (§7): summary, history, by scan type, and the API call log.

Figures come from the API call log (``api_calls``: every authenticated request, written in
batches about once a second, so a request shows up within about a second) and the scans table.
Success is a status below 400. ``quotaConsumedCalls`` counts the period's successful scan
submissions (what the monthly quota counts).
"""
from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import clock, usage
from appliance.api.context import authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged
from appliance.errors import ValidationError
from appliance.store import Reader

PERIODS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "90d": 90 * 86400}
GRANULARITY = {"hourly": 3600, "daily": 86400}


def _period(request: Request, default: str) -> tuple[str, int]:
    name = request.query_params.get("period", default)
    if name not in PERIODS:
        raise ValidationError("period", f"must be one of {', '.join(PERIODS)}")
    return name, PERIODS[name]


def _calls(reader: Reader, tenant_id: str, start: float, end: float) -> dict[str, Any]:
    row = reader.one("SELECT count(*) AS n, coalesce(sum(status < 400), 0) AS ok, coalesce(sum(status >= 400), 0)"
                     " AS bad, avg(duration_ms) AS avg, max(duration_ms) AS max FROM api_calls"
                     " WHERE tenant_id = ? AND created_at >= ? AND created_at < ?", (tenant_id, start, end))
    assert row is not None
    return {"totalCalls": row["n"], "successCalls": row["ok"], "errorCalls": row["bad"],
            "avgDurationMs": round(row["avg"] or 0, 3), "maxDurationMs": round(row["max"] or 0, 3)}


async def summary(request: Request) -> JSONResponse:
    services, grant = authorize(request, "usage:read")
    check_query(request, ("period",))
    _, seconds = _period(request, "30d")
    end = clock.now()
    start = end - seconds
    tenant = grant.tenant_id
    types = [r["scan_type"] for r in services.reader.all(
        "SELECT scan_type FROM scans WHERE tenant_id = ? AND created_at >= ? AND created_at < ?"
        " GROUP BY scan_type ORDER BY scan_type", (tenant, start, end))]
    scans = services.reader.scalar("SELECT count(*) FROM scans WHERE tenant_id = ? AND created_at >= ?"
                                   " AND created_at < ?", (tenant, start, end))
    limit = services.events.quota_limit(tenant)
    used = usage.scans_this_month(services.reader, tenant, end)
    _, resets = usage.month_bounds(end)
    return ok({"tenantId": tenant, "period": {"start": clock.iso(start), "end": clock.iso(end)},
               **_calls(services.reader, tenant, start, end), "totalScans": scans,
               "distinctScanTypes": len(types), "scanTypesUsed": types, "quotaConsumedCalls": scans,
               "quota": {"limit": limit, "used": used, "remaining": None if limit is None else max(0, limit - used),
                         "resetsAt": clock.iso(resets)}})


async def history(request: Request) -> JSONResponse:
    services, grant = authorize(request, "usage:read")
    check_query(request, ("period", "granularity"))
    name, seconds = _period(request, "7d")
    granularity = request.query_params.get("granularity", "auto")
    if granularity == "auto":
        granularity = "hourly" if seconds <= 86400 else "daily"
    if granularity not in GRANULARITY:
        raise ValidationError("granularity", "must be one of hourly, daily, auto")
    step = GRANULARITY[granularity]
    end = clock.now()
    start = math.floor((end - seconds) / step) * step  # buckets are whole UTC hours or days
    count = math.floor((end - start) / step) + 1
    points = [{"timestamp": clock.iso(start + i * step), "totalCalls": 0, "successCalls": 0, "errorCalls": 0,
               "scans": 0, "avgDurationMs": 0} for i in range(count)]
    for row in services.reader.all(
            "SELECT CAST((created_at - ?) / ? AS INTEGER) AS b, count(*) AS n, sum(status < 400) AS ok,"
            " sum(status >= 400) AS bad, avg(duration_ms) AS avg FROM api_calls"
            " WHERE tenant_id = ? AND created_at >= ? AND created_at <= ? GROUP BY b",
            (start, step, grant.tenant_id, start, end)):
        if 0 <= row["b"] < count:
            points[row["b"]].update(totalCalls=row["n"], successCalls=row["ok"], errorCalls=row["bad"],
                                    avgDurationMs=round(row["avg"] or 0, 3))
    for row in services.reader.all(
            "SELECT CAST((created_at - ?) / ? AS INTEGER) AS b, count(*) AS n FROM scans"
            " WHERE tenant_id = ? AND created_at >= ? AND created_at <= ? GROUP BY b",
            (start, step, grant.tenant_id, start, end)):
        if 0 <= row["b"] < count:
            points[row["b"]]["scans"] = row["n"]
    return ok({"period": {"name": name, "start": clock.iso(start), "end": clock.iso(end)},
               "granularity": granularity, "points": points})


async def by_scan_type(request: Request) -> JSONResponse:
    services, grant = authorize(request, "usage:read")
    check_query(request, ("period",))
    _, seconds = _period(request, "30d")
    end = clock.now()
    rows = services.reader.all(
        "SELECT scan_type, count(*) AS n, sum(status = 'completed') AS completed, sum(status = 'failed') AS failed,"
        " sum(status = 'cancelled') AS cancelled,"
        " avg(CASE WHEN started_at IS NOT NULL AND completed_at IS NOT NULL"
        " THEN (completed_at - started_at) * 1000 END) AS avg, sum(total) AS findings"
        " FROM scans WHERE tenant_id = ? AND created_at >= ? AND created_at < ?"
        " GROUP BY scan_type ORDER BY n DESC, scan_type", (grant.tenant_id, end - seconds, end))
    return ok([{"scanType": r["scan_type"], "scans": r["n"], "completed": r["completed"], "failed": r["failed"],
                "cancelled": r["cancelled"], "avgDurationMs": round(r["avg"]) if r["avg"] is not None else None,
                "findings": r["findings"]} for r in rows])


def _call_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "apiKeyId": row["api_key_id"], "method": row["method"], "path": row["path"],
            "status": row["status"], "durationMs": row["duration_ms"], "ip": row["ip"],
            "requestId": row["request_id"], "createdAt": clock.iso(row["created_at"])}


def time_filters(request: Request, where: list[str], params: list[Any], column: str = "created_at") -> None:
    """``from`` (inclusive) and ``to`` (exclusive) ISO-8601 query parameters."""
    for name, op in (("from", ">="), ("to", "<")):
        if name in request.query_params:
            try:
                params.append(clock.parse_iso(request.query_params[name]))
            except ValueError:
                raise ValidationError(name, "must be an ISO-8601 timestamp") from None
            where.append(f"{column} {op} ?")


async def calls(request: Request) -> JSONResponse:
    services, grant = authorize(request, "usage:read")
    check_query(request, ("apiKeyId", "status", "from", "to", *PAGE_PARAMS))
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [grant.tenant_id]
    query = request.query_params
    if "apiKeyId" in query:
        where.append("api_key_id = ?")
        params.append(query["apiKeyId"])
    if "status" in query:
        if not query["status"].isdigit() or not 100 <= int(query["status"]) <= 599:
            raise ValidationError("status", "must be an HTTP status code")
        where.append("status = ?")
        params.append(int(query["status"]))
    time_filters(request, where, params)
    items, pages = paged(request, services.reader, "api_calls", " AND ".join(where), params, "created_at DESC, id DESC",
                         _call_json)
    return ok(items, pagination=pages)


routes = [
    Route("/usage/summary", summary, methods=["GET"]),
    Route("/usage/history", history, methods=["GET"]),
    Route("/usage/by-scan-type", by_scan_type, methods=["GET"]),
    Route("/usage/calls", calls, methods=["GET"]),
]
