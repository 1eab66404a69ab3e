"""Starting the ASGI server, behind one function so that another server (granian, a post-quantum
TLS listener) can replace uvicorn without touching the app."""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from appliance.httpguard import MAX_HEADER_BYTES, Limits, loop_factory, protocol

if TYPE_CHECKING:
    from OpenSSL import SSL

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app starts: a port in use is one clear error (OSError)
    before anything has been started, not a failure after "startup complete"."""
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


class _Server(uvicorn.Server):
    """uvicorn's server, plus the post-quantum listener on the same loop, app and server state:
    one connection cap, one drain at shutdown, one set of rate limits and call log."""

    def __init__(self, config: uvicorn.Config, pq: PQListener | None, handshake_timeout: float) -> None:
        super().__init__(config)
        self._pq = pq
        self._handshake_timeout = handshake_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._pq is None or not self.started:
            return
        from appliance.pqtls import PQTLSProtocol

        pq, config = self._pq, self.config

        def http() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state)
            return made

        server = await asyncio.get_running_loop().create_server(
            lambda: PQTLSProtocol(pq.context, http, self._handshake_timeout), sock=pq.sock, backlog=config.backlog)
        self.servers.append(server)  # closed, and its connections drained, with the main listener's
        host, port = pq.sock.getsockname()[:2]
        log.info("post-quantum TLS listener (X25519MLKEM768) on %s:%d", host, port)


def run(app: ASGIApp, sock: socket.socket, context: ssl.SSLContext, grace_seconds: int, limits: Limits,
        log_level: str = "info", pq: PQListener | None = None) -> None:
    """Serve ``app`` over TLS on ``sock`` (and ``pq``, if given) until SIGTERM/SIGINT, then drain and
    return (exit status 0)."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, host=host, port=port, http=protocol(limits), lifespan="on",
        loop=loop_factory(limits),  # type: ignore[arg-type]  # uvicorn takes a factory, typed as only a name
        ssl_context_factory=lambda _config, _default: context,
        timeout_graceful_shutdown=grace_seconds, log_level=log_level, access_log=False,
        log_config=None,  # uvicorn's lines go through the appliance's handler (text or JSON), not its own
        server_header=False, date_header=False, proxy_headers=False,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # the same bound if h11 is ever chosen
    )
    # uvicorn re-raises the signal it caught once it has shut down; with our no-op handler in place
    # that re-raise is absorbed and the process exits 0, as systemd expects from a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    _Server(config, pq, limits.handshake_timeout).run(sockets=[sock])
