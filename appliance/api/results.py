"""Results beyond the paged JSON: whole-set exports (``?format=sarif|csv|jsonl``) and the diff of two
scans by fingerprint (``GET /scans/:id/diff?against=:otherId``)."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from appliance import exports
from appliance.api.context import authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, page_params, pagination
from appliance.errors import ApiError, ValidationError
from appliance.scanning.lifecycle import TERMINAL
from appliance.signing.signature import header_value, sign_digest_of
from engines.base import SEVERITIES

if TYPE_CHECKING:
    from appliance.services import Services

CHANGES = ("new", "fixed", "unchanged")
DIFF_PARAMS = ("against", "change", "severity", *PAGE_PARAMS)


async def export_response(services: Services, scan: sqlite3.Row | Mapping[str, Any], fmt: str, where: str,
                          params: list[Any]) -> StreamingResponse:
    """The whole (filtered) result set as a file, streamed: no envelope, no pagination."""
    fmt_info = exports.FORMATS[fmt]
    version_of = scanner_versions(services)

    filename = f"scan-{scan['id']}.{fmt_info.extension}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if scan["status"] in TERMINAL:
        # A finished scan exports the same bytes every time: sign them in a first, memory-flat pass,
        # then stream them. A running scan's findings still change between the passes: no signature.
        block = await asyncio.to_thread(export_signature, services, scan, fmt, where, params, version_of)
        headers["X-CertIX-Report-Signature"] = header_value(block)
    chunks = exports.export_chunks(fmt, services.reader, where, params, scan["scan_type"], version_of)
    return StreamingResponse(chunks, media_type=fmt_info.media_type, headers=headers)


def scanner_versions(services: Services) -> Callable[[str], str | None]:
    """SARIF's ``tool.driver.version``. A first probe runs the scanner's --version: call it on the
    streaming (or signing) thread, never the event loop."""
    def version_of(engine: str) -> str | None:
        scanner = services.engines.get(engine)
        return scanner.probe().version if scanner is not None else None
    return version_of


def export_signature(services: Services, scan: sqlite3.Row | Mapping[str, Any], fmt: str, where: str, params: list[Any],
                     version_of: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """A detached hybrid signature over the exact bytes the export produces (blocking: a thread)."""
    chunks = exports.export_chunks(fmt, services.reader, where, params, scan["scan_type"],
                                   version_of or scanner_versions(services))
    return sign_digest_of(services.signing.keyring, chunks, "export", {"scanId": scan["id"], "format": fmt})


def _tenant_scan(services: Services, scan_id: str, tenant_id: str, what: str) -> sqlite3.Row:
    try:
        uuid.UUID(scan_id)
    except ValueError:
        raise ApiError(404, "SCAN_NOT_FOUND", f"{what} not found") from None
    row = services.reader.one("SELECT * FROM scans WHERE id = ? AND tenant_id = ?", (scan_id, tenant_id))
    if row is None:
        raise ApiError(404, "SCAN_NOT_FOUND", f"{what} not found")
    return row


# The three sets of a diff, each one query: the other scan's fingerprints are read once from its
# covering index into a temporary index (an IN subquery that refers to nothing outside it).
_OF = "(SELECT fingerprint FROM findings WHERE scan_id = :{})"
_SETS = {
    "new": f"findings.scan_id = :scan AND fingerprint NOT IN {_OF.format('against')}",
    "fixed": f"findings.scan_id = :against AND fingerprint NOT IN {_OF.format('scan')}",
    "unchanged": f"findings.scan_id = :scan AND fingerprint IN {_OF.format('against')}",
}


async def scan_diff(request: Request) -> JSONResponse:
    """Findings of this scan that ``against`` lacks (``new``), findings of ``against`` this scan no longer
    has (``fixed``), and those in both (``unchanged``, as this scan reports them), by fingerprint."""
    services, grant = authorize(request, "results:read")
    check_query(request, DIFF_PARAMS)
    query = request.query_params
    scan = _tenant_scan(services, request.path_params["scan_id"], grant.tenant_id, "scan")
    against_id = query.get("against")
    if not against_id:
        raise ValidationError("against", "is required: the id of the scan to compare with")
    other = _tenant_scan(services, against_id, grant.tenant_id, "scan to compare against (against)")
    if other["scan_type"] != scan["scan_type"]:
        raise ValidationError("against", f"is a {other['scan_type']} scan; only scans of the same type "
                              f"({scan['scan_type']}) compare")
    changes = query.getlist("change") or list(CHANGES)
    for change in changes:
        if change not in CHANGES:
            raise ValidationError("change", f"must be one of {', '.join(CHANGES)}")
    severities = query.getlist("severity")
    for severity in severities:
        if severity not in SEVERITIES:
            raise ValidationError("severity", f"must be one of {', '.join(SEVERITIES)}")
    page, limit = page_params(request, max_limit=1000, default_limit=100)
    args: dict[str, Any] = {"scan": scan["id"], "against": other["id"]}
    severity_clause = ""
    if severities:
        marks = ", ".join(f":sev{i}" for i in range(len(severities)))
        severity_clause = f" AND findings.severity_rank IN ({marks})"  # in the covering index
        args.update({f"sev{i}": SEVERITIES.index(s) for i, s in enumerate(severities)})
    counts = {c: services.reader.scalar(f"SELECT count(*) FROM findings WHERE {_SETS[c]}{severity_clause}", args)
              for c in CHANGES}
    wanted = [c for c in CHANGES if c in changes]
    union = " UNION ALL ".join(
        f"SELECT {CHANGES.index(c)} AS change_rank, '{c}' AS change, severity_rank, seq, body FROM findings"
        f" WHERE {_SETS[c]}{severity_clause}" for c in wanted)
    rows = services.reader.all(f"SELECT change, body FROM ({union}) ORDER BY change_rank, severity_rank, seq"
                               " LIMIT :limit OFFSET :offset", {**args, "limit": limit, "offset": (page - 1) * limit})
    findings = [{"change": r["change"], **json.loads(r["body"])} for r in rows]
    data = {"scanId": scan["id"], "against": other["id"], "scanType": scan["scan_type"],
            "counts": counts, "findings": findings}
    return ok(data, pagination=pagination(page, limit, sum(counts[c] for c in wanted)))


routes = [Route("/scans/{scan_id}/diff", scan_diff, methods=["GET"])]
