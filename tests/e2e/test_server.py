"""End to end: `init` and `serve` as real processes, over real TLS, with real nmap scans of servers
these tests start on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import ssl
import time

import pytest

from tests.e2e.server import Server, cli, cli_json
from tests.helpers import http_target, live_group_members, wait_for

pytestmark = pytest.mark.e2e
needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (.ci/run installs it)")


@pytest.fixture
def appliance(tmp_path):
    data = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data), "--allow-loopback")["key"]
    server = Server(data)
    yield server, admin
    if server.proc is not None and server.proc.poll() is None:
        server.stop(signal.SIGKILL)
    # A test that fails after a SIGKILL could leave a scanner behind: end the ones it started.
    with sqlite3.connect(data / "appliance.db") as conn:
        for (pid,) in conn.execute("SELECT pid FROM scans WHERE pid IS NOT NULL"):
            for member in live_group_members(pid):
                os.kill(member, signal.SIGKILL)


def test_tls_auth_rate_limits_and_sigterm(appliance):
    server, _ = appliance
    key = cli_json("keys", "create", "--data-dir", str(server.data_dir), "--name", "e2e",
                   "--scope", "engines:read", "--rate-minute", "3")["key"]
    server.start()
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        server.tls_context(maximum=ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="localhost")  # TLS 1.2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            server.tls_context().wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # plain HTTP: no API answer
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b'"status"' not in answer and b"HTTP/1.1 200" not in answer

    with server.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.get("/api/v1/engines").json()["code"] == "MISSING_API_KEY"
    with server.client(key) as c:
        asked = time.time()  # the first /engines probes every scanner's version: it may take seconds
        first = c.get("/api/v1/engines")
        assert first.status_code == 200 and first.json()["success"] is True
        assert first.headers["x-ratelimit-limit"] == "3" and first.headers["x-ratelimit-remaining"] == "2"
        assert int(first.headers["x-ratelimit-reset"]) > asked
        c.get("/api/v1/engines")
        c.get("/api/v1/engines")
        over = c.get("/api/v1/engines")
        assert over.status_code == 429 and over.json()["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(over.headers["retry-after"]) >= 1
    assert server.stop(signal.SIGTERM) == 0


@needs_nmap
def test_scan_completes_cancels_and_stays_in_its_tenant(appliance):
    server, admin = appliance
    cli("tenants", "create", "other", "--data-dir", str(server.data_dir))
    other = cli_json("keys", "create", "--data-dir", str(server.data_dir), "--tenant", "other", "--name", "o")
    server.start()
    with http_target() as port, server.client(admin) as c:
        created = c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                 "options": {"ports": str(port)}})
        assert created.status_code == 201, created.text
        scan = server.wait_scan(c, created.json()["data"]["id"])
        assert scan["status"] == "completed", scan
        findings = c.get(f"/api/v1/scans/{scan['id']}/results").json()["data"]["findings"]
        assert any(f["port"] == port and f["protocol"] == "tcp" for f in findings)

        with server.client(other["key"]) as o:
            hidden = o.get(f"/api/v1/scans/{scan['id']}")
            assert hidden.status_code == 404 and hidden.json()["code"] == "SCAN_NOT_FOUND"
            assert o.get(f"/api/v1/scans/{scan['id']}/results").status_code == 404
            assert o.post(f"/api/v1/scans/{scan['id']}/cancel").status_code == 404

        slow = c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1", "options": {
            "ports": "1-65535", "timing": "T1", "serviceDetection": False}}).json()["data"]
        pid = wait_for(lambda: _pid(server, slow["id"]), 30, what="the slow scan's process")
        assert live_group_members(pid)
        called = time.monotonic()
        assert c.post(f"/api/v1/scans/{slow['id']}/cancel").json()["data"]["status"] == "cancelled"
        wait_for(lambda: live_group_members(pid) == [], 5, interval=0.05, what="process group gone")
        assert time.monotonic() - called < 5
    assert server.stop() == 0


def _pid(server: Server, scan_id: str) -> int | None:
    with sqlite3.connect(server.data_dir / "appliance.db") as conn:
        row = conn.execute("SELECT status, pid FROM scans WHERE id = ?", (scan_id,)).fetchone()
    return row[1] if row and row[0] == "running" else None


@needs_nmap
def test_sigkill_with_running_and_queued_scans_recovers(appliance):
    server, admin = appliance
    cli("config", "set", "queue.workers", "1", "--data-dir", str(server.data_dir))
    server.start()
    with http_target() as port:
        with server.client(admin) as c:
            running = c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1", "timeout": 30,
                                                     "options": {"ports": "1-65535", "timing": "T1"}}).json()["data"]
            queued = [c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                     "options": {"ports": str(port)}}).json()["data"]
                      for _ in range(2)]
            pid = wait_for(lambda: _pid(server, running["id"]), 30, what="the first scan to run")
            statuses = [c.get(f"/api/v1/scans/{q['id']}").json()["data"]["status"] for q in queued]
            assert statuses == ["queued", "queued"]
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        # the scanner runs in its own session but dies with the thread that started it (PDEATHSIG)
        wait_for(lambda: live_group_members(pid) == [], 5, what="the scanner to die with the server")
        server.start()
        # the reconciler re-queues the lost run once
        with server.client(admin) as c:
            finals = [server.wait_scan(c, s["id"], timeout=150) for s in (running, *queued)]
    assert [f["status"] for f in finals[1:]] == ["completed", "completed"]
    assert finals[0]["status"] == "failed" and finals[0]["error"]["code"] == "TIMEOUT"
    with sqlite3.connect(server.data_dir / "appliance.db") as conn:
        attempts = conn.execute("SELECT attempts FROM scans WHERE id = ?", (running["id"],)).fetchone()[0]
    assert attempts == 2  # re-queued once after the crash, never run twice at once
    assert server.stop() == 0


@needs_nmap
def test_sigterm_hands_running_scans_back_to_the_queue(appliance):
    server, admin = appliance
    server.start()
    with server.client(admin) as c:
        scan = c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1", "timeout": 30, "options": {
            "ports": "1-65535", "timing": "T1", "serviceDetection": False}}).json()["data"]
        pid = wait_for(lambda: _pid(server, scan["id"]), 30, what="the scan to run")
    stopped = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - stopped < 20
    assert live_group_members(pid) == []
    with sqlite3.connect(server.data_dir / "appliance.db") as conn:
        status, attempts = conn.execute("SELECT status, attempts FROM scans WHERE id = ?", (scan["id"],)).fetchone()
    assert (status, attempts) == ("queued", 0)  # not lost, and the shutdown did not use up its retry
    server.start()
    with server.client(admin) as c:
        wait_for(lambda: _pid(server, scan["id"]), 30, what="the scan to run again after the restart")
        assert c.post(f"/api/v1/scans/{scan['id']}/cancel").json()["data"]["status"] == "cancelled"
    assert server.stop() == 0


def test_sigterm_lets_a_request_in_flight_finish_and_refuses_new_connections(appliance):
    server, admin = appliance
    server.start()
    assert server.proc is not None
    body = b'{"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "1"}}'
    head = (b"POST /api/v1/scans HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-API-Key: "
            + admin.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            server.tls_context().wrap_socket(raw, server_hostname="localhost") as conn:
        conn.sendall(head + body[:10])  # the request is in the app, waiting for the rest of its body
        time.sleep(0.5)
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(1)
        with pytest.raises(OSError):  # stopped listening, yet the request in flight is still served
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        assert server.proc.poll() is None
        conn.sendall(body[10:])
        conn.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    assert server.proc.wait(30) == 0
