"""Starting the ASGI server, behind one function so that another server (granian, a post-quantum
TLS listener) can replace uvicorn without touching the app."""
from __future__ import annotations

import signal
import ssl

import uvicorn
from starlette.types import ASGIApp


def run(app: ASGIApp, host: str, port: int, context: ssl.SSLContext, grace_seconds: int,
        log_level: str = "info") -> None:
    """Serve ``app`` over TLS until SIGTERM/SIGINT, then drain and return (exit status 0)."""
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        ssl_context_factory=lambda _config, _default: context,
        timeout_graceful_shutdown=grace_seconds, log_level=log_level, access_log=False,
        server_header=False, date_header=False, proxy_headers=False,
    )
    # uvicorn re-raises the signal it caught once it has shut down; with our no-op handler in place
    # that re-raise is absorbed and the process exits 0, as systemd expects from a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
