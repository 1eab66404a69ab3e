"""``callbackUrl``: the scan's final event, signed with the tenant's callback secret."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli_async
from tests.events.common import events_app, events_of, expected_signature, new_scan, run_to, scan_body, services
from tests.events.receiver import Receiver
from tests.helpers import await_for

pytestmark = pytest.mark.anyio


async def test_final_event_reaches_the_callback_signed_with_the_tenant_secret(data_dir, admin_key, tmp_path, own_port):
    with Receiver(tmp_path / "rx") as receiver:
        async with events_app(data_dir, admin_key, receiver) as client:
            accepted = await client.post("/api/v1/scans", json=scan_body(own_port, callbackUrl=receiver.url("/cb")))
            assert accepted.status_code == 201 and accepted.json()["data"]["callbackUrl"] == receiver.url("/cb")
            scan_id = await new_scan(client, callback_url=receiver.url("/cb"))
            await run_to(client, scan_id, "completed")
            await await_for(lambda: receiver.received, 10, 0.05, "the callback")
            secret = (await run_cli_async("tenants", "callback-secret", "default", "--data-dir", str(data_dir))).strip()
            assert secret.startswith("whsec_") and len(secret) == 70
            first = receiver.received[0]
            assert events_of(receiver) == ["scan.completed"] and first.path == "/cb"
            assert first.headers["X-CertIX-Signature"] == expected_signature(secret, first.headers, first.body)
            assert json.loads(first.body)["data"]["scan"]["id"] == scan_id
            # Printing it again shows the same secret; rotating keeps the old one signing for the grace period.
            again = await run_cli_async("tenants", "callback-secret", "default", "--data-dir", str(data_dir))
            assert again.strip() == secret
            rotated = (await run_cli_async("tenants", "callback-secret", "default", "--rotate", "--grace-hours", "1",
                              "--data-dir", str(data_dir))).strip()
            assert rotated != secret
            await run_to(client, await new_scan(client, callback_url=receiver.url("/cb")), "cancelled")
            await await_for(lambda: len(receiver.received) >= 2, 10, 0.05, "the second callback")
            second = receiver.received[1]
            assert second.headers["X-CertIX-Signature"] == ",".join(
                expected_signature(s, second.headers, second.body) for s in (rotated, secret))
            # The receiver has the request before the appliance records its answer: wait for the record.
            def recorded() -> list | None:
                rows = services(client).reader.all("SELECT * FROM webhook_deliveries ORDER BY created_at")
                return rows if [d["status"] for d in rows] == ["succeeded", "succeeded"] else None
            deliveries = await await_for(recorded, 10, 0.05, "both deliveries recorded as succeeded")
            assert all(d["webhook_id"] is None and d["callback_url"] for d in deliveries)
        actions = await run_cli_async("audit", "list", "--data-dir", str(data_dir))
        assert "tenant.callback_secret_rotated" in actions
