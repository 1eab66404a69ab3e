"""``GET /metrics``: what :class:`appliance.metrics.Metrics` counts, in Prometheus' text format."""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from appliance.api.auth import client_ip
from appliance.errors import ApiError

if TYPE_CHECKING:
    from appliance.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _allowed(ip: str, networks: Iterator[str] | Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: no API key (Prometheus scrapes without one); ``metrics.allowed_ips`` limits
    who may read it. 404 while metrics are off, as if the route did not exist."""
    services: Services = request.app.state.services
    if services.metrics is None:
        raise ApiError(404, "NOT_FOUND", "not found")
    allowed = services.config["metrics.allowed_ips"]
    ip = client_ip(request.scope, services.auth.proxies)
    if allowed and not _allowed(ip, allowed):
        raise ApiError(403, "IP_NOT_ALLOWED", f"metrics are not served to {ip}")
    body = await asyncio.to_thread(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
