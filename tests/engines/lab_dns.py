"""A tiny authoritative DNS server for the test zone ``lab.test`` (dnspython, UDP), and the loopback
network namespace the OSINT tests run in.

Zone: ``www, mail, admin, dev, api, vpn, ns1 .lab.test`` → 127.0.0.x; every other name under
``lab.test`` is NXDOMAIN; names outside the zone are REFUSED (so a tool asking for a public name gets
an answer at once, and nothing is forwarded anywhere).
"""
from __future__ import annotations

import fcntl
import socket
import struct
import threading
from collections.abc import Callable
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

ZONE = "lab.test"
HOSTS = {"www": "127.0.0.1", "mail": "127.0.0.2", "admin": "127.0.0.3", "dev": "127.0.0.4",
         "api": "127.0.0.5", "vpn": "127.0.0.6", "ns1": "127.0.0.7"}


def answer(wire: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    if name != ZONE and not name.endswith("." + ZONE):
        response.set_rcode(dns.rcode.REFUSED)
    elif name == ZONE:
        pass  # the apex exists, with no address
    elif name[: -len(ZONE) - 1] in HOSTS:
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A",
                                                       HOSTS[name[: -len(ZONE) - 1]]))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


class LabDns:
    """Serves the zone on ``host:port`` from a thread; ``queries`` counts what it was asked."""

    def __init__(self, host: str = "127.0.0.1", port: int = 53,
                 delay: Callable[[], None] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.queries = 0
        self._delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            if self._delay is not None:
                self._delay()
            reply = answer(wire)
            if reply is not None:
                self.sock.sendto(reply, peer)


def loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: a fresh network namespace has lo down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, struct.pack("16sH", b"lo", 0))[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def only_loopback() -> bool:
    """True when this process sees no network interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]
