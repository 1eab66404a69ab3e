"""``/scan-templates`` (§5): CRUD and launch."""
from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance import templates
from appliance.api.context import actor, authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged, read_json
from appliance.api.scans import submit_scan
from appliance.errors import ApiError


def _template(request: Request, tenant_id: str) -> sqlite3.Row:
    """The tenant's template, else 404 — also for another tenant's."""
    row: sqlite3.Row | None = request.app.state.services.reader.one(
        "SELECT * FROM scan_templates WHERE id = ? AND tenant_id = ?", (request.path_params["template_id"], tenant_id))
    if row is None:
        raise ApiError(404, "TEMPLATE_NOT_FOUND", "template not found")
    return row


def _respond(request: Request, template_id: str, status: int = 200) -> JSONResponse:
    row = request.app.state.services.reader.one("SELECT * FROM scan_templates WHERE id = ?", (template_id,))
    return ok(templates.to_json(row), status)


async def create_template(request: Request) -> JSONResponse:
    services, grant = authorize(request, "templates:create")
    fields = templates.validate(await read_json(request), grant, services.engines)
    template_id, ops = templates.create_ops(grant.tenant_id, fields, actor(grant))
    await services.writer.write(*ops)
    return _respond(request, template_id, 201)


async def list_templates(request: Request) -> JSONResponse:
    services, grant = authorize(request, "templates:read")
    check_query(request, ("scanType", *PAGE_PARAMS))
    where, params = "tenant_id = ?", [grant.tenant_id]
    if "scanType" in request.query_params:
        where += " AND scan_type = ?"
        params.append(request.query_params["scanType"])
    items, pages = paged(request, services.reader, "scan_templates", where, params, "created_at DESC, id",
                         templates.to_json)
    return ok(items, pagination=pages)


async def get_template(request: Request) -> JSONResponse:
    _, grant = authorize(request, "templates:read")
    check_query(request, ())
    return ok(templates.to_json(_template(request, grant.tenant_id)))


async def update_template(request: Request) -> JSONResponse:
    services, grant = authorize(request, "templates:update")
    row = _template(request, grant.tenant_id)
    fields = templates.validate(templates.patched(row, await read_json(request), services.engines), grant,
                                services.engines)
    await services.writer.write(*templates.update_ops(row, fields, actor(grant)))
    return _respond(request, row["id"])


async def delete_template(request: Request) -> Response:
    services, grant = authorize(request, "templates:delete")
    row = _template(request, grant.tenant_id)
    await services.writer.write(*templates.delete_ops(row, actor(grant)))
    return ok({"id": row["id"], "deleted": True})


async def launch_template(request: Request) -> JSONResponse:
    services, grant = authorize(request, "scans:create")
    row = _template(request, grant.tenant_id)
    body = templates.launch_body(row, await read_json(request))
    return ok(await submit_scan(services, grant, body, template_id=row["id"]), 201)


routes = [
    Route("/scan-templates", create_template, methods=["POST"]),
    Route("/scan-templates", list_templates, methods=["GET"]),
    Route("/scan-templates/{template_id}", get_template, methods=["GET"]),
    Route("/scan-templates/{template_id}", update_template, methods=["PATCH"]),
    Route("/scan-templates/{template_id}", delete_template, methods=["DELETE"]),
    Route("/scan-templates/{template_id}/launch", launch_template, methods=["POST"]),
]
