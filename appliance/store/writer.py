"""The one writer: every write of the server process goes through here.

Callers hand over :class:`~appliance.store.ops.Op` lists; the writer applies whatever has queued up
in one ``BEGIN IMMEDIATE`` transaction (each op in its own savepoint, so one bad op fails alone) and
answers each caller only after COMMIT. Bookkeeping (call log, lastUsedAt, rate counters) is
``buffer``-ed and flushed about once a second, never written on the request path.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Sequence

import aiosqlite

from appliance.store.ops import Op

log = logging.getLogger(__name__)
_BATCH = 200


class Writer:
    def __init__(self, path: Path, busy_timeout_ms: int = 5000, flush_interval: float = 1.0) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[tuple[Sequence[Op], asyncio.Future | None]] = asyncio.Queue()
        self._buffer: list[Op] = []
        self._sources: list[Callable[[], list[Op]]] = []
        self._conn: aiosqlite.Connection | None = None
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

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
        future = asyncio.get_running_loop().create_future()
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

    async def _apply(self, batch: list[tuple[Sequence[Op], asyncio.Future | None]]) -> None:
        conn = self._conn
        assert conn is not None
        outcomes: list[list[int] | BaseException] = []
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
        except Exception as exc:
            log.exception("write batch failed")
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            outcomes = [exc] * len(batch)
        for (ops, future), outcome in zip(batch, outcomes):
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
