"""Tenants and their target allowlists."""
from __future__ import annotations

import re
import sqlite3

from appliance import clock
from appliance.audit import audit_op
from appliance.store.ops import BUMP_EPOCH, Op
from appliance.targets import Policy, networks_overlap, parse_policy_entry

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOOPBACK = ("127.0.0.0/8", "::1/128")
# Widest allowlist entry taken without --force: a /8 is 16 million addresses already.
WIDEST_ALLOW = {4: 8, 6: 32}


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError("tenant names are 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    return name


def create_ops(name: str, actor: str) -> tuple[str, list[Op]]:
    tenant_id = clock.new_id()
    return tenant_id, [
        Op([("INSERT INTO tenants (id, name, created_at) VALUES (?,?,?)",
             (tenant_id, check_name(name), clock.now())), BUMP_EPOCH]),
        audit_op(tenant_id, actor, "tenant.created", "tenant", tenant_id, {"name": name}),
    ]


def policy_ops(tenant_id: str, kind: str, entries: list[str], actor: str, remove: bool = False
               ) -> list[Op]:
    """Add entries to (or ``remove`` them from) a tenant's ``allow`` or ``deny`` list."""
    normalized = [parse_policy_entry(e).text for e in entries]
    sql = ("DELETE FROM target_policy WHERE tenant_id = ? AND kind = ? AND entry = ?" if remove
           else "INSERT OR IGNORE INTO target_policy (tenant_id, kind, entry) VALUES (?, ?, ?)")
    action = f"targets.{kind}.{'removed' if remove else 'added'}"
    return [Op([(sql, ()), BUMP_EPOCH], many={0: [(tenant_id, kind, e) for e in normalized]}),
            audit_op(tenant_id, actor, action, "tenant", tenant_id, {"entries": normalized})]


def policy_entries(conn: sqlite3.Connection, tenant_id: str) -> dict[str, list[str]]:
    """``{"allow": [...], "deny": [...]}`` for a tenant."""
    out: dict[str, list[str]] = {"allow": [], "deny": []}
    for kind, entry in conn.execute(
            "SELECT kind, entry FROM target_policy WHERE tenant_id = ? ORDER BY kind, entry", (tenant_id,)):
        out[kind].append(entry)
    return out


def too_wide(entry: str) -> str | None:
    """Why ``entry`` is too wide to allow without confirmation, or None."""
    net = parse_policy_entry(entry).network
    if net is not None and net.prefixlen < WIDEST_ALLOW[net.version]:
        return f"{net} is wider than a /{WIDEST_ALLOW[net.version]}"
    return None


def denylist_warnings(entries: list[str], denylist: list[str]) -> list[str]:
    """What the global denylist takes back from allowlist ``entries``: the operator should know that
    allowing 169.254.0.0/16 allows nothing."""
    deny = Policy.build([], denylist)
    out = []
    for text in entries:
        entry = parse_policy_entry(text)
        hits = [d.text for d in deny.deny if (
            (entry.network is not None and d.network is not None and networks_overlap(d.network, entry.network))
            or (entry.suffix is not None and d.suffix is not None
                and (d.matches_name(entry.suffix) or entry.matches_name(d.suffix))))]
        if hits:
            out.append(f"{entry.text} overlaps the global denylist (targets.denylist: {', '.join(hits)}); "
                       "those addresses stay denied")
    return out
