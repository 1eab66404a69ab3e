"""The one writer: every write of the server process goes through here.

Callers hand over :class:`~appliance.store.ops.Op` lists; the writer applies whatever has queued up
in one ``BEGIN IMMEDIATE`` transaction (each op in its own savepoint, so one bad op fails alone) and
answers each caller only after COMMIT. Bookkeeping (call log, lastUsedAt, rate counters) is
``buffer``-ed and flushed about once a second, never written on the request path.

The connection is aiosqlite's: its own thread holds the one sqlite3 connection that writes. A batch
is handed to that thread as one call (BEGIN … savepoints … COMMIT), not one ``await`` per statement:
under load every hop between the thread and the event loop waits for the busy loop to come round,
and per-statement hops made a commit take tens of milliseconds.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import aiosqlite

from appliance import clock
from appliance.errors import StorageFull, is_disk_full
from appliance.store.db import connect
from appliance.store.ops import Memo, Op, apply_one, rows_json

log = logging.getLogger(__name__)
_BATCH = 200
WRITER_CACHE_KIB = 64 * 1024
# 64 MiB of WAL (SQLite's default: 1000 pages). Each findings commit rewrites index pages all over
# the scan's random fingerprint index; a checkpoint copies each page once however often it was
# rewritten, so rarer checkpoints copy less: about 5 µs of the writer's CPU per finding less than
# with 4,096 pages at 100,000 findings of one scan. The WAL file keeps that size on disk.
WAL_CHECKPOINT_PAGES = 16384


_Batch = list[tuple[Sequence[Op], "asyncio.Future[list[int]] | None"]]
_T = TypeVar("_T")


async def _on_connection_thread(conn: aiosqlite.Connection, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on ``conn``'s thread, where its sqlite3 connection lives, and await the result.
    aiosqlite builds every public method on this one call; it has no public name for it, so it is
    used here only, with aiosqlite pinned (a test runs a batch through it)."""
    run: Callable[[Callable[[], _T]], Awaitable[_T]] = conn._execute
    return await run(fn)


def _bulk_run_end(batch: _Batch, start: int) -> int:
    """The end of the run of entries from ``start`` that are each one op of the same Bulk form."""
    first = batch[start][0]
    if len(first) != 1 or first[0].bulk is None:
        return start + 1
    statements = first[0].bulk.statements
    end = start + 1
    while end < len(batch) and len(batch[end][0]) == 1 and (bulk := batch[end][0][0].bulk) is not None \
            and bulk.statements == statements:
        end += 1
    return end


