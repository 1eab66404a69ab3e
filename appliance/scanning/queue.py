"""The scan queue: real Huey, one queue per (zone, engine), on SQLite (embedded) or Redis.

Why one queue per engine: a worker consumes only the engines it has (a scan needing an engine it
lacks is left to others), and each engine's consumer has as many threads as that engine may run at
once, so a scan waiting for a slot waits in the queue — no polling, no log lines, no re-enqueueing.
Why one per zone: scans of a segment run only on the workers placed in it.

Huey pitfalls designed around (measured): ``Consumer.start()`` installs its own SIGTERM/SIGINT
handlers over uvicorn's, so the consumer here installs none; process workers would ``fork()`` a
process holding uvloop, threads and SQLite connections, so workers are threads; the default polling
backs off to 10 s, so SQLite polling is capped near 0.25 s (Redis dequeues block instead: BZPOPMIN);
Huey's plain Redis storage ignores priorities, so it is ``PriorityRedisStorage``; Huey pickles
messages by default, and a pickle read from Redis would run code on every worker, so messages are
JSON. Huey deletes a task when it dequeues it, so the scan table, not the queue, says what must run
(see the reconciler).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from appliance import clock
from appliance.scanning.hueylib import (
    Consumer,
    Huey,
    Message,
    PriorityRedisStorage,
    Serializer,
    SqliteStorage,
    Task,
    TaskWrapper,
    with_redis,
)
from appliance.scanning.job import Job
from appliance.store.ops import Bulk, Op

log = logging.getLogger(__name__)
# The name the writer's connection attaches queue.db under (SQLite queue): a scan's task is inserted
# in the transaction that stores the scan (ScanQueue.adding_task).
ATTACHED = "queuedb"
HUEY_PRIORITY = {"critical": 30, "high": 20, "normal": 10, "low": 0}
TASK_NAME = "run_scan"


class WalSqliteStorage(SqliteStorage):  # type: ignore[misc]  # huey ships no type information
    """Huey's SQLite storage in WAL mode with ``synchronous=NORMAL``, like the main database; and
    :meth:`batch`, which puts several enqueues in one transaction and one statement."""

    _batching: int | None = None  # the thread whose batch transaction is open
    _pending: list[tuple[str, str, float]] | None = None  # that batch's enqueued tasks, inserted at its end

    def _create_connection(self):  # type: ignore[no-untyped-def]
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Writes of this thread inside the block share one transaction: one lock, one commit. Its
        enqueues are one INSERT at the end: the thread takes the GIL back after every statement, and
        each time waits for the busy event loop."""
        with self.lock:
            conn = self.conn
            conn.execute(self.begin_sql)
            self._batching = threading.get_ident()
            self._pending = []
            try:
                yield
                if self._pending:
                    conn.execute(_insert_tasks("task"), (json.dumps(self._pending),))
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
            finally:
                self._batching = None
                self._pending = None

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        # JsonSerializer's messages are ASCII (json.dumps escapes the rest), so the bytes stored
        # from the batch's JSON are these bytes; anything else is inserted as Huey would.
        batched = self._pending is not None and self._batching == threading.get_ident()
        if batched and data.isascii() and b"\x00" not in data:
            self._pending.append((self.name, data.decode(), priority or 0))  # type: ignore[union-attr]
        else:
            super().enqueue(data, priority)

    @contextlib.contextmanager
    def db(self, commit: bool = False, close: bool = False) -> Iterator[Any]:
        if self._batching == threading.get_ident():  # inside batch(): its lock and transaction hold
            cursor = self.conn.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        with super().db(commit=commit, close=close) as cursor:
            yield cursor


