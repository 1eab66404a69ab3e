"""Prometheus metrics (``GET /metrics``, off unless ``metrics.enabled``; the route is in
:mod:`appliance.api.metrics`, so that prometheus_client is loaded only when metrics are on).

Labels never carry ids, keys or paths: routes are templates (``/api/v1/scans/{scan_id}``), scans are
counted by scan type, status and priority. What the scans table knows (scans by type and status,
queue depth by priority, running scans per engine) is read from it at scrape time, so the figures
hold for every queue backend and survive restarts; what happens (requests, refusals, deliveries,
finished scans and their durations) is counted as it happens, in this process.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.api.middleware import ERROR_CODE, PRINCIPAL
from appliance.logs import route_template
from appliance.scanning.lifecycle import STATUSES
from appliance.scanning.model import PRIORITIES
from appliance.store import Reader

AUTH_FAILURES = ("MISSING_API_KEY", "INVALID_API_KEY", "KEY_EXPIRED", "KEY_REVOKED", "KEY_SUSPENDED")
FINAL = {"scan.completed": "completed", "scan.failed": "failed", "scan.cancelled": "cancelled"}
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCAN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class _ScanTable(Collector):
    """Gauges read from the scans table when scraped."""

    def __init__(self, reader: Reader, scan_types: Sequence[str]) -> None:
        self._reader = reader
        self._types = tuple(scan_types)

    def collect(self) -> Iterable[Metric]:
        scans = GaugeMetricFamily("cix_scans", "Scans in the database by scan type and status.",
                                  labels=["scan_type", "status"])
        counts = {(r[0], r[1]): r[2] for r in self._reader.all(
            "SELECT scan_type, status, count(*) FROM scans GROUP BY scan_type, status")}
        for scan_type in sorted(set(self._types) | {t for t, _ in counts}):
            for status in STATUSES:
                scans.add_metric([scan_type, status], counts.get((scan_type, status), 0))
        yield scans
        queued: dict[str, int] = {r[0]: r[1] for r in self._reader.all(
            "SELECT priority, count(*) FROM scans WHERE status = 'queued' GROUP BY priority")}
        depth = GaugeMetricFamily("cix_queue_depth", "Queued scans by priority.", labels=["priority"])
        for priority in PRIORITIES:
            depth.add_metric([priority], queued.get(priority, 0))
        yield depth
        running: dict[str, int] = {r[0]: r[1] for r in self._reader.all(
            "SELECT scan_type, count(*) FROM scans WHERE status = 'running' GROUP BY scan_type")}
        engines = GaugeMetricFamily("cix_scans_running", "Running scans per engine.", labels=["scan_type"])
        for scan_type in sorted(set(self._types) | set(running)):
            engines.add_metric([scan_type], running.get(scan_type, 0))
        yield engines


class Metrics:
    def __init__(self, reader: Reader, scan_types: Sequence[str]) -> None:
        self._reader = reader
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cix_http_requests", "HTTP requests by method, route template and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("cix_http_request_duration_seconds", "Time to answer a request, by route template.",
                                 ["method", "route"], buckets=REQUEST_BUCKETS, registry=r)
        self.auth_failures = Counter("cix_auth_failures", "Failed authentications by error code.", ["code"],
                                     registry=r)
        self.rate_limited = Counter("cix_rate_limit_refusals",
                                    "429 RATE_LIMIT_EXCEEDED answers: a key's window (key) or an address's "
                                    "failed authentications (address).", ["kind"], registry=r)
        self.deliveries = Counter("cix_webhook_deliveries", "Webhook and callback delivery attempts by outcome "
                                  "(succeeded, retrying, failed: no retry left).", ["outcome"], registry=r)
        self.finished = Counter("cix_scans_finished", "Scans that reached a final status.",
                                ["scan_type", "status"], registry=r)
        self.durations = Histogram("cix_scan_duration_seconds", "From start to end of scans that ran.",
                                   ["scan_type", "status"], buckets=SCAN_BUCKETS, registry=r)
        r.register(_ScanTable(reader, scan_types))

    # -- what happens --------------------------------------------------------------------------
    def observe_request(self, scope: Mapping[str, Any], status: int, seconds: float, request_id: str) -> None:
        method, route = str(scope.get("method")), route_template(scope)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        code = scope.get(ERROR_CODE)
        if code in AUTH_FAILURES:
            self.auth_failures.labels(code).inc()
        elif code == "RATE_LIMIT_EXCEEDED":
            self.rate_limited.labels("key" if scope.get(PRINCIPAL) is not None else "address").inc()

    def delivery(self, status: str) -> None:
        """A delivery attempt was recorded; ``status`` is the delivery's status after it."""
        self.deliveries.labels({"pending": "retrying"}.get(status, status)).inc()

    def scan_events(self, events: Sequence[sqlite3.Row]) -> None:
        """Outbox rows just dispatched (each is seen once): count final ones, time the scans that ran."""
        final = [e for e in events if e["event"] in FINAL]
        if not final:
            return
        marks = ",".join("?" * len(final))
        scans = {r["id"]: r for r in self._reader.all(
            f"SELECT id, scan_type, started_at, completed_at FROM scans WHERE id IN ({marks})",
            [e["scan_id"] for e in final])}
        for event in final:
            scan = scans.get(event["scan_id"])
            if scan is None:
                continue
            status = FINAL[event["event"]]
            self.finished.labels(scan["scan_type"], status).inc()
            if scan["started_at"] is not None and scan["completed_at"] is not None:
                self.durations.labels(scan["scan_type"], status).observe(
                    max(0.0, scan["completed_at"] - scan["started_at"]))

    def render(self) -> bytes:
        return generate_latest(self.registry)
