"""The server.pq_port listener over real sockets: X25519MLKEM768 negotiated (and required under
tls.pq_only), TLS 1.3 only, the same app as the main listener (rate limits, call log, connection cap),
the limits of appliance/httpguard.py, a large signed report streamed through it, a clean SIGTERM."""
from __future__ import annotations

import json
import signal
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from OpenSSL import SSL

from appliance import clock
from appliance.scanning import batches, lifecycle
from appliance.signing.verify import pinned_keys, verify_report
from appliance.store import apply_sync, connect
from tests.e2e import pqclient
from tests.e2e.server import Server, cli, cli_json
from tests.helpers import free_port, wait_for
from tests.signing.common import findings

pytestmark = pytest.mark.e2e
PQ = "X25519MLKEM768"


def start(tmp_path: Path, *settings: tuple[str, str]) -> tuple[Server, str, int]:
    data_dir = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data_dir), "--allow-loopback")["key"]
    pq_port = free_port()
    for key, value in (("server.pq_port", str(pq_port)), *settings):
        cli("config", "set", "--data-dir", str(data_dir), key, value)
    return Server(data_dir).start(), admin, pq_port


def store_scan(data_dir: Path, count: int) -> str:
    """A finished scan with findings, written as a CLI process writes (the server reads it at once)."""
    conn = connect(data_dir / "appliance.db")
    try:
        tenant = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()[0]
        scan_id, now = clock.new_id(), clock.now()
        apply_sync(conn, [lifecycle.submit({"id": scan_id, "tenant_id": tenant, "scan_type": "nmap",
                                            "target": "127.0.0.1", "target_type": "ip", "status": "completed",
                                            "priority": "normal", "timeout": 60, "created_at": now,
                                            "queued_at": now, "lease_id": "t"}),
                          batches.findings_op(scan_id, "t", "nmap", findings(count), 0),
                          lifecycle.recount(scan_id, "t")])
    finally:
        conn.close()
    return scan_id


def test_the_pq_listener_serves_the_same_app_with_ml_kem(tmp_path):
    server, admin, pq_port = start(tmp_path)
    cafile = server.data_dir / "tls-cert.pem"
    try:
        health = pqclient.request(pq_port, PQ, cafile, "/health")
        assert (health.group, health.status, json.loads(health.body)) == (PQ, 200, {"status": "ok"})
        # a client whose first key share is classical but which supports ML-KEM is asked for it
        assert pqclient.request(pq_port, f"X25519:{PQ}", cafile, "/health").group == PQ
        # a classical client still gets in when tls.pq_only is off
        classical = pqclient.request(pq_port, "X25519", cafile, "/health")
        assert (classical.group, classical.status) == ("x25519", 200)

        # one app: a key's rate limit counts requests on both listeners, and the call log holds both
        # (an hourly window: a minute boundary in the middle of the test would reset a minute one)
        key = cli_json("keys", "create", "--data-dir", str(server.data_dir), "--name", "pq", "--rate-hour", "4")
        with server.client(key["key"]) as main:
            assert main.get("/api/v1/engines").status_code == 200
            assert pqclient.request(pq_port, PQ, cafile, "/api/v1/engines", key["key"]).status == 200
            assert main.get("/api/v1/engines").status_code == 200
            assert pqclient.request(pq_port, PQ, cafile, "/api/v1/engines", key["key"]).status == 200
            over = pqclient.request(pq_port, PQ, cafile, "/api/v1/engines", key["key"])
            assert over.status == 429 and json.loads(over.body)["code"] == "RATE_LIMIT_EXCEEDED"
            assert main.get("/api/v1/engines").status_code == 429
        with server.client(admin) as main:
            def logged():
                calls = main.get(f"/api/v1/usage/calls?apiKeyId={key['id']}").json()["data"]
                return calls if len(calls) == 6 else None
            assert wait_for(logged, 10, what="6 calls of the pq key in the call log")

        # a signed report of 3,000 findings (about 1.7 MB) streamed through the TLS adapter
        scan_id = store_scan(server.data_dir, 3000)
        answer = pqclient.request(pq_port, PQ, cafile, f"/api/v1/scans/{scan_id}/report", admin)
        assert answer.status == 200 and answer.group == PQ and len(answer.body) > 1_000_000
        keys = tmp_path / "keys.pem"
        keys.write_text(cli("signing-key", "show", "--pem", "--data-dir", str(server.data_dir)))
        assert verify_report(answer.body, pinned_keys([keys])).ok

        # TLS 1.3 only; headers capped as on the main listener
        with pytest.raises(SSL.Error):
            context = SSL.Context(SSL.TLS_CLIENT_METHOD)
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
            conn = SSL.Connection(context, socket.create_connection(("127.0.0.1", pq_port)))
            conn.set_connect_state()
            conn.do_handshake()
        huge = pqclient.request(pq_port, PQ, cafile, "/health", extra={"X-Big": "a" * 20_000})
        assert huge.status == 431 and json.loads(huge.body)["code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        with server.client() as main:  # the main listener is unchanged
            assert main.get("/health").status_code == 200
        assert server.stop(signal.SIGTERM) == 0, server.log.read_text()
        assert "post-quantum TLS listener" in server.log.read_text()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def test_pq_only_refuses_classical_key_exchange(tmp_path):
    server, _, pq_port = start(tmp_path, ("tls.pq_only", "true"))
    cafile = server.data_dir / "tls-cert.pem"
    try:
        assert pqclient.request(pq_port, PQ, cafile, "/health").status == 200
        for groups in ("X25519", "secp256r1:X25519"):
            with pytest.raises(SSL.Error):
                pqclient.connect(pq_port, groups, cafile)
        with server.client() as main:  # pq_only is about the pq listener only
            assert main.get("/health").status_code == 200
    finally:
        server.stop(signal.SIGTERM)


def test_the_pq_listener_keeps_the_handshake_header_and_connection_limits(tmp_path):
    server, _, pq_port = start(tmp_path, ("server.handshake_timeout_seconds", "1.0"),
                               ("server.header_timeout_seconds", "1.0"), ("server.max_connections", "1"))
    cafile = server.data_dir / "tls-cert.pem"
    try:
        # no ClientHello: dropped after the handshake deadline
        with socket.create_connection(("127.0.0.1", pq_port), timeout=10) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""
            assert time.monotonic() - started < 5
        # a handshake, then half a request: closed after the header deadline
        conn = pqclient.connect(pq_port, PQ, cafile)
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert pqclient.read_all(conn) == b""
        assert time.monotonic() - started < 5
        # one connection cap for both listeners: a kept-alive one on the main listener fills it
        context = ssl.create_default_context(cafile=str(cafile))
        with httpx.Client(base_url=server.base, verify=context) as main:
            assert main.get("/health").status_code == 200  # stays open (keep-alive)
            # The server's count of open connections is up to 50 ms old: the main connection and this
            # one are in it once each has been open a little longer than that.
            time.sleep(0.1)
            busy = pqclient.request(pq_port, PQ, cafile, "/health", settle=0.1)
            assert busy.status == 503 and json.loads(busy.body)["code"] == "SERVICE_UNAVAILABLE"
    finally:
        server.stop(signal.SIGTERM)
