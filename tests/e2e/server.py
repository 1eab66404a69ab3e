"""A real ``cix-appliance serve`` process for end-to-end tests, on a free 127.0.0.1 port."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_for

APPLIANCE = [sys.executable, "-m", "appliance"]


def cli(*args: str, command: list[str] = APPLIANCE) -> str:
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_json(*args: str, command: list[str] = APPLIANCE) -> dict:
    return json.loads(cli(*args, "--json", command=command))


class Server:
    def __init__(self, data_dir: Path, command: list[str] = APPLIANCE) -> None:
        self.data_dir = data_dir
        self.command = command
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls_context(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.data_dir / "tls-cert.pem"))
        if maximum is not None:
            context.maximum_version = maximum
        return context

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.base, verify=self.tls_context(), headers=headers, timeout=30)

    def start(self) -> Server:
        # The one-file binary unpacks itself under $TMPDIR, and a SIGKILL leaves that behind (systemd's
        # unit clears it before each start): keep it in the test's own directory, not in /tmp.
        tmp = self.data_dir.parent / "tmp"
        tmp.mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.command, "serve", "--data-dir", str(self.data_dir), "--host",
                                          "127.0.0.1", "--port", str(self.port)], stdout=log, stderr=log,
                                         env={**os.environ, "TMPDIR": str(tmp)})
        wait_for(self._ready, 60, what=f"server on port {self.port} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with self.client() as c:
                return c.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal our server process by its pid and wait for it; returns its exit status."""
        assert self.proc is not None
        # The one-file binary is a bootloader running the server as its child: a SIGKILL of the
        # bootloader alone would leave that child serving. A crash takes both, as systemd's does.
        children = _children(self.proc.pid) if sig == signal.SIGKILL else []
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def wait_scan(self, client: httpx.Client, scan_id: str, timeout: float = 120) -> dict:
        def check():
            scan = client.get(f"/api/v1/scans/{scan_id}").json()["data"]
            return scan if scan["status"] in ("completed", "failed", "cancelled") else None
        return wait_for(check, timeout, interval=0.5, what=f"scan {scan_id}")


def _children(pid: int) -> list[int]:
    """The direct children of our process ``pid`` (Linux /proc)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found
