"""A write operation: statements applied together, optionally guarded by the first one.

The server applies ops through the :class:`~appliance.store.writer.Writer`; CLI processes apply the
same ops with :func:`apply_sync`, so each change is described once.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Statement = tuple[str, Sequence[Any] | Mapping[str, Any]]  # positional or named parameters
# What a connection's writes remember between ops (see Op.then): emptied whenever that could be stale.
Memo = dict[Any, Any]
BUMP_EPOCH = ("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'epoch'", ())


@dataclass(frozen=True)
class Bulk:
    """An op's change as one row of statements the writer may run once for many such ops in a batch:
    each statement takes one parameter, the JSON array of every op's ``row`` (read with ``json_each``),
    and its first must change exactly one row per op. Under load a commit of hundreds of small inserts
    is then a few statements instead of a few per op: the writer's thread takes the GIL back after
    every statement, and each time it waits for the busy event loop."""

    statements: tuple[str, ...]
    row: Sequence[Any]


@dataclass
class Op:
    """``statements`` run in one savepoint. With ``guarded``, when the first statement changes no
    row (a lost compare-and-set) the rest are skipped and the op reports 0. ``bulk``, when set, makes
    the same change as ``statements`` (the writer falls back to these whenever the bulk form fails)."""

    statements: list[Statement]
    guarded: bool = False
    many: dict[int, Sequence[Sequence[Any]]] = field(default_factory=dict)  # index -> executemany rows
    bulk: Bulk | None = None
    # The op changes a bounded number of pages (a findings batch, at most a request body's worth):
    # the writer may keep its savepoint journal in memory (see Writer._apply).
    bounded: bool = False
    # The rest of the op, when it depends on what the database holds (which of a findings batch's
    # fingerprints its scan already has): run on the connection after ``statements`` (only when the
    # guard held), with what earlier ops remembered in ``memo``. The writer keeps its memo between
    # transactions and empties it when a transaction failed; what else could make it stale (another
    # connection's writes) is the op's to check.
    then: Callable[[sqlite3.Connection, Memo], None] | None = None


def rows_json(rows: Sequence[Sequence[Any]]) -> str | None:
    """The rows as one JSON array for ``json_each``; None for what JSON would not carry unchanged
    (SQLite's JSON functions end a text at U+0000; orjson refuses lone surrogates and big integers)."""
    try:
        text = orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        return None
    return None if "\\u0000" in text else text


def json_rows(width: int) -> str:
    """``SELECT`` of the rows of a JSON array bound as the one parameter, each row an array of ``width`` values."""
    return f"SELECT {', '.join(f'value ->> {i}' for i in range(width))} FROM json_each(?) WHERE true ORDER BY key"


def rows_op(per_row: str, all_rows: str, rows: Sequence[Sequence[Any]]) -> Op:
    """``rows`` written by ``all_rows`` once (it reads them from a JSON array, see :func:`json_rows`),
    or by ``per_row`` for each row when JSON would change a value. One statement, not one per row:
    the writer's thread takes the GIL back after every statement, each time after the busy event loop."""
    text = rows_json(rows)
    return Op([(per_row, ())], many={0: rows}) if text is None else Op([(all_rows, (text,))])


def apply_sync(conn: sqlite3.Connection, ops: Sequence[Op]) -> list[int]:
    """Apply ``ops`` in one ``BEGIN IMMEDIATE`` transaction; returns each op's first rowcount."""
    results: list[int] = []
    memo: Memo = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            results.append(apply_one(conn, op, memo))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return results


def apply_one(conn: sqlite3.Connection, op: Op, memo: Memo | None = None) -> int:
    """One op on a connection already in a transaction; its first statement's rowcount. ``memo``:
    what this connection's earlier ops remembered (none: the op reads what it needs)."""
    first = -1
    for index, (sql, params) in enumerate(op.statements):
        cursor = conn.executemany(sql, op.many[index]) if index in op.many else conn.execute(sql, params)
        if index == 0:
            first = cursor.rowcount
            if op.guarded and first == 0:
                return 0
    if op.then is not None:
        op.then(conn, {} if memo is None else memo)
    return first
