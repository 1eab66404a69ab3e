"""Signed results (§10): the public signing keys, the signed report of a scan, and detached
signatures over the exact bytes a format produces. See docs/verify.md."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from appliance import exports
from appliance.api.context import authorize
from appliance.api.envelope import check_query, ok
from appliance.api.results import export_signature
from appliance.errors import ApiError, ValidationError
from appliance.signing import report
from appliance.signing.keys import SigningKeyError

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)


def _tenant_scan(services: Services, request: Request, tenant_id: str) -> sqlite3.Row:
    """The tenant's scan, else 404 — also for another tenant's scan and a ``scanType`` mismatch."""
    scan_id = request.path_params["scan_id"]
    try:
        uuid.UUID(scan_id)
    except ValueError:
        raise ApiError(404, "SCAN_NOT_FOUND", "scan not found") from None
    row = services.reader.one("SELECT * FROM scans WHERE id = ? AND tenant_id = ?", (scan_id, tenant_id))
    wanted = request.query_params.get("scanType")
    if row is None or (wanted is not None and wanted != row["scan_type"]):
        raise ApiError(404, "SCAN_NOT_FOUND", "scan not found")
    return row


async def signing_keys(request: Request) -> JSONResponse:
    """Every public key, current and retired: any valid key may read them (they are public)."""
    services, _ = authorize(request, None)
    check_query(request, ())
    await _usable_keys(services)
    keys = await asyncio.to_thread(services.signing.keyring.public_keys)
    return ok([k.json() for k in reversed(keys)])


async def _usable_keys(services: Services) -> None:
    """503 before anything is sent, rather than a report cut off where its signature should be."""
    try:
        await asyncio.to_thread(services.signing.keyring.current)
    except SigningKeyError as exc:
        log.error("cannot sign: %s", exc)
        raise ApiError(503, "SERVICE_UNAVAILABLE", "the appliance cannot read its signing keys; "
                       "its operator will find why in its log") from None


async def scan_report(request: Request) -> StreamingResponse:
    services, grant = authorize(request, "results:read")
    check_query(request, ("scanType",))
    row = _tenant_scan(services, request, grant.tenant_id)
    await _usable_keys(services)
    origin = await services.signing.origin(row["scan_type"])
    body = report.document(services.config.db_path, services.config["storage.busy_timeout_ms"], row["id"],
                           origin, services.signing.keyring)
    # A sync iterator: Starlette runs each step in a worker thread, off the event loop.
    return StreamingResponse(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="scan-{row["id"]}-report.json"'})


async def results_signature(request: Request) -> JSONResponse:
    services, grant = authorize(request, "results:read")
    check_query(request, ("format", "scanType"))
    fmt = request.query_params.get("format", "report")
    if fmt not in report.SIGNABLE and fmt not in exports.FORMATS:
        raise ValidationError("format", f"must be one of {', '.join([*report.SIGNABLE, *exports.FORMATS])}")
    row = _tenant_scan(services, request, grant.tenant_id)
    await _usable_keys(services)
    if fmt in exports.FORMATS:  # the whole export, as GET /results?format=… serves it unfiltered
        return ok(await asyncio.to_thread(export_signature, services, row, fmt, "scan_id = ?", [row["id"]]))
    origin = await services.signing.origin(row["scan_type"])
    block = await asyncio.to_thread(report.detached, services.config.db_path,
                                    services.config["storage.busy_timeout_ms"], row["id"], origin,
                                    services.signing.keyring, fmt)
    return ok(block)


routes = [
    Route("/signing-key", signing_keys, methods=["GET"]),
    Route("/scans/{scan_id}/report", scan_report, methods=["GET"]),
    Route("/scans/{scan_id}/results/signature", results_signature, methods=["GET"]),
]
