"""Everything event-related a running appliance holds: the outbox dispatcher, the delivery loop,
the egress policy, secrets, the monthly quota check, retention and failed-auth audit rows.
Built once by :class:`appliance.services.Services` as ``services.events``."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from appliance import clock, usage
from appliance.audit import audit_op
from appliance.errors import ValidationError
from appliance.retention import Pruner
from appliance.scanning.model import scan_json
from appliance.store.ops import Op
from appliance.webhooks.delivery import DeliveryEngine, client_context
from appliance.webhooks.dispatcher import EventDispatcher
from appliance.webhooks.egress import Destination, EgressError, EgressPolicy
from appliance.webhooks.secretbox import SecretBox

if TYPE_CHECKING:
    from appliance.services import Services

log = logging.getLogger(__name__)
DISPATCH_INTERVAL = 0.2


class EventServices:
    def __init__(self, services: Services) -> None:
        self.s = services
        cfg = services.config
        self.box = SecretBox.open(cfg.data_dir)  # creates the key on the first start of an older data dir
        self.egress = EgressPolicy(cfg["webhooks.allowed_networks"], cfg["webhooks.denied_networks"])
        schedule = cfg["webhooks.retry_schedule"]
        # Without webhooks.ca_file the context (the system's CA store, ~30 ms) is made at the first
        # delivery; a configured one is read now, so that a bad file still stops the start.
        ca_file = cfg["webhooks.ca_file"]
        self.deliveries = DeliveryEngine(services.reader, services.writer, self.box, self.egress, schedule,
                                         client_context(ca_file) if ca_file else None,
                                         cfg["webhooks.concurrency"], cfg["webhooks.tenant_concurrency"])
        self.dispatcher = EventDispatcher(services.reader, services.writer, self.box, len(schedule), scan_json,
                                          self.deliveries.wake)
        self.pruner = Pruner(cfg, services.reader, services.writer)
        self._tasks: list[asyncio.Task[None]] = []
        services.auth.on_lockout = self._lockout

    async def start(self) -> None:
        await self.deliveries.start()
        self._tasks = [
            asyncio.create_task(_every(DISPATCH_INTERVAL, self.dispatcher.run_once), name="event-dispatcher"),
            asyncio.create_task(_every(self.s.config["retention.interval_seconds"], self.pruner.run_once,
                                       first=5.0), name="retention"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deliveries.stop()

    # -- submission-time checks ------------------------------------------------------------------
    async def vet_url(self, field: str, url: str) -> Destination:
        """The egress policy on a webhook URL or callbackUrl; 400 ``VALIDATION_ERROR`` naming ``field``."""
        try:
            return await asyncio.to_thread(self.egress.vet, url)
        except EgressError as exc:
            raise ValidationError(field, str(exc)) from None

    async def admit(self, row: dict[str, Any], insert: Op) -> Op:
        """A scan's insert op after the event checks: its ``callbackUrl`` passes the egress policy,
        and the insert is guarded by the tenant's monthly quota (the op then reports 0 when over)."""
        if row.get("callback_url"):
            await self.vet_url("callbackUrl", row["callback_url"])
        limit = self.quota_limit(row["tenant_id"])
        if limit is None:
            return insert
        if usage.scans_this_month(self.s.reader, row["tenant_id"], clock.now()) >= limit:
            raise usage.quota_exceeded(limit, clock.now())
        return Op([usage.quota_guard(row["tenant_id"], limit, clock.now()), *insert.statements],
                  guarded=True, many={i + 1: rows for i, rows in insert.many.items()})

    def quota_limit(self, tenant_id: str) -> int | None:
        return usage.quota_limit(self.s.tenant_quota(tenant_id), self.s.config["quotas.monthly_scans"])

    def quota_refused(self, tenant_id: str) -> Exception:
        """The error for an insert the quota guard stopped (a race lost at the last scan)."""
        return usage.quota_exceeded(self.quota_limit(tenant_id) or 0, clock.now())

    # -- failed-authentication lockouts ------------------------------------------------------------
    def _lockout(self, ip: str) -> None:
        self.s.writer.buffer_threadsafe(audit_op(None, "system", "auth.lockout", "ip", ip,
                                                 {"reason": "too many failed authentications"}))


async def _every(seconds: float, job: Callable[[], Awaitable[Any]], first: float | None = None) -> None:
    await asyncio.sleep(seconds if first is None else first)
    while True:
        try:
            await job()
        except Exception:
            log.exception("periodic job %s failed", getattr(job, "__qualname__", job))
        await asyncio.sleep(seconds)
