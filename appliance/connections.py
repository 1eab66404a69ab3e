"""How many TCP connections the listeners hold, from the kernel: the connection cap's gauge.

granian accepts connections in its Rust threads and tells Python nothing about them, so the count
comes from the kernel's socket table, asked over netlink (``sock_diag``, what ``ss`` uses): one dump
of the TCP sockets in the states that hold a server-side descriptor, refreshed at most every 50 ms
by a thread of its own while requests come (see :class:`ConnectionGauge`). ``/proc/net/tcp`` would
do, but takes milliseconds per read on some kernels.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
# TCP_ESTABLISHED, TCP_SYN_RECV and TCP_CLOSE_WAIT: connections the server still holds open.
_STATES = (1 << 1) | (1 << 3) | (1 << 8)
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_SPORT_AT = _HEADER.size + 4  # inet_diag_msg: family, state, timer, retrans, then the socket id's sport


BOTH = (socket.AF_INET, socket.AF_INET6)


def families(hosts: Iterable[str]) -> tuple[int, ...]:
    """The address families connections to listeners on ``hosts`` can have: IPv4 alone when every
    host is an IPv4 address (a dump walks the kernel's whole TCP table, whatever it looks for: one
    family is half the cost), else both (``::`` also takes IPv4 connections, as IPv6 sockets)."""
    try:
        if all(ipaddress.ip_address(host).version == 4 for host in hosts):
            return (socket.AF_INET,)
    except ValueError:  # a name: it may resolve to either
        pass
    return BOTH


def count(ports: frozenset[int], address_families: tuple[int, ...] = BOTH) -> int:
    """TCP connections whose local port is one of ``ports`` (in ``address_families``)."""
    total = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        for sequence, family in enumerate(address_families, 1):
            request = struct.pack("=BBBBI48x", family, socket.IPPROTO_TCP, 0, 0, _STATES)  # inet_diag_req_v2
            sock.sendall(_HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                      _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0) + request)
            total += _read_dump(sock, ports)
    return total


def _read_dump(sock: socket.socket, ports: frozenset[int]) -> int:
    found = 0
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind = _HEADER.unpack_from(data, offset)[:2]
            if kind == _NLMSG_DONE:
                return found
            if kind == _NLMSG_ERROR or length < _HEADER.size:
                raise OSError("the kernel refused the socket table dump (sock_diag)")
            if struct.unpack_from("!H", data, offset + _SPORT_AT)[0] in ports:
                found += 1
            offset += (length + 3) & ~3


class ConnectionGauge:
    """The number of open connections on ``ports``, at most about ``max_age`` seconds old.

    A dump costs milliseconds on a busy machine, almost all of it in the kernel with the GIL
    released, so while requests keep coming a thread of its own refreshes the count every
    ``max_age`` seconds and requests read the last value. The first request after a quiet second
    counts at once (a quiet server has time for it), and so does a request when the last count is at
    or above the cap: neither a refusal nor an admission at the cap rests on a count older than
    ``recheck`` seconds (a connection opened since the thread's last count would be missing from it).

    When the kernel cannot be asked (no netlink in a sandbox), the gauge reads 0 and says so once:
    the cap then stops applying, and the descriptor limit (``LimitNOFILE``) is what remains."""

    def __init__(self, ports: Iterable[int], cap: int, max_age: float = 0.05, recheck: float = 0.005,
                 linger: float = 1.0, address_families: tuple[int, ...] = BOTH) -> None:
        self.ports = frozenset(ports)
        self.address_families = address_families
        self.cap = cap
        self.max_age = max_age
        self.recheck = recheck
        self.linger = linger  # how long the thread keeps counting after the last request
        self._value = 0
        self._at = float("-inf")
        self._asked = float("-inf")
        self._broken = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def over(self) -> bool:
        """Whether more than ``cap`` connections are open."""
        now = self._asked = time.monotonic()
        if now - self._at >= self.linger or (self._value >= self.cap and now - self._at >= self.recheck):
            self._refresh()
        if not self._wake.is_set():
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._refresher, name="connection-gauge", daemon=True)
                self._thread.start()
        return self._value > self.cap

    def value(self) -> int:
        """The count, taken now unless it is younger than ``recheck`` seconds."""
        if time.monotonic() - self._at >= self.recheck:
            self._refresh()
        return self._value

    def _refresh(self) -> None:
        if self._broken:
            return
        try:
            value = count(self.ports, self.address_families)
        except OSError as exc:
            self._broken = True
            value = 0
            log.warning("cannot count open connections (%s): server.max_connections is not enforced", exc)
        self._value, self._at = value, time.monotonic()

    def _refresher(self) -> None:
        while not self._broken:
            self._wake.wait()
            while time.monotonic() - self._asked < self.linger and not self._broken:
                self._refresh()
                time.sleep(self.max_age)
            self._wake.clear()