class JsonSerializer(Serializer):  # type: ignore[misc]  # huey ships no type information
    """Huey messages as JSON, never pickle: the queue may be shared with other hosts."""

    def _serialize(self, data: Any) -> bytes:
        if isinstance(data, Message):
            data = {"huey_message": {k: _encode(v) for k, v in data._asdict().items()}}
        return json.dumps(data, separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Any:
        value = json.loads(data)
        if isinstance(value, dict) and isinstance(value.get("huey_message"), dict):
            fields = {k: _decode(v) for k, v in value["huey_message"].items() if k in Message._fields}
            if isinstance(fields.get("args"), list):
                fields["args"] = tuple(fields["args"])
            return Message(**fields)
        return value


def _encode(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$dt"}:
        return datetime.datetime.fromisoformat(value["$dt"])
    return value


_task_id = clock.unique_ids()  # instead of Huey's uuid4 per task (a random read each)


def _insert_tasks(table: str, at: int = 0) -> str:
    """Huey's task rows (queue, data, priority) from a JSON array, values ``at`` onwards in each row."""
    return (f"INSERT INTO {table} (queue, data, priority) SELECT value ->> {at}, CAST(value ->> {at + 1} AS BLOB),"
            f" value ->> {at + 2} FROM json_each(?) WHERE true ORDER BY key")


class EmbeddedConsumer(Consumer):  # type: ignore[misc]  # huey ships no type information
    """A consumer that leaves signal handling to the process hosting it."""

    def _set_signal_handlers(self) -> None:
        return None


def queue_name(zone: str, engine: str) -> str:
    """Zone entries hold characters Redis key names lose (``/``, ``.``): hashed, so no two collide."""
    zone_key = "default" if not zone else "z" + hashlib.sha256(zone.encode()).hexdigest()[:16]
    return f"cix-{zone_key}-{engine}"


class Backend:
    """Makes the Huey instance of one queue: SQLite in the data dir, or Redis at a URL."""

    def __init__(self, kind: str, sqlite_path: str | None = None, redis_url: str | None = None,
                 busy_timeout: float = 5.0) -> None:
        self.kind = kind
        self._sqlite_path = sqlite_path
        self._busy_timeout = busy_timeout
        self._pool: Any = None
        if kind == "redis":
            from redis import ConnectionPool  # only a Redis deployment needs the client

            with_redis()
            self._pool = ConnectionPool.from_url(redis_url or "", health_check_interval=30)
        elif kind != "sqlite":
            raise ValueError(f"unknown queue backend {kind!r}")

    @property
    def blocking(self) -> bool:
        return self.kind == "redis"

    def prepare(self) -> None:
        """Create queue.db and Huey's tables (SQLite), before another connection attaches it."""
        if self.kind == "sqlite":
            self.huey("cix-prepare").storage.close()

    def huey(self, name: str) -> Huey:
        if self.kind == "redis":
            return Huey(name, storage_class=PriorityRedisStorage, connection_pool=self._pool, blocking=True,
                        read_timeout=1, results=False, serializer=JsonSerializer())
        return Huey(name, storage_class=WalSqliteStorage, filename=self._sqlite_path, journal_mode="wal",
                    timeout=self._busy_timeout, results=False, serializer=JsonSerializer())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()


class ScanQueue:
    """Enqueues jobs by zone, engine and priority; runs them with ``run_job(job_dict)`` on
    consumer threads, at most ``slots`` at once and at most ``caps[engine]`` per engine."""

    def __init__(self, backend: Backend, run_job: Callable[[dict[str, Any]], str]) -> None:
        self.backend = backend
        self._run_job = run_job
        self._queues: dict[str, tuple[Huey, TaskWrapper]] = {}
        self._lock = threading.Lock()
        self._enqueue_lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if backend.blocking else threading.RLock())
        self._batch: contextlib.ExitStack | None = None  # open by batching(), on the thread holding the lock
        self._batched: set[int] = set()  # storages (by id) whose batch transaction is open
        self._consumers: list[EmbeddedConsumer] = []
        self._slots = threading.BoundedSemaphore(1)
        self._engine_slots: dict[str, threading.BoundedSemaphore] = {}

    def _queue(self, zone: str, engine: str) -> tuple[Huey, TaskWrapper]:
        name = queue_name(zone, engine)
        with self._lock:
            if name not in self._queues:
                huey = self.backend.huey(name)
                self._queues[name] = (huey, huey.task(name=TASK_NAME)(self._execute))
            return self._queues[name]

    def enqueue(self, job: Job, delay: float | None = None) -> None:
        _, task = self._queue(job.zone, job.scan_type)
        priority = HUEY_PRIORITY[job.priority]
        # SQLite storage: one enqueue at a time per process. Threads racing for queue.db's write lock
        # would sleep in SQLite's busy handler (milliseconds each) instead of waiting their turn.
        with self._enqueue_lock:
            storage = task.huey.storage
            if self._batch is not None and isinstance(storage, WalSqliteStorage) and id(storage) not in self._batched:
                self._batch.enter_context(storage.batch())
                self._batched.add(id(storage))
            if delay:
                task.schedule((job.to_dict(),), delay=delay, priority=priority)
            else:
                task(job.to_dict(), priority=priority, id=_task_id())

    def adding_task(self, op: Op, job: Job) -> Op | None:
        """``op`` that also puts ``job`` in its queue, as :meth:`enqueue` would, for the writer's
        connection where queue.db is attached (SQLite queue): the scan and its task are committed
        together, and no thread hop to an enqueue follows the commit. None with Redis, or for a
        message the JSON of a bulk write would not carry unchanged; then :meth:`enqueue` after the commit."""
        if self.backend.blocking or op.bulk is None:
            return None
        huey, task = self._queue(job.zone, job.scan_type)
        priority = HUEY_PRIORITY[job.priority]
        message = huey.serialize_task(task.s(job.to_dict(), priority=priority, id=_task_id()))
        if not message.isascii() or b"\x00" in message:
            return None
        params = (huey.storage.name, message.decode(), priority)
        return Op([*op.statements, (f"INSERT INTO {ATTACHED}.task (queue, data, priority)"
                                    " VALUES (?, CAST(? AS BLOB), ?)", params)],
                  bulk=Bulk((*op.bulk.statements, _insert_tasks(f"{ATTACHED}.task", len(op.bulk.row))),
                            (*op.bulk.row, *params)))

    @contextlib.contextmanager
    def batching(self) -> Iterator[None]:
        """Enqueues of this thread inside the block are committed together at its end (SQLite
        storage: one transaction per queue instead of one per job); the lock is held meanwhile."""
        with self._enqueue_lock:
            if self.backend.blocking or self._batch is not None:
                yield
                return
            with contextlib.ExitStack() as stack:
                self._batch = stack
                try:
                    yield
                finally:
                    self._batch = None
                    self._batched.clear()

    def pending_ids(self, zone: str, engine: str) -> set[str]:
        """Scan ids with a task waiting in one queue or its schedule."""
        huey, task = self._queue(zone, engine)
        ids = set()
        for pending in [*huey.pending(), *huey.scheduled()]:
            if isinstance(pending, Task) and pending.name == task.name and pending.args:
                job = pending.args[0]
                if isinstance(job, dict) and isinstance(job.get("scan_id"), str):
                    ids.add(job["scan_id"])
        return ids

    def _execute(self, job: dict[str, Any]) -> str:
        engine = self._engine_slots.get(str(job.get("scan_type")))
        if engine is None:  # a queue this process does not consume (a producer-only enqueue path)
            return self._run_job(job)
        with engine, self._slots:
            return self._run_job(job)

    def start(self, zones: Iterable[str], caps: dict[str, int], slots: int, max_delay: float) -> None:
        """Consume every (zone, engine) queue: ``caps`` maps the engines this host runs to their
        simultaneous-scan caps; ``slots`` bounds the scans of all engines together."""
        self._slots = threading.BoundedSemaphore(slots)
        self._engine_slots = {engine: threading.BoundedSemaphore(min(cap, slots)) for engine, cap in caps.items()}
        for zone in zones:
            for engine, cap in caps.items():
                huey, _ = self._queue(zone, engine)
                consumer = EmbeddedConsumer(huey, workers=min(cap, slots), worker_type="thread", periodic=False,
                                            initial_delay=0.05, backoff=1.5, max_delay=max_delay,
                                            check_worker_health=False)
                consumer.start()
                self._consumers.append(consumer)

    def stop(self, timeout: float) -> None:
        """Stop taking tasks and wait up to ``timeout`` for running ones (they watch a stop flag)."""
        for consumer in self._consumers:
            consumer.stop_flag.set()
        for consumer in self._consumers:
            consumer.shutdown_timeout = timeout
            consumer.stop(graceful=True)
        self._consumers.clear()
        for huey, _ in self._queues.values():
            storage = huey.storage
            if hasattr(storage, "close"):
                storage.close()
        self.backend.close()
