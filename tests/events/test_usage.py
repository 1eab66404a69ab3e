"""``/usage`` figures against a known sequence of calls and scans; the monthly quota."""
from __future__ import annotations

import itertools
import json
import math
import time
from datetime import UTC, datetime

import pytest

from appliance import clock
from appliance.scanning import lifecycle
from appliance.store.ops import Op
from tests.conftest import make_key, run_cli_async
from tests.events.common import events_app, scan_body, services, tenant_id

pytestmark = pytest.mark.anyio


async def flush(client) -> None:
    """The call log is buffered: push it through the writer and wait for it to commit."""
    writer = services(client).writer
    writer.flush()
    await writer.write()


async def scan_row(client, scan_type: str, created_at: float) -> str:
    row: dict[str, object] = {
           "id": clock.new_id(), "tenant_id": tenant_id(client), "scan_type": scan_type, "target": "127.0.0.1",
           "target_type": "ip", "status": "queued", "priority": "normal", "timeout": 600,
           "created_at": created_at, "queued_at": created_at}
    await services(client).writer.write(lifecycle.submit(row))
    return str(row["id"])


async def finish(client, scan_id: str, status: str, seconds: float | None, findings: int = 0) -> None:
    writer = services(client).writer
    lease = lifecycle.new_lease()
    if seconds is None:
        assert (await writer.write(lifecycle.end(scan_id, status, from_statuses=("queued",))))[0]
        return
    await writer.write(lifecycle.claim(scan_id, lease, "t", "t", 60, []))
    for n in range(findings):
        await writer.write(Op([("INSERT INTO findings (scan_id, seq, severity_rank, severity, fingerprint, body)"
                                " VALUES (?,?,?,?,?,?)", (scan_id, n, 1, "high", f"fp{n}", "{}"))]))
    await writer.write(lifecycle.finish(scan_id, lease, status, "ENGINE_ERROR" if status == "failed" else None))
    await writer.write(Op([("UPDATE scans SET started_at = 1000, completed_at = 1000 + ? WHERE id = ?",
                            (seconds, scan_id))]))


