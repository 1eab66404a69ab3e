"""Audit trail: who changed what, as a hash chain that an edit or a deletion breaks.

Each row carries ``prev_hash`` (the hash of the row before it; 64 zeros for the first) and ``hash`` =
SHA-256 of the row's canonical encoding (:func:`appliance.store.functions.canonical`: sorted-key
compact JSON of id, prevHash, tenantId, actor, action, resourceType, resourceId, details text,
createdAt). The hash is computed by the SQL function ``cix_audit_hash`` inside the inserting
transaction, so the server's writer and CLI processes append to one chain. ``meta.audit_head``
(``<id>:<hash>`` of the last row, updated in the same transaction) makes a cut-off tail visible.
Audit rows are never pruned.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from appliance import clock
from appliance.store.functions import GENESIS, audit_hash
from appliance.store.ops import Op

_INSERT = (
    "INSERT INTO audit_events (id, tenant_id, actor, action, resource_type, resource_id, details, created_at,"
    " prev_hash, hash)"
    " SELECT h.id, ?1, ?2, ?3, ?4, ?5, ?6, ?7, h.prev, cix_audit_hash(h.prev, h.id, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " FROM (SELECT coalesce((SELECT max(id) FROM audit_events), 0) + 1 AS id,"
    f" coalesce((SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1), '{GENESIS}') AS prev) AS h")
_HEAD = ("UPDATE meta SET value = (SELECT id || ':' || hash FROM audit_events ORDER BY id DESC LIMIT 1)"
         " WHERE key = 'audit_head'", ())


def audit_op(tenant_id: str | None, actor: str, action: str, resource_type: str,
             resource_id: str | None, details: dict[str, Any]) -> Op:
    """An audit event; ``actor`` is ``key:<id>`` for API calls, ``cli:<user>`` for the CLI and
    ``system`` for the appliance itself (e.g. a failed-authentication lockout)."""
    params = (tenant_id, actor, action, resource_type, resource_id, json.dumps(details, sort_keys=True), clock.now())
    return Op([(_INSERT, params), _HEAD])


def to_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "tenantId": row["tenant_id"], "actor": row["actor"], "action": row["action"],
            "resourceType": row["resource_type"], "resourceId": row["resource_id"],
            "details": json.loads(row["details"]), "createdAt": clock.iso(row["created_at"]),
            "prevHash": row["prev_hash"], "hash": row["hash"]}


@dataclass(frozen=True)
class Verdict:
    rows: int
    head: str | None
    broken_id: int | None = None  # the first row that does not verify
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(rows: Iterable[sqlite3.Row], head: str | None,
           observe: Callable[[sqlite3.Row, str], str | None] | None = None) -> Verdict:
    """Walk the chain in id order. An edited row fails its own hash; a deleted row breaks the
    next row's ``prev_hash``; a deleted tail no longer matches ``meta.audit_head``. ``observe`` sees
    each row that verified with its hash and may name a problem of its own (signed checkpoints)."""
    prev, count, last = GENESIS, 0, None
    for row in rows:
        count += 1
        if row["prev_hash"] != prev:
            return Verdict(count, head, row["id"], f"row {row['id']}: prev_hash does not match the hash of the "
                           "row before it (a row before it was deleted or edited)")
        expected = audit_hash(prev, row["id"], row["tenant_id"], row["actor"], row["action"], row["resource_type"],
                              row["resource_id"], row["details"], row["created_at"])
        if row["hash"] != expected:
            return Verdict(count, head, row["id"], f"row {row['id']}: content does not match its hash (edited)")
        problem = observe(row, expected) if observe is not None else None
        if problem is not None:
            return Verdict(count, head, row["id"], problem)
        prev, last = expected, f"{row['id']}:{expected}"
    if (head or None) != last:
        return Verdict(count, head, None, f"the chain ends at {last or 'nothing'} but the recorded head is "
                       f"{head or 'empty'} (rows at the end were deleted)")
    return Verdict(count, head)


def verify_conn(conn: sqlite3.Connection,
                observe: Callable[[sqlite3.Row, str], str | None] | None = None) -> Verdict:
    head_row = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    rows = conn.execute("SELECT * FROM audit_events ORDER BY id")
    return verify(rows, head_row[0] if head_row else None, observe)
