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
from starlette.routing import Mount, Route

from appliance import logs
from appliance.api import audit, engines, keys, reports, results, scans, templates, usage, webhooks
from appliance.api.envelope import error_response
from appliance.api.middleware import ERROR_CODE, Observer, RequestMiddleware
from appliance.config import Config
from appliance.errors import ApiError, StorageFull
from appliance.metrics import metrics_endpoint
from appliance.services import Services
from appliance.workers import routes as worker_routes

API_PREFIXES = ("/api/v1", "/scan-api/api/v1")
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def health(request: Request) -> JSONResponse:
    """503 while the appliance cannot store what it is asked to: load balancers route elsewhere and
    the operator sees why."""
    problem = await request.app.state.services.writer.check_health()
    if problem is not None:
        return JSONResponse({"status": "degraded", "reason": problem}, status_code=503,
                            headers={"Retry-After": str(StorageFull.RETRY_AFTER)})
    return JSONResponse({"status": "ok"})


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


def create_app(config: Config) -> Starlette:
    services = Services(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    api_routes = [Route("/openapi.json", openapi_json, methods=["GET"]), *keys.routes, *scans.routes,
                  *results.routes, *engines.routes,
                  *templates.routes, *webhooks.routes, *usage.routes, *audit.routes, *reports.routes]
    observers: list[Observer] = []
    if config["logging.access_log"]:
        observers.append(logs.log_request)
    if services.metrics is not None:
        observers.append(services.metrics.observe_request)
    app = Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/metrics", metrics_endpoint, methods=["GET"]),
                *worker_routes.routes,
                *(Mount(prefix, routes=api_routes) for prefix in API_PREFIXES)],
        middleware=[Middleware(RequestMiddleware, record=services.calls.record, observers=observers)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.services = services
    return app
