"""The limits on what one client can make the server hold (enforced by granian on the main listener
and by :mod:`appliance.httpguard` on the post-quantum one), and the 503 both send over the connection
cap. Apart from httpguard so that a server without the post-quantum listener never loads uvicorn.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from appliance.api.middleware import SERVER_HEADER

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0  # first byte (or connection) to the end of the headers; body: idle time
    handshake_timeout: float = 10.0
    max_connections: int = 1000
    max_header_bytes: int = MAX_HEADER_BYTES  # request line and headers together
    max_headers: int = MAX_HEADERS


async def busy(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps({"success": False, "error": "too many connections; retry shortly",
                       "code": "SERVICE_UNAVAILABLE"}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close"), SERVER_HEADER]})
    await send({"type": "http.response.body", "body": body})
