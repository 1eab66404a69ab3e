"""Signed audit checkpoints.

The hash chain shows an edited or deleted audit row, but someone able to write the database could
rebuild the whole chain. A checkpoint closes that gap: an ``audit.checkpoint`` row (actor ``system``)
whose details hold a statement naming the chain's head — row id, hash, time — signed with both
algorithms. Rebuilding the chain changes the hash at that row, which the signature no longer
matches, and the private keys never are in the database.

The server writes one at most every ``audit.checkpoint_seconds`` when rows were added since the last
one, and one when it stops; ``cix-appliance audit checkpoint`` writes one at once.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance import audit, clock
from appliance.signing.keys import KeyRing
from appliance.signing.signature import Check, Trusted, check, sign
from appliance.store.ops import Op

ACTION = "audit.checkpoint"
HEAD_SQL = "SELECT id, hash, action, created_at FROM audit_events ORDER BY id DESC LIMIT 1"


def unsigned(head: sqlite3.Row | None) -> sqlite3.Row | None:
    """``head`` (the last audit row) when a checkpoint would sign something new: None if the chain
    is empty or already ends with a checkpoint."""
    return None if head is None or head["action"] == ACTION else head


def checkpoint_op(keyring: KeyRing, head: sqlite3.Row) -> Op:
    """The checkpoint row signing ``head`` (id, hash, time)."""
    block = sign(keyring, "audit-checkpoint", "SHA-256", head["hash"],
                 {"headId": head["id"], "headCreatedAt": str(clock.iso(head["created_at"]))}, embed_keys=False)
    return audit.audit_op(None, "system", ACTION, "audit", str(head["id"]), block)


def write_now(conn: sqlite3.Connection, keyring: KeyRing) -> sqlite3.Row | None:
    """A checkpoint from a CLI process; returns the head it signed (None: nothing new to sign)."""
    from appliance.store import apply_sync

    head = unsigned(conn.execute(HEAD_SQL).fetchone())
    if head is not None:
        apply_sync(conn, [checkpoint_op(keyring, head)])
    return head


@dataclass
class Latest:
    """The last checkpoint that verified."""

    row_id: int
    head_id: int
    signed_at: str
    key_ids: tuple[str, ...]


class CheckpointObserver:
    """Checks every checkpoint row while :func:`appliance.audit.verify` walks the chain: its statement
    must name a row whose recomputed hash it signed, with both algorithms, by trusted keys."""

    def __init__(self, conn: sqlite3.Connection, trusted: Trusted) -> None:
        self.trusted = trusted
        self.latest: Latest | None = None
        # The rows checkpoints name: their hashes are kept while walking, nothing else is.
        self.heads = {r[0] for r in conn.execute(
            "SELECT json_extract(details, '$.statement.headId') FROM audit_events WHERE action = ? AND"
            " json_valid(details)", (ACTION,)) if isinstance(r[0], int)}
        self._hashes: dict[int, str] = {}

    def __call__(self, row: sqlite3.Row, computed: str) -> str | None:
        if row["id"] in self.heads:
            self._hashes[row["id"]] = computed
        if row["action"] != ACTION:
            return None
        where = f"row {row['id']} (audit checkpoint)"
        try:
            block: dict[str, Any] = json.loads(row["details"])
            head_id = int(block["statement"]["headId"])
        except (ValueError, KeyError, TypeError):
            return f"{where}: holds no checkpoint statement"
        if head_id not in self._hashes:
            return f"{where}: signs row {head_id}, which is not an earlier row of the chain"
        verdict: Check = check(block, self.trusted, "audit-checkpoint")
        if not verdict.ok:
            return f"{where}: {verdict.problem}"
        if block["statement"]["digest"] != self._hashes[head_id]:
            since = f"row {self.latest.head_id}" if self.latest else "the first row"
            return (f"{where}: signed hash {block['statement']['digest'][:16]}… of row {head_id}, but the chain now "
                    f"hashes row {head_id} to {self._hashes[head_id][:16]}…: rows after {since} up to row "
                    f"{head_id} were rewritten and the chain rebuilt")
        self.latest = Latest(row["id"], head_id, str(block["statement"].get("signedAt")), verdict.key_ids)
        return None

