"""``GET /audit`` (§10): the tenant's audit trail, newest first, with each row's chain hashes.

Appliance-wide rows (config changes, failed-authentication lockouts) carry no tenant and are shown
by ``cix-appliance audit list`` only.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import audit
from appliance.api.context import authorize
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged
from appliance.api.usage import time_filters


async def list_audit(request: Request) -> JSONResponse:
    services, grant = authorize(request, "audit:read")
    check_query(request, ("action", "actor", "resourceId", "from", "to", *PAGE_PARAMS))
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [grant.tenant_id]
    for name, column in (("action", "action"), ("actor", "actor"), ("resourceId", "resource_id")):
        if name in request.query_params:
            where.append(f"{column} = ?")
            params.append(request.query_params[name])
    time_filters(request, where, params)
    items, pages = paged(request, services.reader, "audit_events", " AND ".join(where), params, "id DESC",
                         audit.to_json)
    return ok(items, pagination=pages)


routes = [Route("/audit", list_audit, methods=["GET"])]
