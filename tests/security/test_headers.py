"""Issue 10, the HTTP layer of a real ``serve`` process over TLS: header limits (item 2), read and
handshake deadlines and the connection cap (item 3). Every send loop here is bounded in bytes and time
and talks only to the server the test started on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, cli, cli_json

pytestmark = pytest.mark.e2e
SEND_CAP = 4 << 20  # bytes a test sends at most before it concludes the server never pushed back


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "data"
    cli_json("init", "--data-dir", str(data), "--allow-loopback")
    for key, value in (("server.header_timeout_seconds", "1.0"), ("server.handshake_timeout_seconds", "1.0"),
                       ("server.max_connections", "3")):
        cli("config", "set", key, value, "--data-dir", str(data))
    srv = Server(data).start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop(signal.SIGKILL)


@contextlib.contextmanager
def tls(server: Server) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with server.tls_context().wrap_socket(raw, server_hostname="localhost") as conn:
        yield conn


def rss_kib(server: Server) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood(conn: ssl.SSLSocket, first: bytes, chunk: bytes) -> tuple[int, bytes]:
    """Send ``first`` then ``chunk`` until the server answers or closes, at most SEND_CAP bytes.
    Returns (bytes sent, what the server said)."""
    sent = 0
    conn.settimeout(0.05)
    try:
        conn.sendall(first)
        while sent < SEND_CAP:
            conn.sendall(chunk)
            sent += len(chunk)
            try:
                answer = conn.recv(65536)
                return sent, answer  # an answer, or b"" for a close
            except (TimeoutError, ssl.SSLWantReadError):
                continue
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    conn.settimeout(5)
    try:
        return sent, conn.recv(65536)
    except (OSError, ssl.SSLError):
        return sent, b""


def read_response(conn: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one response, the body read to its content-length."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a full response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def closed_within(conn: socket.socket, seconds: float) -> float:
    """Seconds until the peer closed ``conn`` (recv returned b"" or reset); fails past ``seconds``."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {seconds} s") from None
    return time.monotonic() - started


def test_endless_header_lines_get_431_and_memory_stays_bounded(server):
    before = rss_kib(server)
    with tls(server) as conn:  # as reported: one connection, endless "X-Pad: aaa…" lines
        sent, answer = flood(conn, b"GET /health HTTP/1.1\r\nHost: localhost\r\n", b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert sent < 256 * 1024, f"the server read {sent} bytes of headers without answering"
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"connection: close" in answer.lower()  # granian's own answer, from before the app: no body
    with tls(server) as conn:  # one endless header line: httptools buffers it before any callback
        sent, answer = flood(conn, b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: ", b"a" * 8192)
    assert sent < 256 * 1024 and answer.startswith(b"HTTP/1.1 431"), (sent, answer[:100])
    with tls(server) as conn:  # many small headers
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                     + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n")
        head, body = read_response(conn)
        assert head.startswith(b"HTTP/1.1 431") and body == b""
        assert closed_within(conn, 5) < 5
    assert rss_kib(server) - before < 32 * 1024  # KiB
    with server.client() as c:  # still serving, and ordinary requests are untouched
        ordinary = c.get("/health", headers={f"X-H{i}": "v" * 100 for i in range(50)})
        assert ordinary.json() == {"status": "ok"}
        assert ordinary.headers.get_list("server") == ["cix-appliance"]  # not the HTTP server's name
    assert server.stop() == 0


def test_idle_and_half_sent_requests_are_closed_within_the_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # no TLS handshake at all
        assert closed_within(raw, 12) < 12  # granian's handshake deadline: 10 s, whatever the setting
    with tls(server) as conn:  # handshake done, then silence
        assert closed_within(conn, 5) < 5
    with tls(server) as conn:  # as reported: half a request
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        assert closed_within(conn, 5) < 5
    with tls(server) as conn:  # trickled headers do not renew the deadline
        conn.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError, ssl.SSLError)):
            while time.monotonic() - started < 5:
                conn.sendall(b"X")
                conn.settimeout(0.3)
                try:
                    if conn.recv(1) == b"":
                        raise ConnectionResetError("closed")
                except TimeoutError:
                    pass
        assert time.monotonic() - started < 4
    with tls(server) as conn:  # a body that stalls
        conn.sendall(b"POST /api/v1/scans HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        conn.settimeout(5)
        try:
            answer = conn.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            answer = b""
        assert b" 200 " not in answer
    assert server.stop() == 0


def test_connections_beyond_the_cap_get_503_in_the_envelope(server):
    with tls(server), tls(server), tls(server), tls(server) as fourth:  # server.max_connections = 3
        time.sleep(0.1)  # the server's count of open connections is up to 50 ms old
        fourth.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, body = read_response(fourth)
    assert head.startswith(b"HTTP/1.1 503"), head
    assert json.loads(body)["code"] == "SERVICE_UNAVAILABLE" and b"retry-after: 1" in head.lower()
    assert b"server: cix-appliance" in head.lower()
    time.sleep(0.1)
    with server.client() as c:
        assert c.get("/health").status_code == 200
    assert server.stop() == 0


def test_the_unit_allows_the_files_the_connection_cap_needs():
    from appliance.config import KEYS

    unit = (Path(__file__).parents[2] / "systemd" / "cix-appliance.service").read_text()
    nofile = int(next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("LimitNOFILE=")))
    # connections are dropped at once past twice the cap; databases, queue and scanners need the rest
    assert 2 * KEYS["server.max_connections"].default + 256 <= nofile <= 16384


def test_past_twice_the_cap_new_connections_wait_until_one_closes(tmp_path):
    data = tmp_path / "data"
    cli_json("init", "--data-dir", str(data), "--allow-loopback")
    cli("config", "set", "server.max_connections", "3", "--data-dir", str(data))  # header deadline: 10 s
    server = Server(data).start()
    held = [server.tls_context().wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                                             server_hostname="localhost") for _ in range(6)]  # twice max_connections
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=0.5)
        with pytest.raises((TimeoutError, ssl.SSLError)), raw:  # in the kernel's queue: no handshake
            server.tls_context().wrap_socket(raw, server_hostname="localhost")
        held.pop().close()
        time.sleep(0.2)
        with tls(server) as conn:  # a slot is free again
            assert conn.version() == "TLSv1.3"
    finally:
        for conn in held:
            conn.close()
        assert server.stop() == 0
