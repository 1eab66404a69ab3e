"""``/api-keys`` (§8): keys managing keys, never beyond what the calling key holds itself."""
from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance import apikeys, clock
from appliance.api.context import actor, authorize, services_of
from appliance.api.envelope import PAGE_PARAMS, check_query, ok, paged, read_json
from appliance.bodies import RotateKey, given, parse
from appliance.errors import ApiError


def _key_row(request: Request, tenant_id: str) -> sqlite3.Row:
    row = services_of(request).reader.one("SELECT * FROM api_keys WHERE id = ? AND tenant_id = ?",
                                          (request.path_params["key_id"], tenant_id))
    if row is None:
        raise ApiError(404, "API_KEY_NOT_FOUND", "API key not found")
    return row


def _respond_with_key(request: Request, key_id: str, status: int = 200, raw: str | None = None
                            ) -> JSONResponse:
    row = services_of(request).reader.one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
    assert row is not None  # just committed, and keys are never deleted
    data = apikeys.to_json(row)
    if raw is not None:
        data["key"] = raw
    return ok(data, status)


async def create_key(request: Request) -> JSONResponse:
    services, grant = authorize(request, "api-keys:write")
    spec = apikeys.confine(apikeys.parse_spec(await read_json(request), services.engines), grant)
    apikeys.bound(spec, grant, clock.now())
    key_id, raw, ops = apikeys.create_ops(grant.tenant_id, spec, actor(grant))
    await services.commit_keys(*ops)
    return _respond_with_key(request, key_id, 201, raw)


async def list_keys(request: Request) -> JSONResponse:
    services, grant = authorize(request, "api-keys:read")
    check_query(request, PAGE_PARAMS)
    items, pages = paged(request, services.reader, "api_keys", "tenant_id = ?", [grant.tenant_id],
                         "created_at DESC, id", apikeys.to_json)
    return ok(items, pagination=pages)


async def get_key(request: Request) -> JSONResponse:
    _, grant = authorize(request, "api-keys:read")
    check_query(request, ())
    return ok(apikeys.to_json(_key_row(request, grant.tenant_id)))


async def rotate_key(request: Request) -> JSONResponse:
    services, grant = authorize(request, "api-keys:write")
    row = _key_row(request, grant.tenant_id)
    grace = given(parse(await read_json(request, empty_ok=True), RotateKey)).get("gracePeriodHours", 24)
    apikeys.check_rotatable(row, clock.now())
    # The successor is a key this caller makes: never more than the caller holds (scopes, scan
    # types, IPs), nor longer-lived or faster than it.
    spec = apikeys.bound(apikeys.confine(apikeys.spec_from_row(row), grant), grant, clock.now(), rotating=True)
    key_id, raw, ops = apikeys.rotate_ops(row, grace, actor(grant), spec)
    if not (await services.commit_keys(*ops))[0]:
        raise ApiError(409, "CONFLICT", f"{row['id']} {apikeys.ALREADY_ROTATED}")
    return _respond_with_key(request, key_id, 201, raw)


def _transition(action: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handler(request: Request) -> JSONResponse:
        services, grant = authorize(request, "api-keys:write")
        row = _key_row(request, grant.tenant_id)
        # Managing a key is reserved to keys that hold at least what it holds.
        apikeys.confine(apikeys.spec_from_row(row), grant)
        await services.commit_keys(*apikeys.transition_ops(row, action, actor(grant)))
        return _respond_with_key(request, row["id"])
    handler.__name__ = f"{action}_key"
    return handler


routes = [
    Route("/api-keys", create_key, methods=["POST"]),
    Route("/api-keys", list_keys, methods=["GET"]),
    Route("/api-keys/{key_id}", get_key, methods=["GET"]),
    Route("/api-keys/{key_id}", _transition("revoke"), methods=["DELETE"]),
    Route("/api-keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/api-keys/{key_id}/suspend", _transition("suspend"), methods=["POST"]),
    Route("/api-keys/{key_id}/reactivate", _transition("reactivate"), methods=["POST"]),
]
