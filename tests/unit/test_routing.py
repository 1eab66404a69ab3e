"""PrefixRouter answers exactly what Starlette's router answers, from the route group of the path."""
from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router

from appliance.routing import PrefixRouter

pytestmark = pytest.mark.anyio


async def _name(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.scope["route"].path)


ROUTES = [Route("/api/v1/scans/{scan_id}", _name, methods=["GET"]), Route("/api/v1/scans", _name, methods=["POST"]),
          Route("/health", _name, methods=["GET"]), Route("/internal/v1/worker/claim", _name, methods=["POST"]),
          Route("/scan-api/api/v1/scans", _name, methods=["POST"]), Route("/api/v1x", _name, methods=["GET"])]
PREFIXES = ["/api/v1/", "/scan-api/api/v1/", "/internal/v1/worker/"]
REQUESTS = [("GET", "/api/v1/scans/abc"), ("POST", "/api/v1/scans"), ("GET", "/api/v1/scans"),
            ("POST", "/api/v1/scans/"), ("GET", "/health"), ("GET", "/health/"), ("POST", "/internal/v1/worker/claim"),
            ("POST", "/scan-api/api/v1/scans"), ("GET", "/api/v1/nothing"), ("GET", "/api/v1x"), ("GET", "/api/v1"),
            ("GET", "/elsewhere")]


async def _answers(app: Starlette) -> list[tuple[int, str, str]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        out = []
        for method, path in REQUESTS:
            response = await client.request(method, path)
            out.append((response.status_code, response.headers.get("location", ""), response.text))
        return out


async def test_answers_match_starlettes_router() -> None:
    plain = Starlette(routes=ROUTES)
    grouped = Starlette()
    grouped.router = PrefixRouter(ROUTES, prefixes=PREFIXES)
    expected = await _answers(plain)
    assert await _answers(grouped) == expected
    assert [status for status, _, _ in expected] == [200, 200, 405, 307, 200, 307, 200, 200, 404, 200, 404, 404]
    assert grouped.routes == ROUTES  # listed whole, in order (OpenAPI and url_path_for read them)


async def test_a_request_is_matched_only_against_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []
    real = Route.matches

    def counting(self: Route, scope: dict) -> object:
        tried.append(self.path)
        return real(self, scope)

    monkeypatch.setattr(Route, "matches", counting)
    grouped = Starlette()
    grouped.router = PrefixRouter(ROUTES, prefixes=PREFIXES)
    transport = httpx.ASGITransport(app=grouped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health")).status_code == 200
    assert tried == ["/health"]
    assert isinstance(grouped.router, Router)