async def test_usage_figures_match_a_known_sequence(data_dir, admin_key, own_port):
    await run_cli_async("tenants", "create", "other", "--data-dir", str(data_dir))
    second = make_key(data_dir, "--name", "second", "--scope", "scans:list")
    outsider = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "scans:list")["key"]
    await run_cli_async("tenants", "set-quota", "default", "5", "--data-dir", str(data_dir))
    async with events_app(data_dir, admin_key, None) as client:
        began = time.time()
        for _ in range(3):
            assert (await client.get("/api/v1/scans")).status_code == 200
        for _ in range(2):
            assert (await client.get("/api/v1/scans/not-a-scan")).status_code == 404
        first = await client.post("/api/v1/scans", json=scan_body(own_port))
        other = await client.post("/api/v1/scans", json=scan_body(own_port))
        assert first.status_code == other.status_code == 201
        assert (await client.post("/api/v1/scans", json={"scanType": "nmap"})).status_code == 400
        assert (await client.get("/api/v1/scans", headers={"X-API-Key": second["key"]})).status_code == 200
        assert (await client.get("/api/v1/scans", headers={"X-API-Key": outsider})).status_code == 200
        assert (await client.get("/api/v1/scans", headers={"X-API-Key": "cix_sk_" + "x" * 40})).status_code == 401
        await finish(client, first.json()["data"]["id"], "completed", 2.5, findings=2)
        await finish(client, other.json()["data"]["id"], "cancelled", None)
        nikto = await scan_row(client, "nikto", time.time())
        await finish(client, nikto, "failed", 1.0)
        await scan_row(client, "nmap", time.time() - 40 * 86400)  # outside 30d and last month
        await flush(client)
        calls = services(client).reader.all("SELECT duration_ms FROM api_calls WHERE tenant_id = ?",
                                            (tenant_id(client),))
        assert len(calls) == 9

        summary = (await client.get("/api/v1/usage/summary")).json()["data"]
        assert summary["tenantId"] == tenant_id(client)
        assert (summary["totalCalls"], summary["successCalls"], summary["errorCalls"]) == (9, 6, 3)
        durations = [r["duration_ms"] for r in calls]
        assert summary["avgDurationMs"] == round(sum(durations) / 9, 3)
        assert summary["maxDurationMs"] == round(max(durations), 3)
        assert (summary["totalScans"], summary["distinctScanTypes"], summary["scanTypesUsed"],
                summary["quotaConsumedCalls"]) == (3, 2, ["nikto", "nmap"], 3)
        now = datetime.now(UTC)
        resets = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
        assert summary["quota"] == {"limit": 5, "used": 3, "remaining": 2,
                                    "resetsAt": resets.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        start, end = (clock.parse_iso(summary["period"][k]) for k in ("start", "end"))
        assert end - start == pytest.approx(30 * 86400) and end >= began
        longer = (await client.get("/api/v1/usage/summary?period=90d")).json()["data"]
        assert longer["totalScans"] == 4 and longer["totalCalls"] == 9

        by_type = (await client.get("/api/v1/usage/by-scan-type")).json()["data"]
        assert by_type == [
            {"scanType": "nmap", "scans": 2, "completed": 1, "failed": 0, "cancelled": 1, "avgDurationMs": 2500,
             "findings": 2},
            {"scanType": "nikto", "scans": 1, "completed": 0, "failed": 1, "cancelled": 0, "avgDurationMs": 1000,
             "findings": 0}]

        await flush(client)  # the three usage calls above are in the log now
        history = (await client.get("/api/v1/usage/history?period=24h")).json()["data"]
        points = history["points"]
        assert history["granularity"] == "hourly" and len(points) == 25
        stamps = [clock.parse_iso(p["timestamp"]) for p in points]
        assert all(b - a == 3600 for a, b in itertools.pairwise(stamps)) and stamps[0] % 3600 == 0
        assert sum(p["totalCalls"] for p in points) == 12 and sum(p["errorCalls"] for p in points) == 3
        assert sum(p["scans"] for p in points) == 3


async def test_history_buckets_and_call_log_filters(data_dir, admin_key):
    second = make_key(data_dir, "--name", "second", "--scope", "scans:list")
    async with events_app(data_dir, admin_key, None) as client:
        for _ in range(2):
            await client.get("/api/v1/scans")
        await client.get("/api/v1/scans/not-a-scan")
        await client.get("/api/v1/scans", headers={"X-API-Key": second["key"]})
        await scan_row(client, "nmap", time.time())
        await scan_row(client, "nmap", time.time() - 3 * 86400)
        await flush(client)
        history = (await client.get("/api/v1/usage/history")).json()["data"]
        assert history["granularity"] == "daily" and len(history["points"]) == 8
        points = history["points"]
        assert sum(p["totalCalls"] for p in points) == 4 and sum(p["errorCalls"] for p in points) == 1
        assert sum(p["scans"] for p in points) == 2
        assert sum(1 for p in points if p["totalCalls"] == 0 and p["scans"] == 0) >= 5  # empty days are present
        today = points[-1]
        assert today["timestamp"] == datetime.now(UTC).strftime("%Y-%m-%dT00:00:00.000Z")
        assert points[-4]["scans"] == 1
        hourly = (await client.get("/api/v1/usage/history?period=24h&granularity=hourly")).json()["data"]
        assert len(hourly["points"]) == 25 and sum(p["totalCalls"] for p in hourly["points"]) == 4  # not flushed
        await flush(client)
        log = (await client.get("/api/v1/usage/calls?limit=100")).json()
        assert log["pagination"]["total"] == 6
        newest = log["data"][0]
        assert set(newest) == {"id", "apiKeyId", "method", "path", "status", "durationMs", "ip", "requestId",
                               "createdAt"}
        assert newest["path"] == "/api/v1/usage/history" and newest["ip"] == "127.0.0.1"
        by_key = (await client.get(f"/api/v1/usage/calls?apiKeyId={second['id']}")).json()
        assert by_key["pagination"]["total"] == 1 and by_key["data"][0]["apiKeyId"] == second["id"]
        errors = (await client.get("/api/v1/usage/calls?status=404")).json()
        assert errors["pagination"]["total"] == 1 and errors["data"][0]["path"] == "/api/v1/scans/not-a-scan"
        past = (await client.get("/api/v1/usage/calls?to=2020-01-01T00:00:00Z")).json()
        assert past["pagination"]["total"] == 0
        for query, field in (("period=1y", "period"), ("granularity=weekly", "granularity"),
                             ("from=yesterday", "from"), ("status=abc", "status"), ("stauts=404", "stauts")):
            path = "/api/v1/usage/calls" if field in ("from", "status", "stauts") else "/api/v1/usage/history"
            response = await client.get(f"{path}?{query}")
            assert response.status_code == 400 and response.json()["details"][0]["field"] == field
        scans_only = make_key(data_dir, "--name", "s")["key"]
        denied = await client.get("/api/v1/usage/summary", headers={"X-API-Key": scans_only})
        assert denied.status_code == 403 and "usage:read" in denied.json()["error"]


async def test_monthly_quota(data_dir, admin_key, own_port):
    await run_cli_async("tenants", "set-quota", "default", "2", "--data-dir", str(data_dir))
    async with events_app(data_dir, admin_key, None) as client:
        await scan_row(client, "nmap", time.time() - 40 * 86400)  # last month's scans do not count
        for _ in range(2):
            assert (await client.post("/api/v1/scans", json=scan_body(own_port))
                    ).status_code == 201
        refused = await client.post("/api/v1/scans", json=scan_body(own_port))
        assert refused.status_code == 429 and refused.json()["code"] == "QUOTA_EXCEEDED"
        now = datetime.now(UTC)
        resets = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC).timestamp()
        assert abs(int(refused.headers["Retry-After"]) - math.ceil(resets - time.time())) <= 2
        tmpl = (await client.post("/api/v1/scan-templates", json={"name": "t", "scanType": "nmap"})).json()["data"]
        launch = await client.post(f"/api/v1/scan-templates/{tmpl['id']}/launch",
                                   json={"target": "127.0.0.1", "options": {"ports": str(own_port)}})
        assert launch.status_code == 429 and launch.json()["code"] == "QUOTA_EXCEEDED"
        # Failed submissions never count.
        assert (await client.post("/api/v1/scans", json={"scanType": "nmap"})).status_code == 400
        # The race: two submissions past the pre-check cannot both take the last scan.
        await run_cli_async("tenants", "set-quota", "default", "3", "--data-dir", str(data_dir))
        import asyncio
        await asyncio.sleep(1)  # a CLI change reaches the running server within a second (docs/operations.md)
        results = await asyncio.gather(*(client.post("/api/v1/scans", json=scan_body(own_port))
                                         for _ in range(4)))
        assert sorted(r.status_code for r in results) == [201, 429, 429, 429]
        assert (await client.get("/api/v1/usage/summary")).json()["data"]["quota"]["used"] == 3
        await run_cli_async("tenants", "set-quota", "default", "--default", "--data-dir", str(data_dir))
        await asyncio.sleep(1)
        assert (await client.post("/api/v1/scans", json=scan_body(own_port))
                ).status_code == 201
        quota = (await client.get("/api/v1/usage/summary")).json()["data"]["quota"]
        assert quota["limit"] is None and quota["remaining"] is None and quota["used"] == 4
    audit = json.loads(await run_cli_async("audit", "list", "--action", "tenant.quota_set", "--json",
                                           "--data-dir", str(data_dir)))
    assert [a["details"]["monthlyScans"] for a in audit] == [None, 3, 2]
