"""Where a scan may go: target authorization (at submit and again at claim, with the DNS of that
moment) and routing to a zone. Builds the :class:`~appliance.scanning.job.Job` a worker runs.

A scanner that connects to its target gets only addresses vetted here: a hostname that resolves
to nothing cannot be vetted, and is never handed to a scanner to look up itself (that lookup could
answer with a denied address: DNS rebinding around the denylist).
"""
from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from appliance.scanning.job import Job
from appliance.targets import Address, Policy, PolicyEntry, Target, parse_policy_entry, parse_target
from engines.base import Scanner


@dataclass(frozen=True)
class Zone:
    """A network segment some remote worker is placed in: a CIDR or a domain suffix."""

    entry: PolicyEntry

    @property
    def name(self) -> str:
        return self.entry.text

    def specificity(self, target: Target, addresses: tuple[Address, ...]) -> int:
        """How closely the zone fits the target (higher wins); -1 when it does not contain it."""
        entry = self.entry
        name = target.host
        if entry.suffix is not None:
            return len(entry.suffix) if name is not None and entry.matches_name(name) else -1
        assert entry.network is not None
        nets = [target.network] if target.network is not None else [ipaddress.ip_network(a) for a in addresses]
        if nets and all(n.version == entry.network.version and n.subnet_of(entry.network)  # type: ignore[arg-type]
                        for n in nets):
            return 1000 + entry.network.prefixlen
        return -1


def zones_from(entries: Iterable[str]) -> list[Zone]:
    return [Zone(parse_policy_entry(e)) for e in dict.fromkeys(entries)]


class Dispatcher:
    def __init__(self, policy: Callable[[str], Policy], engines: Mapping[str, Scanner],
                 zones: Callable[[], list[Zone]]) -> None:
        self._policy = policy
        self._engines = engines
        self._zones = zones

    def vet(self, tenant_id: str, target: Target, scan_type: str) -> tuple[str | None, tuple[Address, ...]]:
        """``(why it may not be scanned, or None; the vetted addresses)``. Blocking: resolves names."""
        connects = self._engines[scan_type].connects_to_target
        problem, addresses = self._policy(tenant_id).vet(target, resolve=connects)
        if problem is None and connects and target.network is None and not addresses:
            problem = f"{target.host} does not resolve, so its addresses cannot be vetted"
        return problem, addresses

    def route(self, target: Target, addresses: tuple[Address, ...]) -> str:
        """The most specific zone holding the target, else the default zone ``""``."""
        best, best_fit = "", -1
        for zone in self._zones():
            fit = zone.specificity(target, addresses)
            if fit > best_fit:
                best, best_fit = zone.name, fit
        return best

    def job(self, row: sqlite3.Row, addresses: Iterable[Address | str] = ()) -> Job:
        config = json.loads(row["config"])
        return Job(scan_id=row["id"], tenant_id=row["tenant_id"], scan_type=row["scan_type"], target=row["target"],
                   target_type=row["target_type"], options=json.loads(row["options"]), timeout=row["timeout"],
                   priority=row["priority"], zone=row["zone"], addresses=tuple(str(a) for a in addresses),
                   max_findings=config.get("maxFindings"))

    @staticmethod
    def target_of(row: sqlite3.Row) -> Target:
        return parse_target(row["target"], row["target_type"])
