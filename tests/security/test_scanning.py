"""Hardening of the scan path, each item reproduced as it was found: unvetted names handed to the
scanner, IPv6 targets, engine-slot waits that polled and logged, no fairness between tenants, and
nmap progress that never moved."""
from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest

from appliance import targets
from tests.conftest import make_key, run_cli_async, serve_in_process
from tests.helpers import await_for

pytestmark = pytest.mark.anyio
SLOW = {"ports": "1-65535", "timing": "T1", "serviceDetection": False}


async def _scan(client: Any, expect: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("scanType", "nmap")
    body.setdefault("options", {"ports": "1", "serviceDetection": False})
    r = await client.post("/api/v1/scans", json=body)
    assert r.status_code == expect, r.text
    return r.json()["data"] if expect == 201 else r.json()


async def _final(client: Any, scan_id: str, timeout: float = 60) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        data = (await client.get(f"/api/v1/scans/{scan_id}")).json()["data"]
        return data if data["status"] in ("completed", "failed", "cancelled") else None
    return await await_for(done, timeout, what=f"scan {scan_id} to end")


async def test_5_a_name_that_does_not_resolve_is_never_handed_to_the_scanner(data_dir, admin_key):
    await run_cli_async("targets", "allow", "--data-dir", str(data_dir), "--tenant", "default", "nxdomain-cix.invalid")
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        refused = await _scan(c, 403, target="a.nxdomain-cix.invalid")
        assert refused["code"] == "TARGET_NOT_ALLOWED" and "cannot be vetted" in refused["error"]
        assert c.app.state.services.reader.scalar("SELECT count(*) FROM scans") == 0


async def test_5_a_name_that_stops_resolving_before_the_claim_fails_without_a_scan(data_dir, admin_key, monkeypatch):
    await run_cli_async("targets", "allow", "--data-dir", str(data_dir), "--tenant", "default", "flaky.test")
    answers = [[ipaddress.ip_address("127.0.0.1")]]
    monkeypatch.setattr(targets, "resolve_host", lambda name: answers[-1])
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        c.app.state.services.queue.stop(5)  # hold the job until DNS has changed
        scan = await _scan(c, target="www.flaky.test")
        answers.append([])
        from appliance.scanning.job import Job
        job = Job.from_dict({**c.app.state.services.dispatcher.job(
            c.app.state.services.reader.one("SELECT * FROM scans WHERE id = ?", (scan["id"],))).to_dict()})
        assert await c.app.state.services.intake.claim(job.scan_id, "boot-test", "t") is None
        final = (await c.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
        assert final["status"] == "failed" and final["error"]["code"] == "TARGET_NOT_ALLOWED"
        assert final["startedAt"] is None  # no scanner ever started


@pytest.mark.parametrize("target", ["::1", "::1/128"])
async def test_6_ipv6_literals_and_networks_scan(client, target):
    final = await _final(client, (await _scan(client, target=target))["id"])
    assert final["status"] == "completed", final.get("error")


async def test_11_waiting_for_an_engine_slot_costs_no_polling_and_no_log_lines(data_dir, admin_key, caplog):
    async with serve_in_process(data_dir, engines__concurrency={"nmap": 1}) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        slow = await _scan(c, target="127.0.0.1", options=SLOW)
        await await_for(lambda: services.reader.scalar("SELECT status FROM scans WHERE id = ?", (slow["id"],))
                        == "running", 30, what="the slow scan to run")
        waiting = [await _scan(c, target="127.0.0.1") for _ in range(20)]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await _sleep(3)
        # The 20 wait in their queue: nothing dequeued, re-scheduled or logged meanwhile.
        assert {w["id"] for w in waiting} <= services.queue.pending_ids("", "nmap")
        assert [r for r in caplog.records if r.name.startswith(("appliance", "huey"))] == []
        await c.post(f"/api/v1/scans/{slow['id']}/cancel")
        finals = [await _final(c, w["id"]) for w in waiting]
        assert {f["status"] for f in finals} == {"completed"}


async def test_12_a_tenant_cannot_take_every_slot(data_dir, admin_key):
    async with serve_in_process(data_dir, scans__max_running_per_tenant=1) as c:
        c.headers["X-API-Key"] = admin_key
        reader = c.app.state.services.reader
        first = await _scan(c, target="127.0.0.1", options=SLOW, priority="critical")
        second = await _scan(c, target="127.0.0.1", options=SLOW, priority="critical")
        await await_for(lambda: reader.scalar("SELECT count(*) FROM scans WHERE status = 'running'") == 1, 30,
                        what="one scan to run")
        await _sleep(2)
        status = {r["id"]: r["status"] for r in reader.all("SELECT id, status FROM scans")}
        assert sorted(status.values()) == ["queued", "running"]
        running = first if status[first["id"]] == "running" else second
        waiting = second if running is first else first
        await c.post(f"/api/v1/scans/{running['id']}/cancel")
        await await_for(lambda: reader.scalar("SELECT status FROM scans WHERE id = ?", (waiting["id"],))
                        == "running", 30, what="the second scan to start once a slot is free")
        await c.post(f"/api/v1/scans/{waiting['id']}/cancel")


async def test_12_timeouts_are_capped_and_keys_may_be_limited_to_priorities(data_dir, admin_key):
    limited = make_key(data_dir, "--name", "low-only", "--priority", "low", "--priority", "normal",
                       "--scope", "scans:create", "--scope", "api-keys:write")["key"]
    async with serve_in_process(data_dir, scans__max_timeout_seconds=600) as c:
        c.headers["X-API-Key"] = admin_key
        too_long = await _scan(c, 400, target="127.0.0.1", timeout=900)
        assert too_long["details"][0]["field"] == "timeout"
        c.headers["X-API-Key"] = limited
        refused = await _scan(c, 403, target="127.0.0.1", priority="critical")
        assert refused["code"] == "INSUFFICIENT_SCOPE" and "critical" in refused["error"]
        assert (await _scan(c, target="127.0.0.1", priority="low"))["priority"] == "low"
        # a limited key cannot mint a key with priorities it lacks
        minted = await c.post("/api/v1/api-keys", json={"name": "x", "scopes": ["scans:create"],
                                                         "allowedPriorities": ["critical"]})
        assert minted.status_code == 403 and "priority 'critical'" in minted.json()["error"]


async def test_19_nmap_progress_moves_during_a_scan(client):
    scan = await _scan(client, target="127.0.0.1", options={"ports": "1-200", "timing": "T2",
                                                            "serviceDetection": False})

    async def moving() -> bool:
        data = (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
        return data["status"] == "running" and 0 < data["progress"] < 100
    await await_for(moving, 30, interval=0.5, what="progress between 0 and 100 while running")
    await client.post(f"/api/v1/scans/{scan['id']}/cancel")


async def _sleep(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(seconds)
