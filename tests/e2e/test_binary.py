"""The PyInstaller binary end to end: init, a CLI-made key, serve over TLS 1.3, SIGTERM exits 0.

Needs dist/cix-appliance (``bash build.sh``; ``.ci/run`` builds it before the tests).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

BINARY = Path(__file__).parents[2] / "dist" / "cix-appliance"

pytestmark = [
    pytest.mark.binary,
    pytest.mark.skipif(not BINARY.exists(), reason=f"{BINARY} is missing; build it with `bash build.sh`"),
]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def run_binary(*args: str) -> dict:
    """Run a one-shot command of the binary and parse its --json output."""
    proc = subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def wait_healthy(url: str, ctx: ssl.SSLContext, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode} before answering:\n{log.read_text()}")
        try:
            with httpx.Client(verify=ctx, timeout=2) as client:
                if client.get(url).status_code == 200:
                    return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"/health did not answer within 30 s:\n{log.read_text()}")
        time.sleep(0.2)


def test_binary_serves_tls13_api_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    admin = run_binary("init", "--data-dir", str(data_dir), "--allow-loopback", "--json")
    assert admin["key"]
    key = run_binary("keys", "create", "--data-dir", str(data_dir), "--name", "smoke", "--json")["key"]
    assert key and key != admin["key"]

    port = free_port()
    base = f"https://{HOST}:{port}"
    ctx = ssl.create_default_context(cafile=str(data_dir / "tls-cert.pem"))
    # hostname checking stays on: init's self-signed certificate also names 127.0.0.1
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(BINARY), "serve", "--data-dir", str(data_dir), "--host", HOST, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_healthy(f"{base}/health", ctx, server, log)
        with httpx.Client(base_url=base, verify=ctx, timeout=10) as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}

            engines = client.get("/api/v1/engines", headers={"X-API-Key": key})
            assert engines.status_code == 200, engines.text
            assert engines.json()["success"] is True

            wrong = client.get("/api/v1/engines", headers={"X-API-Key": key[:-4] + "XXXX"})
            assert wrong.status_code == 401, wrong.text
            assert wrong.json()["code"] == "INVALID_API_KEY"

        tls12 = ssl.create_default_context(cafile=str(data_dir / "tls-cert.pem"))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            with socket.create_connection((HOST, port), timeout=10) as raw:
                with tls12.wrap_socket(raw, server_hostname=HOST):
                    pass

        os.kill(server.pid, signal.SIGTERM)
        try:
            returncode = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit within 30 s of SIGTERM:\n{log.read_text()}")
        assert returncode == 0, log.read_text()
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
