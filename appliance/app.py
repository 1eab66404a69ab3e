"""The ASGI application, assembled from route and middleware lists."""
from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance import logs
from appliance.api import audit, engines, keys, reports, results, scans, templates, usage, webhooks
from appliance.api.envelope import error_response
from appliance.api.metrics import metrics_endpoint
from appliance.api.middleware import ERROR_CODE, Observer, RequestMiddleware
from appliance.config import Config
from appliance.errors import ApiError, StorageFull
from appliance.routing import PrefixRouter
from appliance.scanning.reporter import INTERNAL_PREFIX
from appliance.services import Services
from appliance.workers import routes as worker_routes

API_PREFIXES = ("/api/v1", "/scan-api/api/v1")
_HEALTH_OK = b'{"status":"ok"}'
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def health(request: Request) -> Response:
    """503 while the appliance cannot store what it is asked to: load balancers route elsewhere and
    the operator sees why."""
    problem = await request.app.state.services.writer.check_health()
    if problem is not None:
        return JSONResponse({"status": "degraded", "reason": problem}, status_code=503,
                            headers={"Retry-After": str(StorageFull.RETRY_AFTER)})
    return Response(_HEALTH_OK, media_type="application/json")


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 document; no key needed (a client generator or a fuzzer starts here)."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        from appliance.openapi import document  # built on first use: only clients that ask pay for it

        state.openapi = json.dumps(document(state.services.engines), separators=(",", ":")).encode()
    return Response(state.openapi, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    request.scope[ERROR_CODE] = exc.code
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "VALIDATION_ERROR")
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    request.scope[ERROR_CODE] = code
    return error_response(ApiError(exc.status_code, code, message, headers=dict(exc.headers or {})))


def prefixed(prefix: str, routes: list[Route]) -> list[Route]:
    """``routes`` under ``prefix`` as plain routes: what a ``Mount`` serves, without a second router
    and a scope copy per request."""
    return [Route(prefix + r.path, r.endpoint, methods=list(r.methods or ()), name=r.name) for r in routes]


def create_app(config: Config) -> Starlette:
    services = Services(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    # Within a prefix, Starlette tries routes in order, a regex match each: the routes CI pipelines
    # poll come first (no two paths overlap; a method mismatch is a 405 whatever the order).
    api_routes = [*scans.routes, *results.routes, *engines.routes, *keys.routes,
                  *templates.routes, *webhooks.routes, *usage.routes, *audit.routes, *reports.routes,
                  Route("/openapi.json", openapi_json, methods=["GET"])]
    observers: list[Observer] = []
    if config["logging.access_log"]:
        observers.append(logs.log_request)
    if services.metrics is not None:
        observers.append(services.metrics.observe_request)
    app = Starlette(
        middleware=[Middleware(RequestMiddleware, record=services.calls.record, observers=observers,
                               body_timeout=config["server.header_timeout_seconds"])],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.router = PrefixRouter(
        [*prefixed(API_PREFIXES[0], api_routes), Route("/health", health, methods=["GET"]),
         Route("/metrics", metrics_endpoint, methods=["GET"]), *worker_routes.routes,
         *(r for p in API_PREFIXES[1:] for r in prefixed(p, api_routes))],
        prefixes=[f"{p}/" for p in (*API_PREFIXES, INTERNAL_PREFIX)],
        lifespan=lifespan)
    app.state.services = services
    return app
