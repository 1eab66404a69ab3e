"""Everything a running appliance holds, built once per app and reached as ``app.state.services``.

The scan core's parts are assembled here and handed their collaborators explicitly: the task, the
intake, the reconciler and the queue never import this module.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from appliance.api.auth import Authenticator
from appliance.api.ratelimit import RateLimiter
from appliance.config import Config
from appliance.scanning import model
from appliance.scanning.dispatch import Dispatcher, Zone, zones_from
from appliance.scanning.intake import Intake, IntakeSettings
from appliance.scanning.job import Job
from appliance.scanning.queue import ATTACHED, Backend, ScanQueue
from appliance.scanning.reconciler import Reconciler, ReconcilerSettings
from appliance.scanning.reporter import LocalReporter
from appliance.scanning.task import ScanTask, TaskSettings
from appliance.signing.service import SigningService
from appliance.store import Reader, Writer, connect, migrate
from appliance.store.ops import Op
from appliance.store.rowcache import RowCache
from appliance.targets import Policy
from appliance.usage import CallLog
from appliance.webhooks.service import EventServices
from engines import Engine, build_registry
from engines.registry import probe_all

if TYPE_CHECKING:
    from appliance.metrics import Metrics

log = logging.getLogger(__name__)


def make_backend(config: Config) -> Backend:
    return Backend(config["queue.backend"], sqlite_path=str(config.queue_path), redis_url=config["queue.redis_url"],
                   busy_timeout=config["storage.busy_timeout_ms"] / 1000)


def engine_caps(config: Config, engines: dict[str, Any]) -> dict[str, int]:
    """The engines this host can run, each with its simultaneous-scan cap."""
    caps = config["engines.concurrency"]
    workers = config["queue.workers"]
    probe_all(engines)
    return {name: caps.get(name, workers) for name, engine in engines.items()
            if isinstance(engine, Engine) and engine.runnable()}


class Services:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.boot_id = f"boot-{uuid.uuid4()}"  # tells this process's leases from a dead one's
        busy = config["storage.busy_timeout_ms"]
        self.reader = Reader(config.db_path, busy)
        self.scan_defaults: dict[str, Any] = {}  # every scans column with its DEFAULT, read at start
        backend = make_backend(config)
        # The SQLite queue's file is attached to the writer's connection: see ScanQueue.adding_task.
        self.writer = Writer(config.db_path, busy,
                             attach=None if backend.blocking else {ATTACHED: config.queue_path})
        self.rows = RowCache(lambda: self.writer.commits,
                             lambda: int(self.reader.scalar("PRAGMA data_version")))
        self.limiter = RateLimiter()
        self.calls = CallLog()
        self.auth = Authenticator(self.reader, self.limiter, config["server.trusted_proxies"],
                                  config["ratelimit.failed_auth_per_minute"])
        self.engines = build_registry(config["engines.paths"], config.engine_data_dir,
                                      config.engine_settings())
        self.dispatcher = Dispatcher(self.policy, self.engines, self.zones)
        self.queue = ScanQueue(backend, self._run_job)
        self.intake = Intake(self.reader, self.writer, self.dispatcher, self.queue.enqueue, IntakeSettings(
            config["scans.lease_seconds"], config["scans.max_running_per_tenant"]))
        self.reconciler = Reconciler(self.reader, self.writer, self.dispatcher, self.queue.enqueue,
                                     self.queue.pending_ids, ReconcilerSettings(
                                         self.boot_id, config["scans.max_queued_seconds"],
                                         config["scans.kill_grace_seconds"]))
        self.stopping = threading.Event()  # the server is shutting down: running scans are handed back
        self._task: ScanTask | None = None
        self.events = EventServices(self)  # webhooks, callbacks, quota, retention
        self.signing = SigningService(self)  # signing keys, signed reports, audit checkpoints
        self.metrics: Metrics | None = None
        if config["metrics.enabled"]:
            from appliance.metrics import Metrics  # prometheus_client: only when metrics are on

            self.metrics = Metrics(self.reader, list(self.engines))
            self.events.dispatcher.on_events = self.metrics.scan_events
            self.events.deliveries.on_attempt = self.metrics.delivery
        self._policies: dict[str, Policy] = {}
        self._quotas: dict[str, int | None] = {}  # tenant -> its own scan_quota column
        self._zones: list[Zone] | None = None
        self._epoch: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._enqueuer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cix-enqueue")
        self._jobs: list[tuple[Job, asyncio.Future[None]]] = []
        self._enqueuing = False
        self._enqueue_task: asyncio.Task[None] | None = None

    # -- caches invalidated by the epoch counter ---------------------------------------------------
    def policy(self, tenant_id: str) -> Policy:
        """The tenant's allow/deny lists plus the global denylist (which always wins)."""
        policy = self._policies.get(tenant_id)
        if policy is None:
            rows = self.reader.all("SELECT kind, entry FROM target_policy WHERE tenant_id = ?", (tenant_id,))
            policy = Policy.build([r["entry"] for r in rows if r["kind"] == "allow"],
                                  [r["entry"] for r in rows if r["kind"] == "deny"]
                                  + list(self.config["targets.denylist"]))
            self._policies[tenant_id] = policy
        return policy

    def tenant_quota(self, tenant_id: str) -> int | None:
        """The tenant's own monthly scan quota (None: the config's applies). Only the CLI changes it,
        and it bumps the epoch: read once per tenant and epoch, not once per submitted scan."""
        if tenant_id not in self._quotas:
            self._quotas[tenant_id] = self.reader.scalar("SELECT scan_quota FROM tenants WHERE id = ?",
                                                         (tenant_id,))
        return self._quotas[tenant_id]

    def zones(self) -> list[Zone]:
        """The zones of every worker not revoked."""
        if self._zones is None:
            rows = self.reader.all("SELECT zones FROM workers WHERE revoked_at IS NULL")
            self._zones = zones_from(z for r in rows for z in json.loads(r["zones"]))
        return self._zones

    def _check_epoch(self) -> None:
        """The CLI bumps ``meta.epoch`` on every key, tenant, target or worker change it commits; any
        commit by another process empties the row cache."""
        self.rows.check_external()
        epoch = self.reader.scalar("SELECT value FROM meta WHERE key = 'epoch'")
        if epoch != self._epoch:
            self._epoch = epoch
            self.auth.invalidate()
            self._policies.clear()
            self._quotas.clear()
            self._zones = None

    async def commit_keys(self, *ops: Op) -> list[int]:
        results = await self.writer.write(*ops)
        self._check_epoch()
        return results

    def _run_job(self, job: dict[str, Any]) -> str:
        assert self._task is not None, "a queue consumer runs only after start()"
        return self._task(job)

    def enqueue(self, job: Job) -> None:
        self.queue.enqueue(job)

    async def enqueue_async(self, job: Job) -> None:
        """Enqueue on the queue's own thread: Huey's storage blocks (SQLite lock, Redis round trip).
        Jobs submitted while that thread is busy go over together, one hop for the lot (a hop costs
        more than an enqueue when the event loop is busy). Raises what the enqueue raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.append((job, done))
        if len(self._jobs) == 1 and not self._enqueuing:
            self._enqueuing = True
            self._enqueue_task = loop.create_task(self._enqueue_jobs())
        await done

    async def _enqueue_jobs(self) -> None:
        try:
            while self._jobs:
                jobs, self._jobs = self._jobs, []
                errors = await asyncio.get_running_loop().run_in_executor(
                    self._enqueuer, self._enqueue_each, [job for job, _ in jobs])
                for (_, done), error in zip(jobs, errors, strict=True):
                    if done.done():
                        continue
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
        finally:
            self._enqueuing = False

    def _enqueue_each(self, jobs: list[Job]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        try:
            with self.queue.batching():  # one queue.db transaction for the lot
                for job in jobs:
                    try:
                        self.queue.enqueue(job)
                        errors.append(None)
                    except Exception as exc:  # that job's caller gets it; the others are queued
                        errors.append(exc)
        except Exception as exc:  # the commit failed: none is queued (the reconciler queues them)
            return [exc] * len(jobs)
        return errors

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        conn = connect(self.config.db_path, self.config["storage.busy_timeout_ms"])
        try:
            migrate(conn)
        finally:
            conn.close()
        self.limiter.load(tuple(r) for r in self.reader.all(
            "SELECT subject, window, window_start, count FROM rate_counters"))
        self._check_epoch()
        self.scan_defaults = model.new_scan_row(self.reader)
        await self.signing.start()  # before anything runs: a broken key store stops the start here
        self.queue.backend.prepare()
        await self.writer.start()
        for drain in (self.limiter.drain, self.auth.drain, self.calls.drain):
            self.writer.add_source(drain)
        self.config.scans_dir.mkdir(mode=0o700, exist_ok=True)
        await self.events.start()
        await self.reconciler.run_once(startup=True)
        workers = self.config["queue.workers"]
        if workers > 0:
            reporter = LocalReporter(self.intake, asyncio.get_running_loop(), self.boot_id)
            self._task = ScanTask(self.engines, reporter, self.config.scans_dir, TaskSettings(
                kill_grace=self.config["scans.kill_grace_seconds"], output_cap=self.config["scans.output_cap_bytes"],
                tick_seconds=min(1.0, self.config["scans.heartbeat_seconds"])), self.stopping)
            caps = await asyncio.to_thread(engine_caps, self.config, self.engines)
            self.queue.start([""], caps, workers, self.config["queue.max_delay_seconds"])
        self._tasks = [asyncio.create_task(self._every(0.5, self._check_epoch), name="epoch"),
                       asyncio.create_task(self._every(self.config["scans.reconcile_interval_seconds"],
                                                       self.reconciler.run_once), name="reconciler")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.stopping.set()
        timeout = self.config["scans.kill_grace_seconds"] + 10
        await asyncio.to_thread(self.queue.stop, timeout)
        self._enqueuer.shutdown(wait=True)
        await self.events.stop()
        await self.signing.stop()  # the last checkpoint covers this run's final audit rows
        await self.writer.stop()
        self.reader.close()

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Awaitable[object] | object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = job()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__name__", job))
