"""``cix-appliance scans list|show|cancel``: reads the database; a cancel is the API's lifecycle op, so a
running scanner stops on its worker's next heartbeat."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.store import apply_sync, connect
from tests.conftest import run_cli, run_cli_async, serve_in_process
from tests.helpers import await_for, live_group_members
from tests.results_helpers import finding, scan_ops

needs_nmap = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (.ci/run installs it)")


def test_list_show_and_cancel_a_queued_scan(data_dir, admin_key):
    d = ["--data-dir", str(data_dir)]
    run_cli("tenants", "create", "blue", *d)
    conn = connect(data_dir / "appliance.db")
    tenants = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM tenants")}
    done, ops = scan_ops(tenants["default"], [finding("x", "high")])
    waiting, more = scan_ops(tenants["blue"], [], status="queued")
    apply_sync(conn, [*ops, *more])
    listed = json.loads(run_cli("scans", "list", "--json", *d))
    assert {s["id"] for s in listed} == {done, waiting}
    assert [s["id"] for s in json.loads(run_cli("scans", "list", "--json", "--tenant", "blue", *d))] == [waiting]
    assert [s["id"] for s in json.loads(run_cli("scans", "list", "--json", "--status", "completed", *d))] == [done]
    table = run_cli("scans", "list", *d)
    assert done in table and "blue" in table and "TARGET" in table.splitlines()[0]
    shown = json.loads(run_cli("scans", "show", done, "--json", *d))
    assert shown["resultSummary"]["high"] == 1 and shown["tenant"] == "default"
    assert "status:" in run_cli("scans", "show", waiting, *d)

    assert "cancelled" in run_cli("scans", "cancel", waiting, *d)
    row = conn.execute("SELECT status, completed_at FROM scans WHERE id = ?", (waiting,)).fetchone()
    assert row["status"] == "cancelled" and row["completed_at"] is not None
    events = [r["event"] for r in conn.execute("SELECT event FROM scan_events WHERE scan_id = ?", (waiting,))]
    assert events[-1] == "scan.cancelled"  # webhooks hear of it like an API cancel
    for scan_id, message in ((waiting, "already finished"), (done, "already finished"),
                             ("nonsense", "not a scan id"), ("00000000-0000-4000-8000-000000000000", "no scan")):
        result = CliRunner().invoke(cli, ["scans", "cancel", scan_id, *d])
        assert result.exit_code == 1 and message in result.output, result.output
    conn.close()


@needs_nmap
@pytest.mark.anyio
async def test_cancel_from_the_cli_stops_a_running_scanner(data_dir, admin_key):
    async with serve_in_process(data_dir, queue__workers=1) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        scan = (await c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1", "options": {
            "ports": "1-65535", "timing": "T1", "serviceDetection": False}})).json()["data"]

        def running_pid():
            row = services.reader.one("SELECT status, pid FROM scans WHERE id = ?", (scan["id"],))
            return row["pid"] if row["status"] == "running" and row["pid"] else None

        pid = await await_for(running_pid, 30, what="the scan to start")
        await run_cli_async("scans", "cancel", scan["id"], "--data-dir", str(data_dir))
        await await_for(lambda: live_group_members(pid) == [], 10, interval=0.1,
                        what="the scanner's process group to exit after the CLI cancel")
        final = (await c.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
    assert final["status"] == "cancelled"
