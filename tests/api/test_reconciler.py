"""The reconciler: no scan stays running or queued forever, and a lost run is retried once."""
from __future__ import annotations

import json

import pytest

from appliance import clock
from appliance.scanning import model
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
            "lost_once": scan_row(tenant, status="running", worker="boot-dead", attempts=1, started_at=now,
                                  heartbeat_at=now),
            "lost_twice": scan_row(tenant, status="running", worker="boot-dead", attempts=2, started_at=now,
                                   heartbeat_at=now),
            "overdue": scan_row(tenant, status="running", worker=s.boot_id, attempts=1, started_at=now - 500,
                                heartbeat_at=now),
            "stale_queue": scan_row(tenant, queued_at=now - 10 ** 6),
            "taskless": scan_row(tenant, queued_at=now - 60),
        }
        await s.writer.write(*(model.insert_op(r) for r in rows.values()))
        counts = await s.reconciler.run_once()
        status = {name: s.reader.one("SELECT status, error_code FROM scans WHERE id = ?", (r["id"],))
                  for name, r in rows.items()}
        assert tuple(status["lost_once"]) == ("queued", None)
        assert tuple(status["lost_twice"]) == ("failed", "INTERRUPTED")
        assert tuple(status["overdue"]) == ("failed", "TIMEOUT")
        assert tuple(status["stale_queue"]) == ("failed", "TIMEOUT")
        assert tuple(status["taskless"]) == ("queued", None)
        assert counts == {"requeued": 1, "interrupted": 1, "timed_out": 2, "enqueued": 1}
        assert {rows["lost_once"]["id"], rows["taskless"]["id"]} <= s.queue.queued_ids()
        # a second pass finds nothing left to do: every queued scan now has its task
        assert await s.reconciler.run_once() == {"requeued": 0, "interrupted": 0, "timed_out": 0, "enqueued": 0}
