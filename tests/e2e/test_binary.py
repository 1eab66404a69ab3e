"""The PyInstaller binary end to end: init, a CLI-made key, serve over TLS 1.3, a real nmap scan,
SIGTERM exits 0; the same with the Redis queue and a remote worker; what is imported only when used
is bundled. Needs dist/cix-appliance (``bash build.sh``; ``./test.sh`` builds it first, and in CI
a missing binary is a failure, not a skip)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest

from tests.e2e.server import Server, cli, cli_json
from tests.e2e.test_workers import Redis, Worker
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


# Imported inside the functions that need them (tests/unit/test_startup_imports.py): PyInstaller bundles
# them because the spec names them, not because it saw the import. Module -> what fails without it.
LAZY = {
    "redis.client": "queue.backend = redis, remote workers",
    "httpx": "webhook deliveries, remote workers",
    "httpcore._async.http11": "webhook deliveries",
    "h11": "webhook deliveries",
    "dns.resolver": "the OSINT engines' DNS brute force",
    "dns.rdtypes.IN.A": "the brute force's A answers (dnspython loads rdata types by name)",
    "dns.rdtypes.IN.AAAA": "the brute force's AAAA answers",
    "uvicorn.protocols.http.httptools_impl": "server.pq_port",
    "OpenSSL.SSL": "server.pq_port",
    "prometheus_client": "metrics.enabled",
    "cryptography.x509": "init's self-signed certificate",
}


def test_binary_bundles_what_is_imported_only_when_used() -> None:
    from PyInstaller.archive.readers import CArchiveReader  # type: ignore[import-untyped]

    bundled = set(CArchiveReader(str(BINARY)).open_embedded_archive("PYZ.pyz").toc)
    missing = {m: why for m, why in LAZY.items() if m not in bundled}
    assert not missing, missing


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("nmap") is None,
                    reason="redis-server and nmap are installed by ./test.sh")
def test_binary_redis_queue_and_remote_worker(tmp_path: Path) -> None:
    """huey is loaded without the Redis client (queue.backend = redis hands it over) and httpx only
    by the worker that reports over it: both, frozen, run a real scan."""
    command = [str(BINARY)]
    data_dir = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data_dir), "--allow-loopback", command=command)["key"]
    redis = Redis(tmp_path)
    server = Server(data_dir, command=command)
    worker: Worker | None = None
    try:
        for key, value in (("queue.redis_url", f'"{redis.url}"'), ("queue.backend", '"redis"'),
                           ("queue.workers", "0")):
            cli("config", "set", key, value, "--data-dir", str(data_dir), command=command)
        server.start()
        worker = Worker(server, redis, "frozen", tmp_path / "w", command=command)
        with server.client(admin) as client, http_target() as port:
            scan = client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                      "options": {"ports": str(port), "serviceDetection": False}})
            assert scan.status_code == 201, scan.text
            done = server.wait_scan(client, scan.json()["data"]["id"], 60)
        assert done["status"] == "completed" and done["worker"] == "frozen", done
        assert worker.stop() == 0, worker.log.read_text()
        assert server.stop(signal.SIGTERM) == 0, server.log.read_text()
    finally:
        if worker is not None and worker.proc.poll() is None:
            worker.stop(signal.SIGKILL)
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
        redis.stop()
