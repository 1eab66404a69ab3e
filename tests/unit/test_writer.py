"""The one writer: batches applied in one transaction on aiosqlite's thread, one bad op failing alone."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.store import writer as writer_module
from appliance.store.db import connect
from appliance.store.ops import Op
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


async def test_journals_are_in_memory_only_for_batches_of_bounded_ops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _db(tmp_path)
    seen: list[int] = []
    real = Writer._apply_one

    def recording(conn: sqlite3.Connection, op: Op) -> int:
        seen.append(conn.execute("PRAGMA temp_store").fetchone()[0])  # 2: MEMORY, 0: DEFAULT (a file)
        return real(conn, op)

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
