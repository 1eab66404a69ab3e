"""A write operation: statements applied together, optionally guarded by the first one.

The server applies ops through the :class:`~appliance.store.writer.Writer`; CLI processes apply the
same ops with :func:`apply_sync`, so each change is described once.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Statement = tuple[str, Sequence[Any] | Mapping[str, Any]]  # positional or named parameters
BUMP_EPOCH = ("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'epoch'", ())


@dataclass
class Op:
    """``statements`` run in one savepoint. With ``guarded``, when the first statement changes no
    row (a lost compare-and-set) the rest are skipped and the op reports 0."""

    statements: list[Statement]
    guarded: bool = False
    many: dict[int, Sequence[Sequence[Any]]] = field(default_factory=dict)  # index -> executemany rows
    # The op changes a bounded number of pages (a findings batch, at most a request body's worth):
    # the writer may keep its savepoint journal in memory (see Writer._apply).
    bounded: bool = False


def apply_sync(conn: sqlite3.Connection, ops: Sequence[Op]) -> list[int]:
    """Apply ``ops`` in one ``BEGIN IMMEDIATE`` transaction; returns each op's first rowcount."""
    results: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            results.append(apply_one(conn, op))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return results


def apply_one(conn: sqlite3.Connection, op: Op) -> int:
    """One op on a connection already in a transaction; its first statement's rowcount."""
    first = -1
    for index, (sql, params) in enumerate(op.statements):
        cursor = conn.executemany(sql, op.many[index]) if index in op.many else conn.execute(sql, params)
        if index == 0:
            first = cursor.rowcount
            if op.guarded and first == 0:
                return 0
    return first
