"""Retention prunes old call logs, deliveries, findings and scan dirs in batches, keeps recent ones,
and never touches the audit chain."""
from __future__ import annotations

import asyncio
import time

import pytest

from appliance.store.ops import Op
from tests.events.common import events_app, new_scan, run_to, services
from tests.events.test_audit import verify

pytestmark = pytest.mark.anyio
DAY = 86400


async def test_retention(data_dir, admin_key, monkeypatch):
    monkeypatch.setattr("appliance.retention.BATCH", 7)  # several batches
    async with events_app(data_dir, admin_key, None, retention__calls_days=30, retention__findings_days=10,
                          retention__scan_dirs_days=5) as client:
        writer = services(client).writer
        now = time.time()
        calls = [(None, None, "GET", "/x", 200, 1.0, "127.0.0.1", "r", now - age * DAY) for age in [40] * 20 + [1] * 3]
        await writer.write(Op([("INSERT INTO api_calls (tenant_id, api_key_id, method, path, status, duration_ms, ip,"
                                " request_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)", ())], many={0: calls}))
        old, recent, running = await new_scan(client), await new_scan(client), await new_scan(client)
        for scan_id in (old, recent):
            await run_to(client, scan_id)
        rows = [(scan_id, n, 1, "high", f"f{n}", "{}") for scan_id in (old, recent, running) for n in range(10)]
        await writer.write(Op([("INSERT INTO findings (scan_id, seq, severity_rank, severity, fingerprint, body)"
                                " VALUES (?,?,?,?,?,?)", ())], many={0: rows}))
        await writer.write(Op([("UPDATE scans SET completed_at = ? WHERE id = ?", (now - 20 * DAY, old)),
                               ("UPDATE scans SET total = 10 WHERE id = ?", (old,))]))
        for scan_id in (old, recent, running):
            (services(client).config.scans_dir / scan_id).mkdir(parents=True)
        audit_before = services(client).reader.scalar("SELECT count(*) FROM audit_events")
        reader = services(client).reader
        events = [r[0] for r in reader.all("SELECT id FROM scan_events ORDER BY id")]
        # Old events, of which the dispatcher (held still here) has passed all but the last.
        dispatcher = next(t for t in asyncio.all_tasks() if t.get_name() == "event-dispatcher")
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        await writer.write(Op([("UPDATE scan_events SET created_at = ? WHERE id <= ?", (now - 40 * DAY, events[3])),
                               ("UPDATE meta SET value = ? WHERE key = 'events_cursor'", (str(events[2]),))]))
        counts = await services(client).events.pruner.run_once()
        assert counts == {"calls": 20, "deliveries": 0, "events": 3, "findings": 10, "scanDirs": 1}
        assert [r[0] for r in reader.all("SELECT id FROM scan_events ORDER BY id")] == events[3:]
        assert reader.scalar("SELECT count(*) FROM api_calls") == 3
        assert reader.scalar("SELECT count(*) FROM findings WHERE scan_id = ?", (old,)) == 0
        assert reader.scalar("SELECT count(*) FROM findings") == 20
        kept = (await client.get(f"/api/v1/scans/{old}")).json()["data"]
        assert kept["status"] == "completed" and kept["resultSummary"]["total"] == 10  # the scan and summary stay
        assert sorted(p.name for p in services(client).config.scans_dir.iterdir()) == sorted([recent, running])
        assert reader.scalar("SELECT count(*) FROM audit_events") == audit_before
        assert await services(client).events.pruner.run_once() == {"calls": 0, "deliveries": 0, "events": 0,
                                                                    "findings": 0, "scanDirs": 0}
    assert verify(data_dir)[0] == 0
