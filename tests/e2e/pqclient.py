"""A minimal HTTP/1.1 client over pyOpenSSL with chosen key exchange groups, reporting the group the
handshake settled on: what a post-quantum client looks like to the server.pq_port listener."""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from appliance.pqtls import client_context


@dataclass
class Answer:
    group: str | None
    status: int
    headers: dict[str, str]
    body: bytes


def connect(port: int, groups: str, cafile: Path, timeout: float = 15) -> SSL.Connection:
    """A TLS 1.3 connection offering only ``groups``; SSL.Error if the server refuses them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    # pyOpenSSL needs a blocking socket; a kernel receive timeout still keeps a test from hanging.
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(timeout), 0))
    conn = SSL.Connection(client_context(groups, cafile), sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    conn.do_handshake()
    return conn


def read_all(conn: SSL.Connection) -> bytes:
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            break
        if not chunk:
            break
        data += chunk
    return data


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return int(lines[0].split()[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    at = 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        at = end + 2 + size + 2


def request(port: int, groups: str, cafile: Path, path: str, key: str | None = None,
            extra: dict[str, str] | None = None, settle: float = 0) -> Answer:
    """One ``GET`` on its own connection (``Connection: close``), sent ``settle`` seconds after the handshake."""
    conn = connect(port, groups, cafile)
    try:
        time.sleep(settle)
        headers = {"Host": "localhost", "Connection": "close", **({"X-API-Key": key} if key else {}), **(extra or {})}
        conn.sendall((f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                      + "\r\n").encode())
        status, response_headers, body = parse(read_all(conn))
        return Answer(conn.get_group_name(), status, response_headers, body)
    finally:
        conn.close()
