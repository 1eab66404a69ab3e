"""Serving the app. granian, embedded in the appliance's own event loop, does the main listener's TLS
1.3 and HTTP/1.1 in Rust threads; the post-quantum listener (:mod:`appliance.pqtls`) runs beside it
on the same loop. One lifespan (the embedded queue, the writer), one connection cap, one drain.

What each layer enforces (docs/operations.md, "Connection limits"):
- granian: TLS 1.3 only, HTTP/1.1 only (HTTP/2 would bring its own, laxer header limits), request
  headers over 16 KiB or 100 lines answered 431 and closed, the header-read deadline, a 10 s TLS
  handshake deadline (fixed in granian), and at most twice ``max_connections`` connections accepted
  (more wait in the kernel's accept queue until one closes).
- :class:`Gate`: 503 in the envelope while more than ``max_connections`` connections are open, and
  the count of requests in flight that the drain at SIGTERM waits for.
- the app's RequestMiddleware: the body's idle deadline.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from appliance.connections import ConnectionGauge, families
from appliance.httplimits import Limits, busy

if TYPE_CHECKING:
    from OpenSSL import SSL

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` before the app starts, so that a port in use is one clear error
    (OSError) before anything has been started. The post-quantum listener serves on it; for the main
    listener it only proves the port free (granian binds its own)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class PQListener:
    """The second listener: its socket and its pyOpenSSL context (see :mod:`appliance.pqtls`)."""

    sock: socket.socket
    context: SSL.Context


class Gate:
    """The outermost ASGI layer of both listeners."""

    def __init__(self, app: Any, gauge: ConnectionGauge) -> None:
        self.app = app
        self.gauge = gauge
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.gauge.over():
            log.warning("refusing a request: %d connections open (server.max_connections = %d)",
                        self.gauge.value(), self.gauge.cap)
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def drained(self, seconds: float) -> bool:
        """Wait until no request is in flight; False if some still are after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class _QuietExperimentalWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()  # granian's embedded mode says so at every start


@dataclass(frozen=True)
class Listen:
    """What ``serve`` listens with: the main listener's address, certificate and limits, the
    post-quantum listener if configured, and how shutdown and logging behave."""

    host: str
    port: int
    cert: Path
    key: Path
    limits: Limits
    grace_seconds: int = 10
    log_level: str = "info"
    io_threads: int = 1
    pq: PQListener | None = None


def _granian(gate: Gate, listen: Listen) -> Any:
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    logging.getLogger("_granian").addFilter(_QuietExperimentalWarning())
    limits = listen.limits
    return Server(
        gate, address=listen.host, port=listen.port, interface=Interfaces.ASGINL,  # the lifespan is run here, once
        http=HTTPModes.http1, websockets=False, backlog=2048, runtime_threads=listen.io_threads,
        backpressure=2 * limits.max_connections,  # connections accepted at once; more wait in the kernel
        http1_settings=HTTP1Settings(header_read_timeout=int(limits.header_timeout * 1000),
                                     max_buffer_size=limits.max_header_bytes),
        ssl_cert=listen.cert, ssl_key=listen.key, ssl_protocol_min=SSLProtocols.tls13,
        log_enabled=True, log_level=LogLevels(listen.log_level),
        # granian's lines go through the appliance's handler (text or JSON), not its own.
        log_dictconfig={"loggers": {"_granian": {"handlers": [], "propagate": True},
                                    "granian.access": {"handlers": [], "propagate": False}}},
    )


class _PQServer:
    """The post-quantum listener: uvicorn's guarded httptools protocol (:mod:`appliance.httpguard`)
    over :class:`~appliance.pqtls.PQTLSProtocol`, on this loop."""

    def __init__(self, pq: PQListener, gate: Gate, limits: Limits) -> None:
        import uvicorn
        from uvicorn.server import ServerState

        from appliance.httpguard import protocol

        self.pq = pq
        self.limits = limits
        self.config = uvicorn.Config(gate, http=protocol(limits), lifespan="off", access_log=False,
                                     log_config=None, server_header=False, date_header=False, proxy_headers=False)
        self.config.load()
        self.state = ServerState()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        from appliance.pqtls import PQTLSProtocol

        config, state = self.config, self.state

        def http() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={})
            return made

        self.server = await asyncio.get_running_loop().create_server(
            lambda: PQTLSProtocol(self.pq.context, http, self.limits.handshake_timeout), sock=self.pq.sock,
            backlog=2048)
        host, port = self.pq.sock.getsockname()[:2]
        log.info("post-quantum TLS listener (X25519MLKEM768) on %s:%d", host, port)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their answer


async def _serve(app: Starlette, listen: Listen) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lifespan = app.router.lifespan_context(app)
    try:
        await lifespan.__aenter__()
    except Exception:
        log.exception("startup failed; exiting")
        return 3
    # What startup made (modules, the app, its caches) lives as long as the process: kept out of the
    # collector's full passes, which requests' short-lived objects set off now and then.
    gc.freeze()
    try:
        return await _until_stopped(app, listen, stop)
    finally:
        await lifespan.__aexit__(None, None, None)  # the queue's workers and the writer stop last


async def _until_stopped(app: Starlette, listen: Listen, stop: asyncio.Event) -> int:
    pq = listen.pq
    ports = {listen.port} | ({pq.sock.getsockname()[1]} if pq else set())
    hosts = [listen.host] + ([pq.sock.getsockname()[0]] if pq else [])
    gate = Gate(app, ConnectionGauge(ports, listen.limits.max_connections, address_families=families(hosts)))
    server = _granian(gate, listen)
    serving = asyncio.create_task(server.serve())
    pq_server = _PQServer(pq, gate, listen.limits) if pq else None
    if pq_server is not None:
        await pq_server.start()
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    if serving.done():  # granian ended on its own: its error is the process's
        stopping.cancel()
        if serving.exception() is not None:
            log.error("the HTTPS server failed: %s", serving.exception())
        else:
            log.error("the HTTPS server stopped unexpectedly")
        return 1
    log.info("shutting down: no new connections, %d request(s) in flight", gate.in_flight)
    server.stop()
    if pq_server is not None:
        pq_server.stop_accepting()
    # granian's serve() returns once its connections have answered what they were asked.
    grace = listen.grace_seconds
    deadline = asyncio.get_running_loop().time() + grace
    try:
        async with asyncio.timeout(grace):
            await serving
    except TimeoutError:
        pass
    if not await gate.drained(max(0.0, deadline - asyncio.get_running_loop().time())):
        log.warning("%d request(s) still in flight after %d s; stopping anyway", gate.in_flight, grace)
    return 0


def run(app: Starlette, listen: Listen) -> int:
    """Serve ``app`` over TLS (and on ``listen.pq``, if given) until SIGTERM/SIGINT, then drain and
    return the exit status (0 for a clean stop)."""
    import uvloop

    return uvloop.run(_serve(app, listen))