class Writer:
    def __init__(self, path: Path, busy_timeout_ms: int = 5000, flush_interval: float = 1.0,
                 attach: Mapping[str, Path] | None = None) -> None:
        self._path = path
        self._attach = dict(attach or {})  # schema name -> database file, written in the same transactions
        self._busy_timeout_ms = busy_timeout_ms
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[tuple[Sequence[Op], asyncio.Future[list[int]] | None]] = asyncio.Queue()
        self._buffer: list[Op] = []
        self._sources: list[Callable[[], list[Op]]] = []
        self._conn: aiosqlite.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Why writes fail right now ("database or disk is full"), else None; /health reports it.
        self.problem: str | None = None
        self.commits = 0  # transactions committed: a change here empties the caches of rows read (rowcache.py)
        self.journal_in_memory = False  # the connection's temp_store, as _apply last set it
        self._memo: Memo = {}  # what ops remembered (Op.then); emptied when a transaction fails

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # WAL, synchronous=NORMAL, foreign keys, busy timeout and the SQL functions, as every connection;
        # made on aiosqlite's thread, the only thread that uses it.
        self._conn = await aiosqlite.Connection(self._connect, iter_chunk_size=64)
        self._tasks = [asyncio.create_task(self._run(), name="writer"),
                       asyncio.create_task(self._flush_periodically(), name="writer-flush")]

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self._path, self._busy_timeout_ms)
        # A findings batch touches index pages all over a large scan: a page cache that holds them
        # (SQLite's default is 2 MiB), and checkpoints that copy a page once for many commits.
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        for name, path in self._attach.items():
            conn.execute(f"ATTACH DATABASE ? AS {name}", (str(path),))
            conn.execute(f"PRAGMA {name}.synchronous = NORMAL")
        return conn

    async def stop(self) -> None:
        """Flush the buffer, finish queued writes, close."""
        for task in self._tasks[1:]:
            task.cancel()
        self.flush()
        await self._queue.join()
        self._tasks[0].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()

    # -- submitting ------------------------------------------------------------------------------
    async def write(self, *ops: Op) -> list[int]:
        """Apply ``ops`` durably; returns each op's first rowcount (0 for a lost guard)."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((ops, future))
        return await future

    def write_threadsafe(self, *ops: Op, timeout: float = 60) -> list[int]:
        """From a worker thread: block until the ops are committed."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self.write(*ops), self._loop).result(timeout)

    def buffer(self, op: Op) -> None:
        """From the event loop: queue ``op`` for the next flush."""
        self._buffer.append(op)

    def buffer_threadsafe(self, op: Op) -> None:
        """Queue ``op`` for the next flush: durable within about a second, never awaited."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._buffer.append, op)

    def add_source(self, drain: Callable[[], list[Op]]) -> None:
        """``drain()`` is asked for its pending bookkeeping ops at every flush."""
        self._sources.append(drain)

    def flush(self) -> None:
        for drain in self._sources:
            self._buffer.extend(drain())
        if self._buffer:
            ops, self._buffer = self._buffer, []
            self._queue.put_nowait((ops, None))

    async def check_health(self) -> str | None:
        """None when writes succeed. While they fail for lack of space, try one small write, so that
        the state clears as soon as an operator freed space even when nothing else writes."""
        if self.problem is not None:
            probe = Op([("INSERT INTO meta (key, value) VALUES ('health_probe', ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(clock.now()),))])
            try:
                await asyncio.wait_for(self.write(probe), 5)
            except Exception as exc:  # the probe's failure is the answer, whatever it is
                log.debug("health probe write failed: %s", exc)
        return self.problem

    # -- applying --------------------------------------------------------------------------------
    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self.flush()

    async def _run(self) -> None:
        assert self._conn is not None
        conn = self._conn
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes, committed = await _on_connection_thread(
                    conn, functools.partial(self._apply, conn._conn, batch))
                self._answer(batch, outcomes, committed)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _apply(self, conn: sqlite3.Connection, batch: _Batch) -> tuple[list[list[int] | BaseException], bool]:
        """On the connection's thread: the whole batch in one transaction. First as few statements as
        can be (no savepoints; consecutive ops with one :class:`~appliance.store.ops.Bulk` form as
        one), since ops rarely fail; when anything failed, the batch is rolled back and applied
        again with each op list in a savepoint, so that one bad op fails alone."""
        try:
            self._journal(conn, all(op.bounded for ops, _ in batch for op in ops))
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = self._apply_together(conn, batch)
            except Exception as exc:
                log.debug("a write batch is applied again op by op: %s", exc)
                if conn.in_transaction:  # SQLite may have rolled back itself (a full disk)
                    conn.execute("ROLLBACK")
                # What the ops remembered may be what was rolled back, and a failing op may leave
                # behind what it remembered before it failed: forgotten, on both passes.
                self._memo.clear()
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [self._apply_ops(conn, ops) for ops, _ in batch]
                self._memo.clear()
            conn.execute("COMMIT")
            self.commits += 1
            return outcomes, True
        except Exception as exc:
            self._memo.clear()
            if not is_disk_full(exc):
                log.exception("write batch failed")
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:  # the writer must outlive a failed rollback; SQLite rolls back itself
                log.exception("rollback after a failed write batch failed")
            return [exc] * len(batch), False

    def _apply_together(self, conn: sqlite3.Connection, batch: _Batch) -> list[list[int] | BaseException]:
        """Every op of the batch; raises on the first failure (the transaction must then be rolled back)."""
        outcomes: list[list[int] | BaseException] = []
        start = 0
        while start < len(batch):
            end = _bulk_run_end(batch, start)
            run = [ops[0] for ops, _ in batch[start:end]]
            rows = rows_json([op.bulk.row for op in run if op.bulk]) if len(run) > 1 else None
            if rows is not None and run[0].bulk is not None:
                together = Op([(sql, (rows,)) for sql in run[0].bulk.statements])
                if self._apply_one(conn, together, self._memo) != len(run):
                    raise sqlite3.IntegrityError("a bulk statement changed another number of rows than it has ops")
                outcomes += [[1] for _ in run]
            else:
                outcomes += [[self._apply_one(conn, op, self._memo) for op in ops] for ops, _ in batch[start:end]]
            start = end
        return outcomes

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[Op]) -> list[int] | BaseException:
        conn.execute("SAVEPOINT w")
        try:
            outcome = [self._apply_one(conn, op, self._memo) for op in ops]
            conn.execute("RELEASE w")
            return outcome
        except Exception as exc:  # one bad op fails its caller, not the batch
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
            return exc

    def _journal(self, conn: sqlite3.Connection, in_memory: bool) -> None:
        """Where the savepoint and statement journals of the next transaction go. Each op runs in a
        savepoint and a findings batch is one multi-row statement: SQLite copies every page they
        change into a journal first, a temporary file past 64 KiB, written page by page (about 7 µs
        of system time per finding). In memory when every op of the batch is ``bounded``; on file
        otherwise, so that an op deleting a whole scan's findings never holds them all in RAM. Set
        before BEGIN: SQLite reads it when a transaction starts."""
        if in_memory != self.journal_in_memory:
            conn.execute(f"PRAGMA temp_store = {'MEMORY' if in_memory else 'DEFAULT'}")
            self.journal_in_memory = in_memory

    def _answer(self, batch: _Batch, outcomes: list[list[int] | BaseException], committed: bool) -> None:
        """On the event loop: the health state, then each caller's result."""
        outcomes = [StorageFull() if isinstance(o, BaseException) and is_disk_full(o) else o for o in outcomes]
        full = any(isinstance(o, StorageFull) for o in outcomes)
        if full and self.problem is None:
            log.error("writes fail: the database or disk is full")
            self.problem = "database or disk is full"
        elif committed and not full and self.problem is not None:
            log.warning("writes succeed again")
            self.problem = None
        for (_ops, future), outcome in zip(batch, outcomes, strict=True):
            if future is None:
                if isinstance(outcome, BaseException):
                    log.error("buffered write dropped: %s", outcome)
            elif not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    # The seam tests replace to make every write fail (a full disk).
    _apply_one = staticmethod(apply_one)
