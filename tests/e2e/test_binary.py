"""The PyInstaller binary end to end: init, a CLI-made key, serve over TLS 1.3, a real nmap scan,
SIGTERM exits 0. Needs dist/cix-appliance (``bash build.sh``; ``./test.sh`` builds it first, and in CI
a missing binary is a failure, not a skip)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest

from tests.e2e.server import Server, cli_json
from tests.helpers import http_target

BINARY = Path(__file__).parents[2] / "dist" / "cix-appliance"

pytestmark = [
    pytest.mark.binary,
    pytest.mark.skipif(not BINARY.exists() and not os.environ.get("CI"),
                       reason=f"{BINARY} is missing; build it with `bash build.sh`"),
]


def test_binary_serves_tls13_api_scans_and_stops_cleanly(tmp_path: Path) -> None:
    command = [str(BINARY)]
    data_dir = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data_dir), "--allow-loopback", command=command)["key"]
    key = cli_json("keys", "create", "--data-dir", str(data_dir), "--name", "smoke", command=command)["key"]
    assert key != admin
    server = Server(data_dir, command=command).start()
    try:
        with server.client(key) as client:
            assert client.get("/health").json() == {"status": "ok"}
            engines = client.get("/api/v1/engines")
            assert engines.status_code == 200 and engines.json()["success"] is True
            wrong = client.get("/api/v1/engines", headers={"X-API-Key": key[:-4] + "ZZZZ"})
            assert wrong.status_code == 401 and wrong.json()["code"] == "INVALID_API_KEY"
            if shutil.which("nmap"):
                with http_target() as port:
                    scan = client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                              "options": {"ports": str(port)}}).json()["data"]
                    done = server.wait_scan(client, scan["id"])
                assert done["status"] == "completed", done
                findings = client.get(f"/api/v1/scans/{scan['id']}/results").json()["data"]["findings"]
                assert any(f["port"] == port for f in findings)
        with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            server.tls_context(maximum=ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="127.0.0.1")
        assert server.stop(signal.SIGTERM) == 0, server.log.read_text()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
