"""Pure ASGI middleware wrapped around every request: request id, body cap, errors, headers,
and the API call log."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import StorageFull, is_disk_full
from appliance.validate import parse_decimal

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Keys other code puts into the ASGI scope for this middleware to read on the way out.
RATE_HEADERS = "cix.rate_headers"
PRINCIPAL = "cix.principal"
ERROR_CODE = "cix.error_code"  # the contract code of an error answer, set by the app's error handler
# Called once per request when its answer is sent: (scope, status, seconds, request id).
Observer = Callable[[Scope, int, float, str], None]


class _TooLarge(Exception):
    pass


def _envelope(code: str, message: str) -> bytes:
    return json.dumps({"success": False, "error": message, "code": code}).encode()


class RequestMiddleware:
    """Outermost layer: it answers 413, 500 and a full disk's 503 itself, so no error escapes
    without the envelope (and, once the request authenticated, without its rate-limit headers)."""

    def __init__(self, app: ASGIApp, record: Callable[[dict[str, Any]], None] | None = None,
                 max_body: int = MAX_BODY, observers: Sequence[Observer] = ()) -> None:
        self.app = app
        self.record = record
        self.max_body = max_body
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        sent = self._request_id(headers)
        state = {"status": 500, "started": False}

        length = headers.get(b"content-length")
        if length is not None:
            text = length.decode("latin-1")
            declared = parse_decimal(text)
            if declared is None and text.isascii() and text.isdigit():
                declared = self.max_body + 1  # more digits than parse_decimal reads: a number, too large
            if declared is None:
                await self._reply(scope, send, 400, "VALIDATION_ERROR", "content-length: not a decimal length",
                                  sent, state)
                self._log(scope, state, started, sent)
                return
            if declared > self.max_body:
                await self._reply(scope, send, 413, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB", sent, state)
                self._log(scope, state, started, sent)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", sent.encode()))
                for name, value in scope.get(RATE_HEADERS, {}).items():
                    headers.append((name.lower().encode(), str(value).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, wrapped_send)
        except _TooLarge:
            if not state["started"]:
                await self._reply(scope, send, 413, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB", sent, state)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("write failed for lack of space on %s %s (request %s): %s", scope["method"],
                          scope["path"], sent, exc)
                if not state["started"]:
                    full = StorageFull()
                    await self._reply(scope, send, full.status, full.code, full.message, sent, state, full.headers)
            else:
                log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"], sent)
                if not state["started"]:
                    await self._reply(scope, send, 500, "INTERNAL_ERROR", "internal error", sent, state)
        self._log(scope, state, started, sent)

    @staticmethod
    def _request_id(headers: dict[bytes, bytes]) -> str:
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        return given if _REQUEST_ID.match(given) else str(uuid.uuid4())

    async def _reply(self, scope: Scope, send: Send, status: int, code: str, message: str, request_id: str,
                     state: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        body = _envelope(code, message)
        scope[ERROR_CODE] = code
        state["status"] = status
        state["started"] = True
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id.encode())]
        for name, value in {**scope.get(RATE_HEADERS, {}), **(extra or {})}.items():
            headers.append((name.lower().encode(), str(value).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _log(self, scope: Scope, state: dict[str, Any], started: float, request_id: str) -> None:
        seconds = time.perf_counter() - started
        for observe in self.observers:
            try:
                observe(scope, state["status"], seconds, request_id)
            except Exception:  # an access log or a metric must never fail the request
                log.exception("request observer %r failed", observe)
        principal = scope.get(PRINCIPAL)
        if self.record is None or principal is None:
            return
        self.record({"tenant_id": principal.tenant_id, "api_key_id": principal.id,
                     "method": scope["method"], "path": scope["path"], "status": state["status"],
                     "duration_ms": round(seconds * 1000, 3),
                     "ip": scope.get("cix.client_ip"), "request_id": request_id,
                     "created_at": time.time()})
