"""The one writer: batches applied in one transaction on aiosqlite's thread, one bad op failing alone."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.scanning import lifecycle
from appliance.store import writer as writer_module
from appliance.store.db import connect, migrate
from appliance.store.ops import Bulk, Memo, Op, apply_one, apply_sync, json_rows, rows_op
from appliance.store.writer import Writer

pytestmark = pytest.mark.anyio


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    conn = connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.close()
    return path


def _insert(value: str | None) -> Op:
    return Op([("INSERT INTO t (v) VALUES (?)", (value,))])


async def test_concurrent_writes_share_transactions_on_the_connection_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _db(tmp_path)
    hops: list[int] = []
    real = writer_module._on_connection_thread

    async def counting(conn: Any, fn: Callable[[], Any]) -> Any:
        def on_thread() -> Any:
            hops.append(threading.get_ident())
            return fn()
        return await real(conn, on_thread)

    monkeypatch.setattr(writer_module, "_on_connection_thread", counting)
    writer = Writer(path)
    await writer.start()
    try:
        results = await asyncio.gather(*(writer.write(_insert(str(n))) for n in range(100)))
    finally:
        await writer.stop()
    assert results == [[1]] * 100
    # 100 callers at once: far fewer transactions than callers, all on one thread that is not the loop's.
    assert 1 <= len(hops) < 10
    assert set(hops) != {threading.get_ident()} and len(set(hops)) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 100


async def test_one_bad_op_fails_alone_and_guards_report_zero(tmp_path: Path) -> None:
    path = _db(tmp_path)
    writer = Writer(path)
    await writer.start()
    try:
        good, bad, lost = await asyncio.gather(
            writer.write(_insert("a")),
            writer.write(_insert("b"), _insert(None)),  # NOT NULL: the whole op rolls back
            writer.write(Op([("UPDATE t SET v = 'x' WHERE v = 'missing'", ()), ("DELETE FROM t", ())],
                            guarded=True)),
            return_exceptions=True)
    finally:
        await writer.stop()
    assert good == [1]
    assert isinstance(bad, sqlite3.IntegrityError)
    assert lost == [0]  # the guard lost: DELETE never ran
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["a"]


async def test_buffered_ops_are_written_by_stop(tmp_path: Path) -> None:
    path = _db(tmp_path)
    writer = Writer(path, flush_interval=3600)
    await writer.start()
    writer.buffer(_insert("later"))
    await writer.stop()
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["later"]


def _bulk_insert(value: str | None) -> Op:
    return Op([("INSERT INTO t (v) VALUES (?)", (value,))],
              bulk=Bulk(("INSERT INTO t (v) SELECT value ->> 0 FROM json_each(?) ORDER BY key",), (value,)))


async def _write_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: list[str | None]
                     ) -> tuple[list[Any], list[Op], list[str]]:
    """Every value written at once by its own caller; what each got, the ops applied, the rows stored."""
    path = _db(tmp_path)
    applied: list[Op] = []

    def recording(conn: sqlite3.Connection, op: Op, memo: Memo | None = None) -> int:
        applied.append(op)
        return apply_one(conn, op, memo)

    monkeypatch.setattr(Writer, "_apply_one", staticmethod(recording))
    writer = Writer(path)
    await writer.start()
    try:
        results = await asyncio.gather(*(writer.write(_bulk_insert(v)) for v in values), return_exceptions=True)
    finally:
        await writer.stop()
    conn = sqlite3.connect(path)
    return results, applied, [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")]


async def test_ops_with_one_bulk_form_are_applied_as_one_statement(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    values = [f"v{n} 'quoted' \"double\" \\ tab\t é 😀" for n in range(100)]
    results, applied, stored = await _write_all(tmp_path, monkeypatch, values)
    assert results == [[1]] * 100
    assert stored == values  # every value unchanged, in the callers' order
    assert len(applied) < 10  # one statement per batch, not one per op
    assert all("json_each" in op.statements[0][0] for op in applied)


async def test_a_failing_bulk_falls_back_so_a_bad_op_still_fails_alone(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[str | None] = [f"v{n}" for n in range(50)]
    values[20] = None  # NOT NULL
    results, applied, stored = await _write_all(tmp_path, monkeypatch, values)
    assert isinstance(results[20], sqlite3.IntegrityError)
    assert results[:20] == [[1]] * 20 and results[21:] == [[1]] * 29
    # The bulk statement was tried, then every op was applied alone.
    assert any("json_each" in op.statements[0][0] for op in applied)
    assert sum("VALUES" in op.statements[0][0] for op in applied) == len(values)
    assert stored == values[:20] + values[21:]


async def test_values_json_would_change_take_the_one_op_path(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite's JSON functions end a text at U+0000; orjson refuses a lone surrogate.
    values: list[str | None] = ["a\x00b", "c\x00d", "lone \ud800", "plain"]
    results, applied, stored = await _write_all(tmp_path, monkeypatch, values)
    assert results[:2] == [[1], [1]] and results[3] == [1]
    assert stored[:2] == ["a\x00b", "c\x00d"] and "plain" in stored
    assert not any("json_each" in op.statements[0][0] for op in applied)


async def test_scans_submitted_together_are_stored_as_one_at_a_time_would_store_them(tmp_path: Path) -> None:
    def database(name: str) -> Path:
        path = tmp_path / name
        conn = connect(path)
        migrate(conn)
        conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'one', 0)")
        conn.commit()
        conn.close()
        return path

    rows = [{"id": f"00000000-0000-4000-8000-{n:012d}", "tenant_id": "t1", "api_key_id": "k1", "scan_type": "nmap",
             "name": [None, "plain", "quote ' \" \\ tab\t é 😀", "x" * 3000][n % 4], "target": f"127.0.0.{n + 1}",
             "target_type": "ip", "status": "queued", "priority": "normal", "options": '{"ports": "1-1024"}',
             "config": "{}", "tags": '["a", "b\\\\c"]', "timeout": 3600 + n, "asset_id": None,
             "callback_url": None, "created_at": 1764400000.123456 + n / 7, "queued_at": 1764400000.5 + n / 3,
             "zone": "", "template_id": None} for n in range(40)]
    ops = [lifecycle.submit(row) for row in rows]
    one_by_one, together = database("one.db"), database("together.db")
    conn = connect(one_by_one)
    for op in ops:
        apply_sync(conn, [op])
    conn.close()
    writer = Writer(together)
    await writer.start()
    try:
        assert await asyncio.gather(*(writer.write(op) for op in ops)) == [[1]] * len(ops)
    finally:
        await writer.stop()
    tables = [sqlite3.connect(path) for path in (one_by_one, together)]
    for query in ("SELECT * FROM scans ORDER BY id", "SELECT * FROM scan_events ORDER BY id"):
        first, second = (c.execute(query).fetchall() for c in tables)
        assert len(first) == len(rows) and first == second
    assert [type(v) for v in tables[1].execute("SELECT * FROM scans").fetchone()] == \
        [type(v) for v in tables[0].execute("SELECT * FROM scans").fetchone()]


def test_rows_op_writes_what_one_statement_per_row_writes(tmp_path: Path) -> None:
    rows: list[tuple[Any, ...]] = [(n, f"text {n} 'q' \\ é 😀\t", n / 3, None if n % 2 else n * 10**12)
                                   for n in range(200)]
    per_row = "INSERT INTO r (a, b, c, d) VALUES (?, ?, ?, ?)"
    all_rows = f"INSERT INTO r (a, b, c, d) {json_rows(4)}"
    stored = []
    for name, op in (("json", rows_op(per_row, all_rows, rows)),
                     ("each", Op([(per_row, ())], many={0: rows}))):
        conn = connect(tmp_path / f"{name}.db")
        conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL, d INTEGER)")
        assert apply_sync(conn, [op]) == [len(rows)]
        stored.append(conn.execute("SELECT *, typeof(a), typeof(c), typeof(d) FROM r ORDER BY id").fetchall())
    assert len(op_of_json := rows_op(per_row, all_rows, rows).statements) == 1 and "json_each" in op_of_json[0][0]
    assert stored[0] == stored[1]
    # A value JSON would change (SQLite's JSON ends a text at U+0000): one statement per row.
    nul = rows_op(per_row, all_rows, [(1, "a\x00b", 0.5, None)])
    assert nul.statements == [(per_row, ())] and nul.many == {0: [(1, "a\x00b", 0.5, None)]}


async def test_journals_are_in_memory_only_for_batches_of_bounded_ops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _db(tmp_path)
    seen: list[int] = []
    real = Writer._apply_one

    def recording(conn: sqlite3.Connection, op: Op, memo: Memo | None = None) -> int:
        seen.append(conn.execute("PRAGMA temp_store").fetchone()[0])  # 2: MEMORY, 0: DEFAULT (a file)
        return real(conn, op, memo)

    monkeypatch.setattr(Writer, "_apply_one", staticmethod(recording))
    writer = Writer(path)
    await writer.start()
    bounded = Op([("INSERT INTO t (v) VALUES ('b')", ())], bounded=True)
    try:
        await writer.write(bounded)
        await writer.write(_insert("u"))
        await writer.write(bounded, bounded)
        await writer.write(bounded, _insert("mixed"))  # one op that is not bounded: on file
    finally:
        await writer.stop()
    assert seen == [2, 0, 2, 2, 0, 0]
