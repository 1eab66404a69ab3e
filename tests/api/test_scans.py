"""In-process API tests of /scans: validation (and that no process starts), authorization,
the real nmap running through the embedded queue, cancel, results, filters."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
from typing import Any

import pytest

from tests.conftest import make_key, run_cli_async, serve_in_process
from tests.helpers import await_for, http_target, live_group_members

pytestmark = pytest.mark.anyio
needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (.ci/run installs it)")


@pytest.fixture
def spawned(monkeypatch):
    """Records every scanner process started (the runner's, in their own session; not the
    ``--version`` probes)."""
    started: list[list[str]] = []
    real = subprocess.Popen

    def popen(argv, *args, **kwargs):
        if kwargs.get("start_new_session"):
            started.append(list(argv))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr("appliance.scanning.runner.subprocess.Popen", popen)
    return started


async def submit(client, **body):
    return await client.post("/api/v1/scans", json={"scanType": "nmap", **body})


async def finished(client, scan_id: str, timeout: float = 90) -> dict:
    async def check():
        scan = (await client.get(f"/api/v1/scans/{scan_id}")).json()["data"]
        return scan if scan["status"] in ("completed", "failed", "cancelled") else None
    return await await_for(check, timeout, what=f"scan {scan_id} to finish")


BAD_SUBMISSIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"target": "127.0.0.1", "options": {"ports": "80 -oX /tmp/x"}}, "INVALID_OPTIONS", "options.ports"),
    ({"target": "127.0.0.1", "options": {"scripts": "../../x"}}, "INVALID_OPTIONS", "options.scripts"),
    ({"target": "127.0.0.1", "options": {"scripts": "-oN"}}, "INVALID_OPTIONS", "options.scripts"),
    ({"target": "127.0.0.1", "options": {"ports": "80;id"}}, "INVALID_OPTIONS", "options.ports"),
    ({"target": "127.0.0.1", "options": {"ports": "80\n81"}}, "INVALID_OPTIONS", "options.ports"),
    ({"target": "127.0.0.1", "options": {"ports": "$(reboot)"}}, "INVALID_OPTIONS", "options.ports"),
    ({"target": "127.0.0.1", "options": {"bogus": 1}}, "INVALID_OPTIONS", "options.bogus"),
    ({"target": "127.0.0.1", "options": {"timing": "T9"}}, "INVALID_OPTIONS", "options.timing"),
    ({"target": "127.0.0.1", "options": "ports=80"}, "VALIDATION_ERROR", "options"),
    ({"target": "127.0.0.1", "config": {"env": {"A": "b"}}}, "INVALID_OPTIONS", "config.env"),
    ({"target": "127.0.0.1 -oX /tmp/x"}, "INVALID_TARGET", "target"),
    ({"target": "-iL/etc/passwd"}, "INVALID_TARGET", "target"),
    ({"target": "localhost\n127.0.0.2"}, "INVALID_TARGET", "target"),
    ({"target": "127.0.0.1;id"}, "INVALID_TARGET", "target"),
    ({"target": "http://127.0.0.1/"}, "INVALID_TARGET", "targetType"),
    ({"target": "192.0.2.0/8"}, "INVALID_TARGET", "target"),
    ({"target": "127.0.0.1", "targetType": "galaxy"}, "VALIDATION_ERROR", "targetType"),
    ({"target": "127.0.0.1", "timeout": 5}, "VALIDATION_ERROR", "timeout"),
    ({"target": "127.0.0.1", "tags": ["x" * 65]}, "VALIDATION_ERROR", "tags[0]"),
    ({"target": "127.0.0.1", "priority": "urgent"}, "VALIDATION_ERROR", "priority"),
    ({"target": "127.0.0.1", "callbackUrl": "http://127.0.0.1/hook"}, "VALIDATION_ERROR", "callbackUrl"),
    ({"target": "127.0.0.1", "surprise": True}, "VALIDATION_ERROR", "surprise"),
    ({}, "VALIDATION_ERROR", "target"),
]


@needs_nmap
async def test_bad_submissions_are_rejected_and_start_nothing(client, spawned):
    for body, expected, field in BAD_SUBMISSIONS:
        response = await submit(client, **body)
        assert response.status_code == 400, body
        assert response.json()["code"] == expected, (body, response.json())
        assert response.json()["details"][0]["field"] == field, (body, response.json())
    unknown = await client.post("/api/v1/scans", json={"scanType": "nessus", "target": "127.0.0.1"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "INVALID_SCAN_TYPE"
    total = (await client.get("/api/v1/scans")).json()["pagination"]["total"]
    assert total == 0 and spawned == []


async def test_unavailable_engine_is_503(client):
    response = await client.post("/api/v1/scans", json={"scanType": "zap", "target": "http://127.0.0.1/"})
    assert response.status_code == 503 and response.json()["code"] == "ENGINE_UNAVAILABLE"
    engines = {e["scanType"]: e for e in (await client.get("/api/v1/engines")).json()["data"]}
    assert len(engines) == 10 and engines["zap"]["available"] is False and engines["zap"]["missing"]


@needs_nmap
async def test_target_authorization(client, data_dir, spawned):
    outside = await submit(client, target="192.0.2.10")
    assert outside.status_code == 403 and outside.json()["code"] == "TARGET_NOT_ALLOWED"
    await run_cli_async("tenants", "create", "empty", "--data-dir", str(data_dir))
    empty = make_key(data_dir, "--tenant", "empty", "--name", "e")
    nothing = await client.post(
        "/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1"}, headers={"X-API-Key": empty["key"]})
    assert nothing.status_code == 403 and nothing.json()["code"] == "TARGET_NOT_ALLOWED"
    await run_cli_async("targets", "deny", "--tenant", "default", "127.0.0.9", "--data-dir", str(data_dir))
    await await_for(lambda: client.app.state.services._policies == {}, 2, what="policy cache reset")
    denied = await submit(client, target="127.0.0.9")
    assert denied.status_code == 403 and "denylist" in denied.json()["error"]
    assert spawned == []


@needs_nmap
async def test_global_denylist_wins(data_dir, admin_key):
    async with serve_in_process(data_dir, targets__denylist=["127.0.0.0/24"]) as c:
        for target in ("127.0.0.1", "localhost"):
            response = await c.post("/api/v1/scans", json={"scanType": "nmap", "target": target},
                                    headers={"X-API-Key": admin_key})
            assert response.status_code == 403 and response.json()["code"] == "TARGET_NOT_ALLOWED"
            assert "denylist" in response.json()["error"]


async def test_scan_type_limited_key(client, data_dir):
    key = make_key(data_dir, "--name", "z", "--scan-type", "zap")
    response = await client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1"},
                                 headers={"X-API-Key": key["key"]})
    assert response.status_code == 403 and response.json()["code"] == "SCAN_TYPE_NOT_ALLOWED"


@needs_nmap
async def test_nmap_scan_end_to_end_in_process(client):
    with http_target() as port:
        response = await submit(client, target="127.0.0.1", name="web", tags=["ci"], priority="high",
                                options={"ports": str(port), "serviceDetection": True})
        assert response.status_code == 201
        scan = response.json()["data"]
        assert scan["status"] == "queued" and scan["priority"] == "high" and scan["tags"] == ["ci"]
        done = await finished(client, scan["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["durationMs"] > 0 and done["startedAt"] and done["completedAt"]
    assert done["resultSummary"]["total"] >= 1 and done["resultSummary"]["info"] >= 1
    results = (await client.get(f"/api/v1/scans/{scan['id']}/results")).json()
    ports = [f["port"] for f in results["data"]["findings"]]
    assert port in ports
    finding = results["data"]["findings"][ports.index(port)]
    assert finding["engine"] == "nmap" and finding["severity"] == "info" and len(finding["fingerprint"]) == 32
    high_only = (await client.get(f"/api/v1/scans/{scan['id']}/results?severity=high")).json()
    assert high_only["data"]["findings"] == [] and high_only["pagination"]["total"] == 0
    bad = await client.get(f"/api/v1/scans/{scan['id']}/results?severity=urgent")
    assert bad.status_code == 400
    # the cloud's scanType parameter, filters, and 409 on a finished scan
    assert (await client.get(f"/api/v1/scans/{scan['id']}?scanType=zap")).status_code == 404
    assert (await client.get(f"/api/v1/scans/{scan['id']}?scanType=nmap")).status_code == 200
    assert (await client.get("/api/v1/scans?tag=ci")).json()["pagination"]["total"] == 1
    assert (await client.get("/api/v1/scans?tag=other")).json()["pagination"]["total"] == 0
    assert (await client.get("/api/v1/scans?status=completed&scanType=nmap")).json()["pagination"]["total"] == 1
    assert (await client.get("/api/v1/scans?createdAfter=2999-01-01T00:00:00Z")).json()["data"] == []
    assert (await client.get("/api/v1/scans?createdAfter=yesterday")).status_code == 400
    late = await client.post(f"/api/v1/scans/{scan['id']}/cancel")
    assert late.status_code == 409 and late.json()["code"] == "SCAN_NOT_CANCELLABLE"


@needs_nmap
async def test_cancel_queued_and_running(data_dir, admin_key, monkeypatch):
    from engines.nmap import NmapEngine

    monkeypatch.setattr(NmapEngine, "progress", lambda self, spec: 42)
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        with http_target() as port:
            slow = (await submit(c, target="127.0.0.1", options={"ports": "1-65535", "timing": "T1",
                                                                 "serviceDetection": False})).json()["data"]
            waiting = (await submit(c, target="127.0.0.1", options={"ports": str(port)})).json()["data"]
            services = c.app.state.services

            def running_pid():
                row = services.reader.one("SELECT status, pid FROM scans WHERE id = ?", (slow["id"],))
                return row["pid"] if row["status"] == "running" and row["pid"] else None

            pid = await await_for(running_pid, 30, what="the slow scan to start")
            progress = lambda: c.get(f"/api/v1/scans/{slow['id']}")  # noqa: E731
            await await_for(lambda: _progress_is(progress, 42), 10, what="progress while running")
            queued = (await c.post(f"/api/v1/scans/{waiting['id']}/cancel")).json()["data"]
            assert queued["status"] == "cancelled" and queued["startedAt"] is None
            cancelled = (await c.post(f"/api/v1/scans/{slow['id']}/cancel")).json()["data"]
            assert cancelled["status"] == "cancelled"

            await await_for(lambda: live_group_members(pid) == [], 5, interval=0.1,
                            what="the scanner's process group to exit")
        await await_for(lambda: services.reader.scalar(
            "SELECT pid IS NULL FROM scans WHERE id = ?", (slow["id"],)), 10, what="worker to finish")
        never = (await c.get(f"/api/v1/scans/{waiting['id']}")).json()["data"]
        assert never["status"] == "cancelled" and never["startedAt"] is None


async def _progress_is(fetch, value: int) -> bool:
    return (await fetch()).json()["data"]["progress"] == value


@needs_nmap
async def test_priority_orders_the_queue(data_dir, admin_key):
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        with http_target() as port:
            blocker = (await submit(c, target="127.0.0.1", options={"ports": "1-65535", "timing": "T1",
                                                                    "serviceDetection": False})).json()["data"]
            await await_for(lambda: services.reader.scalar(
                "SELECT status = 'running' FROM scans WHERE id = ?", (blocker["id"],)), 30, what="blocker")
            quick = {"ports": str(port), "serviceDetection": False}
            order = [(await submit(c, target="127.0.0.1", priority=p, options=quick)).json()["data"]["id"]
                     for p in ("low", "normal", "critical", "high")]
            await c.post(f"/api/v1/scans/{blocker['id']}/cancel")
            done = [await finished(c, scan_id) for scan_id in order]
        started = {d["priority"]: d["startedAt"] for d in done}
        assert all(d["status"] == "completed" for d in done)
        assert started["critical"] < started["high"] < started["normal"] < started["low"]


@needs_nmap
async def test_worker_checks_the_target_again_before_running(data_dir, admin_key, spawned):
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        blocker = (await submit(c, target="127.0.0.1", options={"ports": "1-65535", "timing": "T1",
                                                                "serviceDetection": False})).json()["data"]
        await await_for(lambda: services.reader.scalar(
            "SELECT status = 'running' FROM scans WHERE id = ?", (blocker["id"],)), 30, what="blocker")
        by_name = (await submit(c, target="localhost", options={"ports": "1"})).json()["data"]
        assert by_name["targetType"] == "host"
        # between submit and run, the operator denies the addresses the name resolves to
        await run_cli_async("targets", "deny", "--tenant", "default", "127.0.0.1", "::1", "--data-dir", str(data_dir))
        await await_for(lambda: services._policies == {}, 2, what="policy cache reset")
        await c.post(f"/api/v1/scans/{blocker['id']}/cancel")
        done = await finished(c, by_name["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "TARGET_NOT_ALLOWED"
    assert [argv[-1] for argv in spawned] == ["127.0.0.1"]  # only the blocker ever ran


@needs_nmap
async def test_hostname_targets_are_scanned_at_their_vetted_address(client, spawned):
    with http_target() as port:
        scan = (await submit(client, target="localhost", options={"ports": str(port)})).json()["data"]
        done = await finished(client, scan["id"])
    assert done["status"] == "completed", done
    assert spawned[0][-2:] == ["--", "127.0.0.1"]  # not a second lookup by nmap
    findings = (await client.get(f"/api/v1/scans/{scan['id']}/results")).json()["data"]["findings"]
    assert [(f["host"], f["ip"], f["port"]) for f in findings] == [("localhost", "127.0.0.1", port)]



async def test_the_submit_answer_is_the_stored_row(client, monkeypatch):
    """POST answers (and enqueues) the row it committed without reading it back: that row must be what
    the database holds, to the last column and default, for a plain and a fully specified submission."""
    services = client.app.state.services
    built: list[dict[str, Any]] = []
    real_job = services.dispatcher.job

    def job(row: dict[str, Any], addresses: list[str]) -> Any:
        built.append(dict(row))
        return real_job(row, addresses)

    monkeypatch.setattr(services.dispatcher, "job", job)
    bodies: list[dict[str, Any]] = [{"target": "127.0.0.1"},
              {"target": "127.0.0.1", "name": "n", "priority": "high", "timeout": 120, "tags": ["a", "b"],
               "options": {"ports": "22,80"}, "assetId": "asset-1"}]
    for body in bodies:
        answer = await submit(client, **body)
        assert answer.status_code == 201, answer.text
        scan = answer.json()["data"]
        stored = dict(services.reader.one("SELECT * FROM scans WHERE id = ?", (scan["id"],)))
        assert built.pop() == stored
        if stored["status"] == "queued":  # the embedded worker may have started it meanwhile
            assert scan == (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]


async def test_a_scan_read_twice_is_read_from_the_database_once_and_never_stale(client, data_dir, monkeypatch):
    services = client.app.state.services
    scan = (await client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                     "options": {"ports": "80"}})).json()["data"]
    reads: list[str] = []
    values = services.reader.values

    def counted(sql: str, params: Any = ()) -> Any:
        reads.append(sql)
        return values(sql, params)

    monkeypatch.setattr(services.reader, "values", counted)
    for _ in range(3):
        assert (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]["status"] == scan["status"]
    assert len(reads) == 1
    cancelled = (await client.post(f"/api/v1/scans/{scan['id']}/cancel")).json()["data"]
    assert cancelled["status"] == "cancelled"  # the cancel's commit emptied the cache
    assert (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]["status"] == "cancelled"
    # Another process (a CLI command) commits: seen at the server's next check (every 0.5 s).
    with sqlite3.connect(data_dir / "appliance.db") as conn:
        conn.execute("UPDATE scans SET name = 'renamed elsewhere' WHERE id = ?", (scan["id"],))
    services._check_epoch()
    assert (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]["name"] == "renamed elsewhere"


async def test_a_submitted_scan_and_its_queue_task_are_committed_together(data_dir, admin_key, monkeypatch):
    """SQLite queue: the task is inserted by the transaction that stores the scan (no enqueue after
    the commit); Huey reads each back as the job of its scan, by priority. A refused scan has none."""
    async with serve_in_process(data_dir, queue__workers=0) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services

        async def no_enqueue(job: Any) -> None:
            raise AssertionError("enqueued after the commit")

        monkeypatch.setattr(services, "enqueue_async", no_enqueue)
        import asyncio
        priorities = ["low", "high", "normal", "critical"] * 5
        answers = await asyncio.gather(*(submit(c, target="127.0.0.1", priority=p, options={"ports": "80"})
                                         for p in priorities))
        assert [a.status_code for a in answers] == [201] * len(priorities)
        ids = [a.json()["data"]["id"] for a in answers]
        huey, _ = services.queue._queue("", "nmap")
        jobs = [huey.deserialize_task(raw).args[0] for raw in huey.storage.enqueued_items()]
        assert sorted(j["scan_id"] for j in jobs) == sorted(ids)
        order = {"critical": 0, "high": 1, "normal": 2, "low": 3}
        assert [order[j["priority"]] for j in jobs] == sorted(order[p] for p in priorities)
        assert all(j["target"] == "127.0.0.1" and j["options"] == {"ports": "80"} for j in jobs)
        # Over the quota: no scan, no task.
        await run_cli_async("tenants", "set-quota", "default", "1", "--data-dir", str(data_dir))
        services._check_epoch()
        refused = await submit(c, target="127.0.0.1", options={"ports": "80"})
        assert refused.status_code == 429
        assert len(huey.storage.enqueued_items()) == len(priorities)
