"""The scan queue: real Huey, embedded in the serve process with thread workers.

Huey pitfalls designed around (measured): ``Consumer.start()`` installs its own SIGTERM/SIGINT
handlers over uvicorn's, so the consumer here installs none; process workers would ``fork()`` a
process holding uvloop, threads and SQLite connections, so workers are threads; the default polling
backs off to 10 s, so the delay is capped near 0.25 s. Huey deletes a task when it dequeues it, so
the scan table, not the queue, says what must run (see the reconciler).
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from huey import Huey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from appliance.config import Config

log = logging.getLogger(__name__)
HUEY_PRIORITY = {"critical": 30, "high": 20, "normal": 10, "low": 0}
TASK_NAME = "run_scan"


class WalSqliteStorage(SqliteStorage):  # type: ignore[misc]  # huey ships no type information
    """Huey's SQLite storage in WAL mode with ``synchronous=NORMAL``, like the main database."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


class EmbeddedConsumer(Consumer):  # type: ignore[misc]  # huey ships no type information
    """A consumer that leaves signal handling to the ASGI server hosting it."""

    def _set_signal_handlers(self) -> None:
        return None


def make_huey(config: Config) -> Huey:
    return Huey("cix-scans", storage_class=WalSqliteStorage, filename=str(config.queue_path),
                journal_mode="wal", timeout=config["storage.busy_timeout_ms"] / 1000)


class ScanQueue:
    """Enqueues scans by id and priority; runs them with ``execute(scan_id)`` on consumer threads."""

    def __init__(self, huey: Huey, execute: Callable[[str], str]) -> None:
        self.huey = huey
        self._task = huey.task(name=TASK_NAME)(execute)
        self._consumer: EmbeddedConsumer | None = None

    def enqueue(self, scan_id: str, priority: str, delay: float | None = None) -> None:
        if delay:
            self._task.schedule((scan_id,), delay=delay, priority=HUEY_PRIORITY[priority])
        else:
            self._task(scan_id, priority=HUEY_PRIORITY[priority])

    def queued_ids(self) -> set[str]:
        """Scan ids with a task waiting in the queue or the schedule."""
        tasks = list(self.huey.pending()) + list(self.huey.scheduled())
        return {t.args[0] for t in tasks if t.name == self._task.name and t.args}

    def start(self, workers: int, max_delay: float) -> None:
        self._consumer = EmbeddedConsumer(self.huey, workers=workers, worker_type="thread",
                                          periodic=False, initial_delay=0.05, backoff=1.5,
                                          max_delay=max_delay, check_worker_health=False)
        self._consumer.start()

    def stop(self, timeout: float) -> None:
        """Stop taking tasks and wait up to ``timeout`` for running ones (they watch a stop flag)."""
        if self._consumer is not None:
            self._consumer.shutdown_timeout = timeout
            self._consumer.stop(graceful=True)
            self._consumer = None
        self.huey.storage.close()
