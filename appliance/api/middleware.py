"""Pure ASGI middleware wrapped around every request: request id, body cap, errors, headers,
and the API call log."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance import clock
from appliance.errors import StorageFull, is_disk_full
from appliance.validate import parse_decimal

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Keys other code puts into the ASGI scope for this middleware to read on the way out.
RATE_HEADERS = "cix.rate_headers"
PRINCIPAL = "cix.principal"
ERROR_CODE = "cix.error_code"  # the contract code of an error answer, set by the app's error handler
# Every answer names the appliance: the HTTP server would name itself (uvicorn did, with its version).
SERVER_HEADER = (b"server", b"cix-appliance")
# Called once per request when its answer is sent: (scope, status, seconds, request id).
Observer = Callable[[Scope, int, float, str], None]


_new_request_id = clock.unique_ids()  # a uuid4 per request would cost a random read each


@functools.lru_cache(maxsize=64)
def _header_name(name: str) -> bytes:
    return name.lower().encode()


class _TooLarge(Exception):
    pass


class _Stalled(Exception):
    pass


def _envelope(code: str, message: str) -> bytes:
    return json.dumps({"success": False, "error": message, "code": code}).encode()


class RequestMiddleware:
    """Outermost layer: it answers 413, 500 and a full disk's 503 itself, so no error escapes
    without the envelope (and, once the request authenticated, without its rate-limit headers)."""

    def __init__(self, app: ASGIApp, record: Callable[[dict[str, Any]], None] | None = None,
                 max_body: int = MAX_BODY, observers: Sequence[Observer] = (), body_timeout: float = 10.0) -> None:
        self.app = app
        self.record = record
        self.max_body = max_body
        self.body_timeout = body_timeout  # the longest wait for the next piece of a request body
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
        loop = asyncio.get_running_loop()
        stalled: list[asyncio.Task[Any]] = []  # the task whose receive outlasted the deadline

        def stall(task: asyncio.Task[Any]) -> None:
            stalled.append(task)
            task.cancel()

        async def limited_receive() -> Message:
            # What asyncio.timeout does, without its context manager and rescheduling: a timer
            # per receive is a few microseconds, asyncio.timeout several times that.
            nonlocal received
            task = asyncio.current_task()
            assert task is not None
            timer = loop.call_later(self.body_timeout, stall, task)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task in stalled and task.uncancel() == 0:
                    raise _Stalled() from None
                raise
            finally:
                timer.cancel()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = list(message.get("headers", ()))
                headers += ((b"x-request-id", sent.encode()), SERVER_HEADER)
                rate = scope.get(RATE_HEADERS)
                if rate:
                    headers += [(_header_name(name), str(value).encode()) for name, value in rate.items()]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, wrapped_send)
        except _TooLarge:
            if not state["started"]:
                await self._reply(scope, send, 413, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB", sent, state)
        except _Stalled:
            log.info("a request body stalled for %.0f s on %s %s (request %s)", self.body_timeout, scope["method"],
                     scope["path"], sent)
            if not state["started"]:
                await self._reply(scope, send, 400, "INVALID_JSON",
                                  f"the request body stopped arriving for {self.body_timeout:.0f} s", sent, state,
                                  {"connection": "close"})
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
        given = headers.get(b"x-request-id")
        if given is not None:
            text = given.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
        return _new_request_id()

    async def _reply(self, scope: Scope, send: Send, status: int, code: str, message: str, request_id: str,
                     state: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        body = _envelope(code, message)
        scope[ERROR_CODE] = code
        state["status"] = status
        state["started"] = True
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id.encode()), SERVER_HEADER]
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
