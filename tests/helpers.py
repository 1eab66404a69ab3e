"""Test helpers: local target servers (loopback only), free ports, polling."""
from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_target() -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1 that scans in tests may target; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def wait_for(check: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_for(check: Callable[[], object], timeout: float, interval: float = 0.2,
                    what: str = "condition") -> object:
    """``wait_for`` for async tests: ``check`` may be a coroutine function."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
