"""Scan targets: parsing per ``targetType`` and authorization against allow/deny lists.

Every tenant has an allowlist (CIDRs, domain suffixes, and for trivy's artifacts ``path:`` directories
and ``registry:`` image registries); an empty one allows nothing. The config's global denylist always
wins. A hostname is checked by name on submit and again by the worker against the addresses it
resolves to, so that DNS cannot smuggle a denied address in. Artifact kinds live in
:mod:`appliance.target_artifacts`.

IPv6 addresses that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``)
reach that IPv4 host, so every check sees them as the IPv4 address: otherwise an allowlist covering
``::/0`` would let ``::ffff:169.254.169.254`` past an IPv4 denylist.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlsplit

from appliance import target_artifacts

# The network kinds; the API accepts the union of the engines' ``target_types`` (engines.registry).
TARGET_TYPES = ("host", "url", "domain", "ip", "network")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Largest network one scan may cover: a /16 is 65k addresses, already hours of nmap.
_MIN_PREFIX = {4: 16, 6: 112}

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007 - a runtime alias
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]  # noqa: UP007
# IPv6 prefixes whose last 32 bits are an IPv4 address the packets end up at.
IPV4_EMBEDDING = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))
_ALL_V4 = ipaddress.IPv4Network("0.0.0.0/0")


def as_ipv4(net: Network) -> Network:
    """An IPv6 network inside an IPv4-embedding prefix as the IPv4 network it reaches; else ``net``."""
    if isinstance(net, ipaddress.IPv6Network):
        for prefix in IPV4_EMBEDDING:
            if net.subnet_of(prefix):
                return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def embedded_ipv4(net: Network) -> list[Network]:
    """The IPv4 space an IPv6 network reaches through the embedding prefixes it overlaps: a deny
    entry such as ``::/0`` denies the IPv4 hosts its mapped addresses would reach, too."""
    if not isinstance(net, ipaddress.IPv6Network):
        return []
    out: list[Network] = []
    for prefix in IPV4_EMBEDDING:
        if net.subnet_of(prefix):
            out.append(as_ipv4(net))
        elif prefix.subnet_of(net):
            out.append(_ALL_V4)
    return out


class TargetError(ValueError):
    """The target does not parse as its ``targetType``."""


@dataclass(frozen=True)
class Target:
    value: str  # normalized text handed to the engine
    type: str
    host: str | None = None  # hostname part, when the target names one
    network: Network | None = None  # address or network part, when literal
    path: str | None = None  # a file or directory on this machine (trivy filesystem, repository, tarball)
    registry: str | None = None  # the registry an image reference pulls from


def is_hostname(text: str) -> bool:
    name = text.rstrip(".").lower()
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _network(text: str) -> Network:
    net = ipaddress.ip_network(text, strict=False)
    if net.prefixlen < _MIN_PREFIX[net.version]:
        raise TargetError(f"network {text} is larger than /{_MIN_PREFIX[net.version]}")
    return net


def parse_target(text: object, target_type: str | None) -> Target:
    """Parse ``text`` as ``target_type`` (inferred when None); raise :class:`TargetError`."""
    if not isinstance(text, str) or not text.strip():
        raise TargetError("target must be a non-empty string")
    if len(text) > 2048:
        raise TargetError("target is longer than 2048 characters")
    if text != text.strip() or any(c.isspace() or ord(c) < 32 for c in text):
        raise TargetError("target must not contain spaces or control characters")
    if text.startswith("-"):
        raise TargetError("target must not start with '-'")
    kind = target_type or _infer(text)
    if kind in target_artifacts.ARTIFACT_TYPES:
        return target_artifacts.parse_artifact(text, kind)
    if kind == "url":
        return _parse_url(text)
    if kind in ("ip", "host", "network"):
        try:
            if kind == "ip":
                return Target(str(ipaddress.ip_address(text)), "ip",
                              network=ipaddress.ip_network(text))
            if kind == "network" or "/" in text:
                net = _network(text)
                return Target(str(net), kind, network=net)
            addr = ipaddress.ip_address(text)
            return Target(str(addr), kind, network=ipaddress.ip_network(addr))
        except ValueError as exc:
            if kind != "host" or "/" in text:
                raise TargetError(f"{text!r} is not a valid {kind}: {exc}") from None
    if kind in ("domain", "host"):
        if not is_hostname(text):
            raise TargetError(f"{text!r} is not a valid hostname")
        name = text.rstrip(".").lower()
        return Target(name, kind, host=name)
    raise TargetError(f"unknown targetType {kind!r}")


def _infer(text: str) -> str:
    if "://" in text:
        return "url"
    try:
        ipaddress.ip_address(text)
        return "ip"
    except ValueError:
        pass
    return "network" if "/" in text else "host"


def _parse_url(text: str) -> Target:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise TargetError("url must start with http:// or https://")
    if parts.username or parts.password:
        raise TargetError("url must not carry credentials")
    try:
        _ = parts.port  # urlsplit parses the port lazily: reading it is the check
    except ValueError:
        raise TargetError("url has an invalid port") from None
    host = (parts.hostname or "").lower()
    try:
        addr = ipaddress.ip_address(host)
        return Target(text, "url", network=ipaddress.ip_network(addr))
    except ValueError:
        if not is_hostname(host):
            raise TargetError("url has no valid host") from None
        return Target(text, "url", host=host)


# -- policy ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyEntry:
    text: str
    network: Network | None = None
    suffix: str | None = None  # a domain; matches itself and every subdomain
    path: str | None = None  # ``path:/dir``: the directory and everything below it
    registry: str | None = None  # ``registry:host[:port]``: images from that registry

    def matches_name(self, name: str) -> bool:
        return self.suffix is not None and (name == self.suffix or name.endswith("." + self.suffix))


def parse_policy_entry(text: str) -> PolicyEntry:
    """An allow/deny entry: an IP, a CIDR, a domain suffix (``example.com``, ``*.example.com``), a
    directory (``path:/srv/builds``) or an image registry (``registry:registry.example.com``)."""
    raw = text.strip()
    artifact = target_artifacts.parse_entry(raw)
    if artifact is not None:
        return artifact
    try:
        net = as_ipv4(ipaddress.ip_network(raw, strict=False))
        return PolicyEntry(str(net), network=net)
    except ValueError:
        pass
    name = raw.removeprefix("*.").removeprefix(".").rstrip(".").lower()
    if not is_hostname(name):
        raise ValueError(f"{text!r} is neither an IP, a CIDR, a domain suffix, path:/dir nor registry:host")
    return PolicyEntry(name, suffix=name)


@dataclass(frozen=True)
class Policy:
    allow: tuple[PolicyEntry, ...]
    deny: tuple[PolicyEntry, ...]

    @classmethod
    def build(cls, allow: Iterable[str], deny: Iterable[str]) -> Policy:
        denied = [parse_policy_entry(d) for d in deny]
        denied += [PolicyEntry(str(v4), network=v4) for e in denied if e.network is not None
                   for v4 in embedded_ipv4(e.network)]
        return cls(tuple(map(parse_policy_entry, allow)), tuple(denied))

    def _net_denied(self, net: Network) -> bool:
        net = as_ipv4(net)
        return any(e.network is not None and networks_overlap(e.network, net) for e in self.deny)

    def _net_allowed(self, net: Network) -> bool:
        net = as_ipv4(net)
        return any(e.network is not None and network_within(net, e.network) for e in self.allow)

    def check_addresses(self, addresses: Iterable[Address], name_allowed: bool) -> str | None:
        """Resolved addresses: none denied, and all allowed unless the name itself was."""
        for addr in addresses:
            net = ipaddress.ip_network(addr)
            if self._net_denied(net):
                return f"{_shown(net)} is on the appliance's denylist"
            if not name_allowed and not self._net_allowed(net):
                return f"{_shown(net)} is not on this tenant's allowlist"
        return None

    def name_allowed(self, name: str) -> bool:
        return any(e.matches_name(name) for e in self.allow)

    def check(self, target: Target, resolve: bool = True) -> str | None:
        """None when ``target`` may be scanned, else the reason it may not."""
        return self.vet(target, resolve)[0]

    def vet(self, target: Target, resolve: bool = True) -> tuple[str | None, tuple[Address, ...]]:
        """``(reason it may not be scanned or None, the addresses checked)``. For a hostname the
        addresses are what it resolved to now: the scanner is given these, not a later lookup.
        ``resolve=False`` for engines that never connect to the target (OSINT on a domain)."""
        if target.type in target_artifacts.ARTIFACT_TYPES:
            return target_artifacts.vet_artifact(target, self.allow, self.deny), ()
        if target.network is not None:
            if self._net_denied(target.network):
                return f"{_shown(target.network)} is on the appliance's denylist", ()
            if not self._net_allowed(target.network):
                return f"{_shown(target.network)} is not on this tenant's allowlist", ()
            return None, ()
        name = target.host or ""
        if any(e.matches_name(name) for e in self.deny):
            return f"{name} is on the appliance's denylist", ()
        allowed = self.name_allowed(name)
        if not resolve:
            return (None if allowed else f"{name} is not on this tenant's allowlist"), ()
        addresses = tuple(resolve_host(name))
        if not addresses:
            return (None if allowed else f"{name} does not resolve to an allowed address"), ()
        return self.check_addresses(addresses, allowed), addresses


def _shown(net: Network) -> str:
    text = str(net.network_address) if net.num_addresses == 1 else str(net)
    v4 = as_ipv4(net)
    if v4 is net:
        return text
    return f"{text} (IPv4 {v4.network_address if v4.num_addresses == 1 else v4})"


def networks_overlap(a: Network, b: Network) -> bool:
    if isinstance(a, ipaddress.IPv4Network) and isinstance(b, ipaddress.IPv4Network):
        return a.overlaps(b)
    if isinstance(a, ipaddress.IPv6Network) and isinstance(b, ipaddress.IPv6Network):
        return a.overlaps(b)
    return False


def network_within(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def resolve_host(name: str) -> list[Address]:
    """Every address ``name`` resolves to (empty when it does not); blocking."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
