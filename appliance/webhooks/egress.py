"""Where webhook and callback deliveries may go.

Only ``https://`` URLs. Every address a URL's host resolves to must be global unicast: loopback,
link-local (cloud metadata at 169.254.169.254 included), private, shared (100.64/10), multicast,
reserved and unspecified addresses are refused unless ``webhooks.allowed_networks`` covers them;
``webhooks.denied_networks`` is refused always. The check runs when a webhook (or a scan's
``callbackUrl``) is accepted and again at every delivery attempt after DNS; the delivery then
connects to the address it vetted (TLS SNI and ``Host`` keep the name), so DNS cannot swap in
another address between the check and the connection.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.targets import Address, Network

Resolver = Callable[[str, int], list[Address]]
MAX_URL = 2048


class EgressError(ValueError):
    """The URL may not be delivered to; the message says why."""


def resolve(host: str, port: int) -> list[Address]:
    """Every address of ``host`` (blocking); empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    """A vetted URL: connect to ``address`` and speak TLS to ``host``."""

    url: str
    host: str
    port: int
    address: Address
    path: str  # path and query, never empty

    @property
    def is_name(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return False
        except ValueError:
            return True

    @property
    def connect_url(self) -> str:
        addr = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"https://{addr}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


@dataclass(frozen=True)
class Parsed:
    url: str
    host: str
    port: int
    path: str


def parse_url(url: object) -> Parsed:
    if not isinstance(url, str) or not url:
        raise EgressError("must be a URL")
    if len(url) > MAX_URL:
        raise EgressError(f"must be at most {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise EgressError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise EgressError("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise EgressError("must not carry credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise EgressError("has no host")
    try:
        port = parts.port or 443
    except ValueError:
        raise EgressError("has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Parsed(url, host, port, path)


class EgressPolicy:
    def __init__(self, allowed: Iterable[str] = (), denied: Iterable[str] = (),
                 resolver: Resolver = resolve) -> None:
        self.allowed: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)
        self.denied: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in denied)
        self.resolver = resolver

    def check_address(self, addr: Address) -> str | None:
        """None when ``addr`` may be delivered to, else why not."""
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if any(addr.version == n.version and addr in n for n in self.denied):
            return f"{addr} is in webhooks.denied_networks"
        if any(addr.version == n.version and addr in n for n in self.allowed):
            return None
        if not addr.is_global or addr.is_multicast:
            return (f"{addr} is a loopback, link-local, private or reserved address "
                    "(allow it with webhooks.allowed_networks)")
        return None

    def vet(self, url: object) -> Destination:
        """Parse, resolve and check ``url``; raises :class:`EgressError`. Blocking (DNS)."""
        parsed = parse_url(url)
        try:
            addresses: list[Address] = [ipaddress.ip_address(parsed.host)]
        except ValueError:
            addresses = self.resolver(parsed.host, parsed.port)
            if not addresses:
                raise EgressError(f"{parsed.host} does not resolve") from None
        for addr in addresses:
            problem = self.check_address(addr)
            if problem:
                raise EgressError(problem if str(addr) == parsed.host else f"{parsed.host} resolves to {problem}")
        return Destination(parsed.url, parsed.host, parsed.port, addresses[0], parsed.path)
