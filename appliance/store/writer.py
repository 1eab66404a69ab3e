"""The one writer: every write of the server process goes through here.

Callers hand over :class:`~appliance.store.ops.Op` lists; the writer applies whatever has queued up
in one ``BEGIN IMMEDIATE`` transaction (each op in its own savepoint, so one bad op fails alone) and
answers each caller only after COMMIT. Bookkeeping (call log, lastUsedAt, rate counters) is
``buffer``-ed and flushed about once a second, never written on the request path.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import aiosqlite

from appliance import clock
from appliance.errors import StorageFull, is_disk_full
from appliance.store.ops import Op

log = logging.getLogger(__name__)
_BATCH = 200


class Writer:
    def __init__(self, path: Path, busy_timeout_ms: int = 5000, flush_interval: float = 1.0) -> None:
        self._path = path
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

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._conn = await aiosqlite.connect(str(self._path), isolation_level=None)
        for pragma in (f"busy_timeout = {self._busy_timeout_ms}", "journal_mode = WAL",
                       "synchronous = NORMAL", "foreign_keys = ON"):
            await self._conn.execute(f"PRAGMA {pragma}")
        self._tasks = [asyncio.create_task(self._run(), name="writer"),
                       asyncio.create_task(self._flush_periodically(), name="writer-flush")]

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
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._apply(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _apply(self, batch: list[tuple[Sequence[Op], asyncio.Future[list[int]] | None]]) -> None:
        conn = self._conn
        assert conn is not None
        outcomes: list[list[int] | BaseException] = []
        committed = False
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for ops, _ in batch:
                await conn.execute("SAVEPOINT w")
                try:
                    outcomes.append([await self._apply_one(conn, op) for op in ops])
                    await conn.execute("RELEASE w")
                except Exception as exc:  # one bad op fails its caller, not the batch
                    await conn.execute("ROLLBACK TO w")
                    await conn.execute("RELEASE w")
                    outcomes.append(exc)
            await conn.execute("COMMIT")
            committed = True
        except Exception as exc:
            if not is_disk_full(exc):
                log.exception("write batch failed")
            try:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
            except Exception:  # the writer must outlive a failed rollback; SQLite rolls back itself
                log.exception("rollback after a failed write batch failed")
            outcomes = [exc] * len(batch)
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

    @staticmethod
    async def _apply_one(conn: aiosqlite.Connection, op: Op) -> int:
        first = -1
        for index, (sql, params) in enumerate(op.statements):
            if index in op.many:
                cursor = await conn.executemany(sql, op.many[index])
            else:
                cursor = await conn.execute(sql, params)
            if index == 0:
                first = cursor.rowcount
                if op.guarded and first == 0:
                    return 0
        return first
