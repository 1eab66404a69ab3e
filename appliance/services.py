"""Everything a running appliance holds, built once per app and reached as ``app.state.services``."""
from __future__ import annotations

import asyncio
import logging
import uuid

from appliance.api.auth import Authenticator
from appliance.api.ratelimit import RateLimiter
from appliance.config import Config
from appliance.scanning.queue import ScanQueue, make_huey
from appliance.scanning.reconciler import Reconciler
from appliance.scanning.worker import ScanWorker
from appliance.store import Reader, Writer, connect, migrate
from appliance.store.ops import Op
from appliance.targets import Policy
from appliance.usage import CallLog
from engines import build_registry

log = logging.getLogger(__name__)


class Services:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.boot_id = f"boot-{uuid.uuid4()}"  # tells this process's scans from a dead one's
        busy = config["storage.busy_timeout_ms"]
        self.reader = Reader(config.db_path, busy)
        self.writer = Writer(config.db_path, busy)
        self.limiter = RateLimiter()
        self.calls = CallLog()
        self.auth = Authenticator(self.reader, self.limiter, config["server.trusted_proxies"],
                                  config["ratelimit.failed_auth_per_minute"])
        self.engines = build_registry(config["engines.paths"], config.engine_data_dir, config.engine_settings())
        self.worker = ScanWorker(self)
        self.queue = ScanQueue(make_huey(config), self.worker.execute)
        self.reconciler = Reconciler(self)
        self._policies: dict[str, Policy] = {}
        self._epoch: str | None = None
        self._tasks: list[asyncio.Task] = []

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

    def _check_epoch(self) -> None:
        """The CLI bumps ``meta.epoch`` on every key, tenant or target change it commits."""
        epoch = self.reader.scalar("SELECT value FROM meta WHERE key = 'epoch'")
        if epoch != self._epoch:
            self._epoch = epoch
            self.auth.invalidate()
            self._policies.clear()

    async def commit_keys(self, *ops: Op) -> None:
        await self.writer.write(*ops)
        self._check_epoch()

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
        await self.writer.start()
        for drain in (self.limiter.drain, self.auth.drain, self.calls.drain):
            self.writer.add_source(drain)
        self.config.scans_dir.mkdir(mode=0o700, exist_ok=True)
        await self.reconciler.run_once(startup=True)
        self.queue.start(self.config["queue.workers"], self.config["queue.max_delay_seconds"])
        self._tasks = [asyncio.create_task(self._every(0.5, self._check_epoch), name="epoch"),
                       asyncio.create_task(self._every(self.config["scans.reconcile_interval_seconds"],
                                                       self.reconciler.run_once), name="reconciler")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.worker.stopping.set()
        timeout = self.config["scans.kill_grace_seconds"] + 10
        await asyncio.to_thread(self.queue.stop, timeout)
        await self.writer.stop()
        self.reader.close()

    @staticmethod
    async def _every(seconds: float, job) -> None:  # type: ignore[no-untyped-def]
        while True:
            await asyncio.sleep(seconds)
            try:
                result = job()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__name__", job))
