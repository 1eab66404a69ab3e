"""SQL functions the appliance's statements call, registered on every connection that writes.

``cix_audit_hash`` lets an audit insert compute its chain hash inside the writing transaction
(``BEGIN IMMEDIATE``): the previous row's hash is read under the same lock that the insert holds,
so the server's writer and CLI processes can both append without forking the chain.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

GENESIS = "0" * 64


def canonical(prev_hash: str, row_id: int, tenant_id: str | None, actor: str, action: str,
              resource_type: str, resource_id: str | None, details: str, created_at: float) -> bytes:
    """The canonical encoding of an audit row: a JSON object of these nine fields with sorted keys,
    no whitespace, ASCII only (``json.dumps(..., sort_keys=True, separators=(",", ":"))``).
    ``details`` is the stored JSON text as a string, ``createdAt`` the stored float (unix seconds,
    shortest round-trip repr), ``id`` an integer, ``prevHash`` lowercase hex."""
    return json.dumps({"id": row_id, "prevHash": prev_hash, "tenantId": tenant_id, "actor": actor,
                       "action": action, "resourceType": resource_type, "resourceId": resource_id,
                       "details": details, "createdAt": float(created_at)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def audit_hash(prev_hash: str, row_id: int, tenant_id: str | None, actor: str, action: str,
               resource_type: str, resource_id: str | None, details: str, created_at: float) -> str:
    """SHA-256 (hex) of :func:`canonical`: the row's own content including its predecessor's hash."""
    return hashlib.sha256(canonical(prev_hash, row_id, tenant_id, actor, action, resource_type,
                                    resource_id, details, created_at)).hexdigest()


FUNCTIONS: list[tuple[str, int, Any]] = [("cix_audit_hash", 9, audit_hash)]


def register(conn: sqlite3.Connection) -> None:
    for name, arity, fn in FUNCTIONS:
        conn.create_function(name, arity, fn, deterministic=True)
