"""The HTTP protocol of the post-quantum listener, which enforces the limits of
:mod:`appliance.httplimits` on what one client can make the server hold while it reads a request.

The main listener is granian's (:mod:`appliance.server`), which enforces the same limits in Rust.
The post-quantum listener hands decrypted bytes to uvicorn's httptools protocol, which bounds an
incomplete request only for its h11 parser: with httptools, endless header lines grew one connection
past a gigabyte, and an idle or half-sent request stayed open for minutes.
:class:`GuardedHttpToolsProtocol` counts header bytes and lines and puts a deadline on reading each
request; :class:`~appliance.pqtls.PQTLSProtocol` puts one on the TLS handshake.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.httplimits import Limits, busy

log = logging.getLogger(__name__)


class _HeadersTooLarge(Exception):
    pass


def _raw_response(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"success": False, "error": message, "code": code}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits (431), read deadlines and a connection cap
    (503 in the envelope). ``limits`` is set on a subclass made per server (see :func:`protocol`)."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._real_app = self.app
        self._reading_headers = True
        self._raw_bytes = 0  # bytes received since this request started, while in its headers
        self._parsed_bytes = 0
        self._parsed_count = 0
        self._too_large = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > 2 * self.limits.max_connections:
            # Far past the cap: do not even hold the socket for a 503.
            transport.abort()
            return
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            if self._deadline is None:  # the next request on a kept-alive connection starts now
                self._arm(self.limits.header_timeout)
            self._raw_bytes += len(data)
        else:  # body: the deadline is an idle time, renewed by every chunk
            self._arm(self.limits.header_timeout)
        super().data_received(data)
        if self._reading_headers and self._raw_bytes > self.limits.max_header_bytes and not self._too_large:
            # httptools keeps an incomplete header in its own buffer: count raw bytes, not parsed ones.
            self._too_large = True
            self._reject_headers()

    # -- parser callbacks -------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_count += 1
        self._parsed_bytes += len(name) + len(value) + 4
        if self._parsed_count > self.limits.max_headers or self._parsed_bytes > self.limits.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge()  # httptools turns it into HttpParserError: send_400_response below
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm()
        self._arm(self.limits.header_timeout)
        over = (len(self.connections) > self.limits.max_connections
                or len(self.tasks) >= self.limits.max_connections)
        if over:
            log.warning("refusing a request: %d connections open (server.max_connections = %d)",
                        len(self.connections), self.limits.max_connections)
        self.app = busy if over else self._real_app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_headers = True
        self._raw_bytes = self._parsed_bytes = self._parsed_count = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._reject_headers()
        else:
            super().send_400_response(msg)

    # -- helpers ----------------------------------------------------------------------------------
    def _reject_headers(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("closing a connection whose request headers exceed %d bytes or %d lines",
                    self.limits.max_header_bytes, self.limits.max_headers)
        self.transport.write(_raw_response(
            b"431 Request Header Fields Too Large", "REQUEST_HEADER_FIELDS_TOO_LARGE",
            f"request headers exceed {self.limits.max_header_bytes} bytes or {self.limits.max_headers} lines"))
        self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing a connection that sent no complete request within %.0f s", self.limits.header_timeout)
            self.transport.close()


def protocol(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    return type("HttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
