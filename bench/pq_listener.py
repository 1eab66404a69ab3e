"""Throughput of the post-quantum listener (server.pq_port) against the main one, same server process.

Starts ``cix-appliance serve`` on a fresh data dir with both listeners, stores a finished scan with
findings, then measures with one client implementation for both (pyOpenSSL, offering
X25519MLKEM768 and X25519: the main listener's OpenSSL 3.0 settles on X25519, the PQ listener on
X25519MLKEM768):

- handshakes: new TLS connections per second (one ``GET /health`` each);
- requests: ``GET /health`` per second on one kept-alive connection;
- bulk: MB/s downloading the signed report of the scan.

No goal: it prints the ratios (PQ / main).

    .venv/bin/python bench/pq_listener.py [--seconds 3] [--findings 20000]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from OpenSSL import SSL

from tests.e2e import pqclient
from tests.e2e.server import Server, cli, cli_json
from tests.e2e.test_pq_listener import store_scan
from tests.helpers import free_port

GROUPS = "X25519MLKEM768:X25519"


def rate(seconds: float, step: Callable[[], int]) -> tuple[float, float]:
    """(operations per second, units per second) of ``step`` (which returns units) for ``seconds``."""
    count, units, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        units += step()
        count += 1
    elapsed = time.perf_counter() - started
    return count / elapsed, units / elapsed


def read_response(conn: SSL.Connection) -> bytes:
    """One response with a Content-Length off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)
    return body


def measure(port: int, cafile: Path, key: str, report_path: str, seconds: float) -> dict[str, float]:
    group = pqclient.request(port, GROUPS, cafile, "/health").group
    handshakes, _ = rate(seconds, lambda: pqclient.request(port, GROUPS, cafile, "/health").status)
    conn = pqclient.connect(port, GROUPS, cafile)

    def one() -> int:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        return len(read_response(conn))

    requests, _ = rate(seconds, one)
    conn.close()
    _, bulk = rate(seconds, lambda: len(pqclient.request(port, GROUPS, cafile, report_path, key).body))
    print(f"  port {port} ({group}): {handshakes:.0f} handshakes/s, {requests:.0f} requests/s, "
          f"{bulk / 1e6:.1f} MB/s report download")
    return {"handshakes": handshakes, "requests": requests, "bulk": bulk}


def main(seconds: float, findings: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        admin = cli_json("init", "--data-dir", str(data_dir))["key"]
        pq_port = free_port()
        cli("config", "set", "--data-dir", str(data_dir), "server.pq_port", str(pq_port))
        cli("config", "set", "--data-dir", str(data_dir), "queue.workers", "0")
        server = Server(data_dir).start()
        try:
            scan_id = store_scan(data_dir, findings)
            report_path = f"/api/v1/scans/{scan_id}/report"
            cafile = data_dir / "tls-cert.pem"
            size = len(pqclient.request(pq_port, GROUPS, cafile, report_path, admin).body)
            print(f"one serve process, {seconds:g} s per measure, report of {findings} findings = {size / 1e6:.1f} MB")
            main_listener = measure(server.port, cafile, admin, report_path, seconds)
            pq_listener = measure(pq_port, cafile, admin, report_path, seconds)
        finally:
            server.stop(signal.SIGTERM)
    print("PQ / main: " + json.dumps({k: round(pq_listener[k] / main_listener[k], 2) for k in main_listener}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--findings", type=int, default=20_000)
    args = parser.parse_args()
    main(args.seconds, args.findings)
