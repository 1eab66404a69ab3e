"""Live: real nmap scans of a server this test starts, through the in-process API; their events
reach a webhook and the callback URL, signed. nmap only ever scans ``own_port`` on 127.0.0.1."""
from __future__ import annotations

import json
import shutil

import pytest

from appliance import clock
from tests.conftest import run_cli
from tests.events.common import events_app, expected_signature, scan_body
from tests.events.receiver import Receiver
from tests.helpers import await_for

pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (.ci/run installs it)")]
EVENTS = ["scan.queued", "scan.started", "scan.completed", "scan.failed", "scan.cancelled"]


async def test_a_launched_scan_reports_every_step_to_its_webhook_and_callback(data_dir, admin_key, tmp_path,
                                                                             own_port):
    with Receiver(tmp_path / "rx") as receiver:
        async with events_app(data_dir, admin_key, receiver, hold_scans=False) as client:
            hook = (await client.post("/api/v1/webhooks", json={"name": "all", "url": receiver.url(),
                                                                "events": EVENTS})).json()["data"]
            tmpl = (await client.post("/api/v1/scan-templates", json={
                "name": "web", "scanType": "nmap", "options": {"ports": str(own_port), "serviceDetection": False},
                "timeout": 120})).json()["data"]
            launched = await client.post(f"/api/v1/scan-templates/{tmpl['id']}/launch",
                                         json={"target": "127.0.0.1", "callbackUrl": receiver.url("/cb")})
            assert launched.status_code == 201, launched.text
            scan_id = launched.json()["data"]["id"]

            def by_path(path: str) -> list:
                return [r for r in receiver.received if r.path == path]
            await await_for(lambda: by_path("/cb"), 120, 0.1, "the callback")
            await await_for(lambda: len(by_path("/hook")) >= 3, 10, 0.1, "three webhook deliveries")
            scan = (await client.get(f"/api/v1/scans/{scan_id}")).json()["data"]
            results = (await client.get(f"/api/v1/scans/{scan_id}/results")).json()["data"]
        callback_secret = run_cli("tenants", "callback-secret", "default", "--data-dir", str(data_dir)).strip()
    assert scan["status"] == "completed" and scan["templateId"] == tmpl["id"]
    assert any(f["port"] == own_port for f in results["findings"])
    hooks = sorted(by_path("/hook"), key=lambda r: EVENTS.index(r.headers["X-CertIX-Event"]))
    assert [r.headers["X-CertIX-Event"] for r in hooks] == ["scan.queued", "scan.started", "scan.completed"]
    for item in hooks:
        assert item.headers["X-CertIX-Signature"] == expected_signature(hook["secret"], item.headers, item.body)
        assert json.loads(item.body)["data"]["scan"]["id"] == scan_id
    final = json.loads(hooks[-1].body)["data"]["scan"]
    assert final["status"] == "completed" and final["resultSummary"] == scan["resultSummary"]
    callback = by_path("/cb")
    assert len(callback) == 1 and callback[0].headers["X-CertIX-Event"] == "scan.completed"
    assert callback[0].headers["X-CertIX-Signature"] == expected_signature(callback_secret, callback[0].headers,
                                                                           callback[0].body)
    delay = hooks[-1].at - clock.parse_iso(scan["completedAt"])
    print(f"\nlive scan: scan.completed reached the webhook {delay:.3f} s after the scan completed")


async def test_a_cancelled_scan_is_announced(data_dir, admin_key, tmp_path, own_port):
    with Receiver(tmp_path / "rx") as receiver:
        async with events_app(data_dir, admin_key, receiver, hold_scans=False) as client:
            await client.post("/api/v1/webhooks", json={"name": "c", "url": receiver.url(),
                                                        "events": ["scan.cancelled"]})
            body = scan_body(own_port, options={"ports": str(own_port), "timing": "T0"})
            scan_id = (await client.post("/api/v1/scans", json=body)).json()["data"]["id"]
            assert (await client.post(f"/api/v1/scans/{scan_id}/cancel")).status_code == 200
            await await_for(lambda: receiver.received, 10, 0.1, "scan.cancelled")
    assert [r.headers["X-CertIX-Event"] for r in receiver.received] == ["scan.cancelled"]
    assert json.loads(receiver.received[0].body)["data"]["scan"]["status"] == "cancelled"
