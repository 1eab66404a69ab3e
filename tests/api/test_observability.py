"""Prometheus metrics (``GET /metrics``) and the logs: access lines, scan ids on scan lines, JSON."""
from __future__ import annotations

import io
import json
import logging
import threading
import time

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance import logs
from appliance.api.middleware import PRINCIPAL
from appliance.scanning import lifecycle
from tests.conftest import make_key, serve_in_process
from tests.helpers import await_for, free_port
from tests.results_helpers import add_scan, finding
from tests.scanning.test_task import FakeEngine, FakeReporter, job

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_are_off_by_default(client):
    response = await client.get("/metrics")
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"


async def test_metrics_count_requests_refusals_scans_and_deliveries(data_dir, admin_key):
    limited = make_key(data_dir, "--name", "slow", "--rate-minute", "1")
    async with serve_in_process(data_dir, metrics__enabled=True, queue__workers=0,
                                webhooks__allowed_networks=["127.0.0.0/8"]) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        queued = await add_scan(services, [], status="queued")
        await services.writer.write(lifecycle.submit({
            "id": "00000000-0000-4000-8000-000000000001", "tenant_id": services.reader.scalar("SELECT id FROM tenants"),
            "scan_type": "nmap", "target": "127.0.0.1", "target_type": "ip", "status": "queued", "priority": "high",
            "timeout": 60, "created_at": 1.0, "queued_at": 1.0}))
        running = await add_scan(services, [finding("a")], status="running")
        await add_scan(services, [finding("b")])
        assert (await c.get(f"/api/v1/scans/{queued}")).status_code == 200
        assert (await c.get("/api/v1/scans", headers={"X-API-Key": "cix_sk_" + "x" * 40})).status_code == 401
        assert (await c.get("/api/v1/scans", headers={"X-API-Key": ""})).status_code == 401
        if time.time() % 60 > 50:  # both requests of the 1-a-minute key must fall in one window
            await anyio.sleep(61 - time.time() % 60)
        assert (await c.get("/api/v1/engines", headers={"X-API-Key": limited["key"]})).status_code == 200
        assert (await c.get("/api/v1/engines", headers={"X-API-Key": limited["key"]})).status_code == 429
        assert (await c.get(f"/no/such/{queued}")).status_code == 404
        # a running scan ends: the outbox row is counted once, with its duration
        await services.writer.write(lifecycle.end(running, "cancelled"))
        hook = (await c.post("/api/v1/webhooks", json={"name": "h", "url": f"https://127.0.0.1:{free_port()}/"}))
        assert hook.status_code == 201, hook.text
        tested = (await c.post(f"/api/v1/webhooks/{hook.json()['data']['id']}/test")).json()["data"]
        assert tested["status"] == "failed"  # nothing listens there

        async def scrape() -> dict | None:
            text = (await c.get("/metrics")).text
            got = samples(text)
            return got if value(got, "cix_scans_finished_total", scan_type="nmap", status="cancelled") else None
        metrics = await await_for(scrape, 20, what="the cancel to be counted")
        response = await c.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert queued not in text and running not in text and admin_key not in text and "/no/such" not in text
    assert value(metrics, "cix_http_requests_total", method="GET", route="/api/v1/scans/{scan_id}", status="200") == 1
    assert value(metrics, "cix_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert value(metrics, "cix_http_request_duration_seconds_count", method="GET", route="/api/v1/engines") == 2
    assert value(metrics, "cix_auth_failures_total", code="INVALID_API_KEY") == 1
    assert value(metrics, "cix_auth_failures_total", code="MISSING_API_KEY") == 1
    assert value(metrics, "cix_rate_limit_refusals_total", kind="key") == 1
    assert value(metrics, "cix_queue_depth", priority="high") == 1
    assert value(metrics, "cix_queue_depth", priority="normal") == 1
    assert value(metrics, "cix_queue_depth", priority="low") == 0
    assert value(metrics, "cix_scans", scan_type="nmap", status="completed") == 1
    assert value(metrics, "cix_scans", scan_type="nmap", status="cancelled") == 1
    assert value(metrics, "cix_scans_running", scan_type="nmap") == 0
    assert value(metrics, "cix_scan_duration_seconds_count", scan_type="nmap", status="cancelled") == 1
    assert value(metrics, "cix_webhook_deliveries_total", outcome="failed") == 1


async def test_running_scans_per_engine(data_dir, admin_key):
    async with serve_in_process(data_dir, metrics__enabled=True, queue__workers=0) as c:
        await add_scan(c.app.state.services, [], status="running")
        metrics = samples((await c.get("/metrics")).text)
    assert value(metrics, "cix_scans_running", scan_type="nmap") == 1
    assert value(metrics, "cix_scans_running", scan_type="zap") == 0


async def test_metrics_allowed_ips(data_dir, admin_key):
    async with serve_in_process(data_dir, metrics__enabled=True, metrics__allowed_ips=["10.0.0.0/8"]) as c:
        response = await c.get("/metrics")
        assert response.status_code == 403 and response.json()["code"] == "IP_NOT_ALLOWED"
    async with serve_in_process(data_dir, metrics__enabled=True, metrics__allowed_ips=["127.0.0.1/32"]) as c:
        assert (await c.get("/metrics")).status_code == 200


async def test_one_access_line_per_request_with_route_template_key_prefix_and_request_id(client, caplog):
    services = client.app.state.services
    scan_id = await add_scan(services, [])
    key_id = services.reader.scalar("SELECT id FROM api_keys")
    with caplog.at_level(logging.INFO, logger="cix.access"):
        await client.get(f"/api/v1/scans/{scan_id}", headers={"X-Request-Id": "req-42"})
        await client.get("/api/v1/scans", headers={"X-API-Key": "nope"})
    lines = [r for r in caplog.records if r.name == "cix.access"]
    assert len(lines) == 2
    first, second = (r.cix for r in lines)
    assert first["route"] == "/api/v1/scans/{scan_id}" and first["status"] == 200 and first["method"] == "GET"
    assert first["keyId"] == key_id[:12] and first["requestId"] == "req-42" and first["durationMs"] >= 0
    assert scan_id not in lines[0].getMessage()
    assert second["status"] == 401 and second["keyId"] is None


async def test_the_access_log_can_be_turned_off(data_dir, admin_key, caplog):
    async with serve_in_process(data_dir, logging__access_log=False) as c:
        with caplog.at_level(logging.INFO, logger="cix.access"):
            await c.get("/health")
    assert [r for r in caplog.records if r.name == "cix.access"] == []


def _capture(fmt: str) -> tuple[io.StringIO, logging.Handler]:
    logs.configure("info", fmt)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, logs._HANDLER_MARK, False))
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    return stream, handler


