"""Where the live tests find the data engines (``build.sh engines`` installs them into /opt/cix-engines)."""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

PREFIX = Path(os.environ.get("CIX_ENGINES", "/opt/cix-engines"))
ROOT = Path(__file__).resolve().parent.parent.parent


def binary(name: str) -> str | None:
    path = PREFIX / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def require(name: str) -> str:
    path = binary(name)
    if path is None:
        pytest.skip(f"{name} is not installed (run: bash build.sh engines)")
    return path


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], check=False, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_in_netns(args: dict, timeout: float = 300) -> dict:
    """:mod:`tests.engines.netns_osint` in a new user + network namespace (loopback only)."""
    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.engines.netns_osint", json.dumps(args)],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    return result


class _Lab(http.server.BaseHTTPRequestHandler):
    """Serves /canary.txt (what tests/fixtures/nuclei-templates' canary template matches) and records
    the Host header of every request; ``slow`` holds each answer for 20 s (cancel tests)."""

    hosts: ClassVar[list[str]]
    slow: ClassVar[bool]

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        if type(self).slow:
            time.sleep(20)
        body, status = (b"hello cix-canary-7f3a build=1234\n", 200) if self.path == "/canary.txt" else (b"no", 404)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def lab_http() -> Iterator[tuple[int, type[_Lab]]]:
    """An HTTP server on 127.0.0.1 for nuclei to scan; yields (port, handler class)."""
    handler = type("Lab", (_Lab,), {"hosts": [], "slow": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
