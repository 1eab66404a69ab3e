"""The reconciler: no scan stays running or queued forever, and a lost run is retried once."""
from __future__ import annotations

import json

import pytest

from appliance import clock
from appliance.scanning import lifecycle
from tests.conftest import serve_in_process

pytestmark = pytest.mark.anyio


def scan_row(tenant_id: str, **overrides) -> dict:
    now = clock.now()
    row = {"id": clock.new_id(), "tenant_id": tenant_id, "scan_type": "nmap", "target": "127.0.0.1",
           "target_type": "ip", "status": "queued", "priority": "normal", "options": json.dumps({"ports": "1"}),
           "timeout": 60, "created_at": now, "queued_at": now}
    row.update(overrides)
    return row


async def test_reconciler_recovers_times_out_and_enqueues(data_dir, admin_key):
    async with serve_in_process(data_dir, queue__workers=1) as c:
        s = c.app.state.services
        tenant = s.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
        s.queue.stop(5)  # keep the scans where the reconciler leaves them
        now = clock.now()
        rows = {
            "lost_once": scan_row(tenant, status="running", lease_owner="boot-dead", lease_id="l1", attempts=1,
                                  started_at=now, heartbeat_at=now, lease_expires_at=now + 30),
            "lost_twice": scan_row(tenant, status="running", lease_owner="boot-dead", lease_id="l2", attempts=2,
                                   started_at=now, heartbeat_at=now, lease_expires_at=now + 30),
            "overdue": scan_row(tenant, status="running", lease_owner=s.boot_id, lease_id="l3", attempts=1,
                                started_at=now - 500, heartbeat_at=now, lease_expires_at=now + 30),
            "silent_worker": scan_row(tenant, status="running", lease_owner="worker:wk-1", lease_id="l4", attempts=1,
                                      started_at=now - 40, heartbeat_at=now - 40, lease_expires_at=now - 10),
            "live_worker": scan_row(tenant, status="running", lease_owner="worker:wk-2", lease_id="l5", attempts=1,
                                    started_at=now - 40, heartbeat_at=now, lease_expires_at=now + 20),
            "stale_queue": scan_row(tenant, queued_at=now - 10 ** 6),
            "taskless": scan_row(tenant, queued_at=now - 60),
        }
        await s.writer.write(*(lifecycle.submit(r) for r in rows.values()))
        counts = await s.reconciler.run_once()
        status = {name: s.reader.one("SELECT status, error_code FROM scans WHERE id = ?", (r["id"],))
                  for name, r in rows.items()}
        assert tuple(status["lost_once"]) == ("queued", None)
        assert tuple(status["lost_twice"]) == ("failed", "INTERRUPTED")
        assert tuple(status["overdue"]) == ("failed", "TIMEOUT")
        assert tuple(status["stale_queue"]) == ("failed", "TIMEOUT")
        assert tuple(status["taskless"]) == ("queued", None)
        assert tuple(status["silent_worker"]) == ("queued", None)
        assert tuple(status["live_worker"]) == ("running", None)
        assert counts == {"requeued": 2, "interrupted": 1, "timed_out": 2, "enqueued": 1}
        assert {rows[n]["id"] for n in ("lost_once", "silent_worker", "taskless")} <= s.queue.pending_ids("", "nmap")
        # every transition wrote its outbox row in the same transaction
        events = {name: [e["event"] for e in s.reader.all("SELECT event FROM scan_events WHERE scan_id = ?"
                                                           " ORDER BY id", (r["id"],))]
                  for name, r in rows.items()}
        assert events["lost_once"] == ["scan.queued", "scan.requeued"]
        assert events["lost_twice"] == ["scan.queued", "scan.failed"]
        assert events["overdue"] == ["scan.queued", "scan.failed"]
        assert events["live_worker"] == ["scan.queued"]
        # a second pass finds nothing left to do: every queued scan now has its task
        assert await s.reconciler.run_once() == {"requeued": 0, "interrupted": 0, "timed_out": 0, "enqueued": 0}


async def test_a_scanner_left_by_an_earlier_run_is_killed_but_a_reused_pid_is_spared(data_dir, admin_key, tmp_path):
    """What PDEATHSIG cannot cover (a scanner with file capabilities drops it on exec)."""
    import subprocess
    import sys

    from tests.helpers import live_group_members, wait_for

    workdir = tmp_path / "scan-dir"
    workdir.mkdir()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=workdir,
                              start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                                 start_new_session=True)
    try:
        async with serve_in_process(data_dir, queue__workers=0) as c:
            s = c.app.state.services
            tenant = s.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
            now = clock.now()
            rows = [scan_row(tenant, status="running", lease_owner="boot-dead", lease_id="a", attempts=2,
                             started_at=now, lease_expires_at=now + 30, pid=orphan.pid, workdir=str(workdir)),
                    scan_row(tenant, status="running", lease_owner="boot-dead", lease_id="b", attempts=2,
                             started_at=now, lease_expires_at=now + 30, pid=bystander.pid,
                             workdir=str(tmp_path / "elsewhere"))]
            await s.writer.write(*(lifecycle.submit(r) for r in rows))
            assert (await s.reconciler.run_once())["interrupted"] == 2
        wait_for(lambda: live_group_members(orphan.pid) == [], 10, what="the orphan to be killed")
        assert orphan.wait(5) is not None and bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