def test_scan_lines_carry_the_scan_id_in_text_and_json(make_task_with_logs):
    for fmt in ("json", "text"):
        stream, handler = _capture(fmt)
        try:
            reporter = FakeReporter()
            assert make_task_with_logs(reporter)(job(count=1)) == "completed"
            logging.getLogger("appliance.scanning.runner").info("a line from another module")  # not in a scan
            handler.flush()
            text = stream.getvalue()
        finally:
            logging.getLogger().removeHandler(handler)
        lines = text.strip().splitlines()
        if fmt == "json":
            records = [json.loads(line) for line in lines]
            start = next(r for r in records if r.get("event") == "scan.start")
            end = next(r for r in records if r.get("event") == "scan.end")
            assert start["scanId"] == end["scanId"] == "scan-1" and start["engine"] == "fake"
            assert start["target"] == "127.0.0.1" and end["status"] == "completed" and end["durationSeconds"] >= 0
            assert "scanId" not in records[-1]
        else:
            assert any("scanId=scan-1" in line and "event=scan.end" in line and "status=completed" in line
                       for line in lines)
            assert "scanId" not in lines[-1]


def test_huey_task_lines_are_quiet_and_configure_installs_one_handler():
    logs.configure("debug", "text")
    logs.configure("info", "json")
    try:
        ours = [h for h in logging.getLogger().handlers if getattr(h, logs._HANDLER_MARK, False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert not logging.getLogger("huey").isEnabledFor(logging.INFO)
        assert logging.getLogger("huey").isEnabledFor(logging.WARNING)
    finally:
        for handler in ours:
            logging.getLogger().removeHandler(handler)
    with pytest.raises(ValueError):
        logs.configure("info", "xml")


def test_scan_context_is_per_thread():
    seen: list[str | None] = []
    with logs.scan_context("outer"):
        thread = threading.Thread(target=lambda: seen.append(logs.SCAN_ID.get()))
        thread.start()
        thread.join()
        seen.append(logs.SCAN_ID.get())
    assert seen == [None, "outer"] and logs.SCAN_ID.get() is None


@pytest.fixture
def make_task_with_logs(tmp_path):
    from appliance.scanning.task import ScanTask, TaskSettings

    def make(reporter: FakeReporter) -> ScanTask:
        return ScanTask({"fake": FakeEngine()}, reporter, tmp_path / "scans", TaskSettings(tick_seconds=0.1),
                        threading.Event())
    return make


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_lines_written_directly_are_the_lines_the_logging_path_writes(fmt, monkeypatch):
    stream, handler = _capture(fmt)
    monkeypatch.setattr(logging.root, "handlers", [handler])  # pytest's own handlers off: the direct path
    monkeypatch.setattr(time, "time", lambda: 1764400000.25)
    principal = type("Grant", (), {"id": "key-0123456789abcdef"})()
    scope = {"method": "GET", "route": type("R", (), {"path": "/api/v1/scans/{scan_id}"})(), "root_path": "",
             PRINCIPAL: principal, "cix.client_ip": "127.0.0.1"}
    try:
        with logs.scan_context("scan-9"):
            assert logs._sole_handler() is handler
            logs.log_request(scope, 200, 0.0123, "req-1")
            handler.flush()
            direct = stream.getvalue()
            stream.truncate(0)
            stream.seek(0)
            logs.access_log.addHandler(logging.NullHandler())  # a handler of its own: the logging path
            try:
                logs.log_request(scope, 200, 0.0123, "req-1")
            finally:
                logs.access_log.handlers.clear()
            assert logs._sole_handler() is handler
            handler.flush()
            via_logging = stream.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)
    assert direct == via_logging and direct.count("\n") == 1
    assert "scan-9" in direct and "key-01234567" in direct and "key-012345678" not in direct


def test_log_lines_are_batched_but_warnings_written_at_once():
    stream, handler = _capture("text")
    try:
        handler.flush()
        stream.truncate(0)
        stream.seek(0)
        logging.getLogger("appliance.test").info("first")
        assert stream.getvalue() == ""  # waits for the batch
        logging.getLogger("appliance.test").warning("second")
        lines = stream.getvalue().splitlines()  # the warning, and every line before it
        assert [line.rsplit(": ", 1)[1] for line in lines] == ["first", "second"]
        logging.getLogger("appliance.test").info("third")
        deadline = time.monotonic() + 5
        while "third" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "third" in stream.getvalue()  # within the batch delay, nothing else logged
    finally:
        logging.getLogger().removeHandler(handler)
