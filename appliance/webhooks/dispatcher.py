"""Turns ``scan_events`` outbox rows into delivery rows.

The cursor (``meta.events_cursor``, the last outbox id handled) moves in the same transaction that
inserts the deliveries, guarded by compare-and-set on its old value: every transition is turned into
deliveries exactly once, each with its own ``dlv-`` id from then on, whatever crashes in between.
Unique indexes on (event, webhook) and (event) for callbacks back this up.

Delivered: ``scan.queued``, ``scan.started``, ``scan.completed``, ``scan.failed``, ``scan.cancelled``
to the tenant's active webhooks subscribed to them; the final three also to the scan's
``callbackUrl``. ``scan.progress`` and ``scan.requeued`` are internal and skipped.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from appliance import clock
from appliance.store import Reader, Writer
from appliance.store.ops import Op, Statement
from appliance.webhooks.secretbox import SecretBox, new_secret
from appliance.webhooks.store import EVENTS, insert_delivery, payload

FINAL = ("scan.completed", "scan.failed", "scan.cancelled")
BATCH = 500


class EventDispatcher:
    def __init__(self, reader: Reader, writer: Writer, box: SecretBox, retries: int,
                 scan_json: Callable[[sqlite3.Row], dict[str, Any]], on_new: Callable[[], None]) -> None:
        self._reader = reader
        self._writer = writer
        self._box = box
        self._retries = retries
        self._scan_json = scan_json
        self._on_new = on_new
        # Called with each batch of outbox rows once the batch is dispatched (metrics): every row once.
        self.on_events: Callable[[list[sqlite3.Row]], None] | None = None

    def cursor(self) -> int:
        return int(self._reader.scalar("SELECT value FROM meta WHERE key = 'events_cursor'") or 0)

    async def run_once(self) -> int:
        """Handle the next batch of outbox rows; returns how many deliveries it created."""
        cursor = self.cursor()
        events = self._reader.all("SELECT * FROM scan_events WHERE id > ? ORDER BY id LIMIT ?", (cursor, BATCH))
        if not events:
            return 0
        statements: list[Statement] = [("UPDATE meta SET value = ? WHERE key = 'events_cursor' AND value = ?",
                                        (str(events[-1]["id"]), str(cursor)))]
        hooks: dict[str, list[sqlite3.Row]] = {}
        created = 0
        for event in events:
            if event["event"] not in EVENTS:
                continue
            tenant = event["tenant_id"]
            if tenant not in hooks:
                hooks[tenant] = self._reader.all(
                    "SELECT id, events FROM webhooks WHERE tenant_id = ? AND is_active = 1 ORDER BY created_at",
                    (tenant,))
            subscribed = [h["id"] for h in hooks[tenant] if event["event"] in json.loads(h["events"])]
            if not subscribed and event["event"] not in FINAL:
                continue  # nobody to tell (only a final event can have a callback): the scan is not read
            scan = self._reader.one("SELECT * FROM scans WHERE id = ?", (event["scan_id"],))
            if scan is None:
                continue
            callback = scan["callback_url"] if event["event"] in FINAL else None
            if not subscribed and not callback:
                continue
            # The scan as it is now, with the status this event announced.
            data = {"scan": {**self._scan_json(scan), "status": event["status"]}}
            now = clock.now()
            for hook_id in subscribed:
                statements.append(self._delivery(event, data, now, webhook_id=hook_id))
            if callback:
                # A tenant's callback secret is made the first time it is needed.
                statements.append(("UPDATE tenants SET callback_secret = ? WHERE id = ? AND callback_secret IS NULL",
                                   (self._box.seal(new_secret(), tenant), tenant)))
                statements.append(self._delivery(event, data, now, callback_url=callback))
            created += len(subscribed) + bool(callback)
        applied = (await self._writer.write(Op(statements, guarded=True)))[0]
        if applied and self.on_events is not None:
            self.on_events(events)
        if applied and created:
            self._on_new()
        return created if applied else 0

    def _delivery(self, event: sqlite3.Row, data: dict[str, Any], now: float, webhook_id: str | None = None,
                  callback_url: str | None = None) -> Statement:
        delivery_id = clock.new_id("dlv-")
        body = payload(delivery_id, event["event"], event["tenant_id"], data, event["created_at"])
        return insert_delivery(delivery_id, event["tenant_id"], event["event"], body, now, self._retries,
                               webhook_id=webhook_id, callback_url=callback_url, event_id=event["id"],
                               scan_id=event["scan_id"])
