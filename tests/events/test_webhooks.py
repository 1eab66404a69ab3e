"""Webhooks over a real HTTPS receiver on loopback: CRUD, signed deliveries, retries with a stable
delivery id across a restart, health, redeliver, rotation, test events."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import time

import pytest

from tests.conftest import make_key
from tests.events.common import events_app, events_of, expected_signature, new_scan, run_to, services, tenant_id
from tests.events.receiver import Receiver
from tests.helpers import await_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver(tmp_path):
    with Receiver(tmp_path / "rx") as r:
        yield r


async def create_hook(client, url, **body):
    response = await client.post("/api/v1/webhooks", json={"name": "ci", "url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def test_scan_events_arrive_signed_once_each(data_dir, admin_key, receiver):
    async with events_app(data_dir, admin_key, receiver) as client:
        hook = await create_hook(client, receiver.url(), events=["scan.queued", "scan.started", "scan.completed"])
        assert re.fullmatch(r"wh-[0-9a-f-]{36}", hook["id"])
        assert re.fullmatch(r"whsec_[0-9a-f]{64}", hook["secret"])
        assert hook["isActive"] is True and hook["isHealthy"] is True
        assert "secret" not in (await client.get(f"/api/v1/webhooks/{hook['id']}")).json()["data"]
        scan_id = await new_scan(client)
        await run_to(client, scan_id, "completed")
        finished = time.time()
        await await_for(lambda: len(receiver.received) >= 3, 10, 0.05, "three deliveries")
        final = next(r for r in receiver.received if r.headers["X-CertIX-Event"] == "scan.completed")
        print(f"\nfinal event reached the receiver {final.at - finished:.3f} s after the transition")
        # Deliveries run concurrently: arrival order is not guaranteed.
        order = ["scan.queued", "scan.started", "scan.completed"]
        receiver.received.sort(key=lambda r: order.index(r.headers["X-CertIX-Event"]))
        assert events_of(receiver) == order
        ids = set()
        for item in receiver.received:
            headers, body = item.headers, item.body
            payload = json.loads(body)
            assert headers["X-CertIX-Signature"] == expected_signature(hook["secret"], headers, body)
            assert abs(int(headers["X-CertIX-Timestamp"]) - time.time()) < 30
            assert headers["X-CertIX-Event"] == payload["event"]
            assert headers["X-CertIX-Delivery"] == payload["id"] and payload["id"].startswith("dlv-")
            assert headers["Content-Type"] == "application/json"
            assert payload["tenantId"] == tenant_id(client)
            assert payload["data"]["scan"]["id"] == scan_id
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", payload["createdAt"])
            ids.add(payload["id"])
        assert len(ids) == 3
        assert json.loads(receiver.received[2].body)["data"]["scan"]["status"] == "completed"
        async def recorded() -> dict | None:  # the receiver answers before the appliance records it
            listed = (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()
            return listed if all(d["status"] == "succeeded" for d in listed["data"]) else None
        deliveries = await await_for(recorded, 10, 0.05, "the deliveries to be recorded as succeeded")
        assert deliveries["pagination"]["total"] == 3
        newest = deliveries["data"][0]
        assert newest["event"] == "scan.completed" and newest["status"] == "succeeded"
        assert newest["attempt"] == 1 and newest["responseStatus"] == 200 and newest["scanId"] == scan_id
        assert newest["responseBodyExcerpt"] == '{"ok": true}' and newest["deliveredAt"]
        # The dispatcher's cursor has moved past every event: nothing is delivered twice.
        await services(client).events.dispatcher.run_once()
    assert len(receiver.received) == 3


async def test_unsubscribed_events_and_inactive_hooks_get_nothing(data_dir, admin_key, receiver):
    async with events_app(data_dir, admin_key, receiver) as client:
        hook = await create_hook(client, receiver.url())  # default: completed, failed
        off = await create_hook(client, receiver.url("/off"))
        patched = await client.patch(f"/api/v1/webhooks/{off['id']}", json={"isActive": False})
        assert patched.json()["data"]["isActive"] is False
        for status in ("failed", "cancelled"):
            await run_to(client, await new_scan(client), status)
        await await_for(lambda: receiver.received, 10, 0.05, "a delivery")
        await services(client).events.dispatcher.run_once()
        await asyncio.sleep(0.5)
        assert events_of(receiver) == ["scan.failed"]
        assert {r.path for r in receiver.received} == {"/hook"}
        failed = json.loads(receiver.received[0].body)["data"]["scan"]
        assert failed["status"] == "failed" and failed["error"] == {"code": "ENGINE_ERROR", "message": "boom"}
        assert hook["events"] == ["scan.completed", "scan.failed"]


async def test_retries_keep_the_delivery_id_across_a_restart(data_dir, admin_key, receiver):
    answers = iter([500, 503])
    receiver.respond = lambda item: (next(answers, 200), {})
    async with events_app(data_dir, admin_key, receiver, webhooks__retry_schedule=[1, 1, 2]) as client:
        hook = await create_hook(client, receiver.url())
        await run_to(client, await new_scan(client))
        await await_for(lambda: len(receiver.received) >= 1, 10, 0.05, "first attempt")
    # The server stops after the first failed attempt; the retry is in the table, not in memory.
    assert len(receiver.received) == 1
    async with events_app(data_dir, admin_key, receiver, webhooks__retry_schedule=[1, 1, 2]) as client:
        await await_for(lambda: len(receiver.received) >= 3, 15, 0.1, "two retries")
        deliveries = (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
        assert len(deliveries) == 1
        delivery = await await_for(lambda: _succeeded(client, hook["id"]), 5, 0.1, "succeeded status")
    ids = {r.headers["X-CertIX-Delivery"] for r in receiver.received}
    bodies = {r.body for r in receiver.received}
    assert ids == {delivery["id"]} and len(bodies) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.received)]
    assert all(gap >= 0.7 for gap in gaps), gaps  # 1 s +-20% jitter
    assert delivery["attempt"] == 3 and delivery["status"] == "succeeded" and delivery["responseStatus"] == 200
    for item in receiver.received:
        assert item.headers["X-CertIX-Signature"] == expected_signature(hook["secret"], item.headers, item.body)


async def _succeeded(client, hook_id):
    data = (await client.get(f"/api/v1/webhooks/{hook_id}/deliveries")).json()["data"]
    return data[0] if data and data[0]["status"] == "succeeded" else None


async def test_failures_exhaust_retries_then_health_redeliver_recovers(data_dir, admin_key, receiver):
    receiver.respond = lambda item: (500, {})
    async with events_app(data_dir, admin_key, receiver, webhooks__retry_schedule=[0.2, 0.2]) as client:
        hook = await create_hook(client, receiver.url())
        for _ in range(2):
            await run_to(client, await new_scan(client), "failed")

        async def all_failed():
            data = (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
            return data if len(data) == 2 and all(d["status"] == "failed" for d in data) else None
        deliveries = await await_for(all_failed, 15, 0.1, "both deliveries to fail")
        assert all(d["attempt"] == 3 and d["error"] == "HTTP 500" and d["nextAttemptAt"] is None for d in deliveries)
        state = (await client.get(f"/api/v1/webhooks/{hook['id']}")).json()["data"]
        assert state["isHealthy"] is False and state["consecutiveFailures"] == 6
        receiver.respond = lambda item: (204, {})
        target = deliveries[1]["id"]
        response = await client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{target}/redeliver")
        assert response.status_code == 202 and response.json()["data"]["status"] == "pending"
        await await_for(lambda: _status(client, hook["id"], target), 10, 0.1, "redelivery")
        assert receiver.received[-1].headers["X-CertIX-Delivery"] == target
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}")).json()["data"]["isHealthy"] is True
        again = await client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{target}/redeliver")
        assert again.status_code == 202
        missing = await client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/dlv-nope/redeliver")
        assert missing.status_code == 404 and missing.json()["code"] == "DELIVERY_NOT_FOUND"


async def _status(client, hook_id, delivery_id):
    data = (await client.get(f"/api/v1/webhooks/{hook_id}/deliveries")).json()["data"]
    return any(d["id"] == delivery_id and d["status"] == "succeeded" for d in data)


async def test_redirects_are_not_followed(data_dir, admin_key, receiver):
    receiver.respond = lambda item: ((302, {"Location": receiver.url("/elsewhere")}) if item.path == "/hook"
                                     else (200, {}))
    async with events_app(data_dir, admin_key, receiver) as client:
        hook = await create_hook(client, receiver.url())
        result = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
    assert result["status"] == "failed" and result["responseStatus"] == 302
    assert result["error"] == "redirect not followed"
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_test_event_rotation_sends_both_signatures(data_dir, admin_key, receiver):
    async with events_app(data_dir, admin_key, receiver, webhooks__secret_grace_hours=2) as client:
        hook = await create_hook(client, receiver.url())
        result = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
        assert result["event"] == "webhook.test" and result["status"] == "succeeded" and result["attempt"] == 1
        first = receiver.received[-1]
        assert first.headers["X-CertIX-Event"] == "webhook.test"
        assert first.headers["X-CertIX-Signature"] == expected_signature(hook["secret"], first.headers, first.body)
        assert json.loads(first.body)["data"]["webhook"]["id"] == hook["id"]
        rotated = (await client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret")).json()["data"]
        assert rotated["secret"] != hook["secret"] and rotated["previousSecretExpiresAt"]
        await client.post(f"/api/v1/webhooks/{hook['id']}/test")
        second = receiver.received[-1]
        new_sig = expected_signature(rotated["secret"], second.headers, second.body)
        old_sig = expected_signature(hook["secret"], second.headers, second.body)
        assert second.headers["X-CertIX-Signature"] == f"{new_sig},{old_sig}"
    async with events_app(data_dir, admin_key, receiver, webhooks__secret_grace_hours=0) as client:
        hook2 = await create_hook(client, receiver.url())
        rotated = (await client.post(f"/api/v1/webhooks/{hook2['id']}/rotate-secret")).json()["data"]
        await client.post(f"/api/v1/webhooks/{hook2['id']}/test")
        third = receiver.received[-1]
        assert third.headers["X-CertIX-Signature"] == expected_signature(rotated["secret"], third.headers, third.body)


async def test_crud_validation_scopes_and_tenancy(data_dir, admin_key, receiver):
    async with events_app(data_dir, admin_key, receiver) as client:
        bad = [({"url": receiver.url()}, "name"), ({"name": "x", "url": "http://example.com/h"}, "url"),
               ({"name": "x", "url": receiver.url(), "events": ["scan.exploded"]}, "events[0]"),
               ({"name": "x", "url": receiver.url(), "events": []}, "events"),
               ({"name": "x", "url": receiver.url(), "isActive": "yes"}, "isActive"),
               ({"name": "x", "url": receiver.url(), "secret": "mine"}, "secret")]
        for body, field in bad:
            response = await client.post("/api/v1/webhooks", json=body)
            assert response.status_code == 400 and response.json()["details"][0]["field"] == field, body
        hook = await create_hook(client, receiver.url())
        listed = (await client.get("/api/v1/webhooks")).json()
        assert listed["pagination"]["total"] == 1 and "secret" not in listed["data"][0]
        reader_key = make_key(data_dir, "--name", "r", "--scope", "webhooks:read")["key"]
        denied = await client.post("/api/v1/webhooks", json={"name": "x", "url": receiver.url()},
                                   headers={"X-API-Key": reader_key})
        assert denied.status_code == 403 and "webhooks:create" in denied.json()["error"]
        for method, suffix in (("delete", ""), ("patch", ""), ("post", "/test"), ("post", "/rotate-secret")):
            response = await client.request(method.upper(), f"/api/v1/webhooks/{hook['id']}{suffix}",
                                            json={"name": "y"}, headers={"X-API-Key": reader_key})
            assert response.status_code == 403, (method, suffix)
        run_cli_tenant(data_dir)
        other = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "webhooks:read",
                         "--scope", "webhooks:delete")["key"]
        for path in (f"/api/v1/webhooks/{hook['id']}", f"/api/v1/webhooks/{hook['id']}/deliveries"):
            response = await client.get(path, headers={"X-API-Key": other})
            assert response.status_code == 404 and response.json()["code"] == "WEBHOOK_NOT_FOUND"
        gone = await client.delete(f"/api/v1/webhooks/{hook['id']}", headers={"X-API-Key": other})
        assert gone.status_code == 404
        assert (await client.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 200
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404


def run_cli_tenant(data_dir):
    from tests.conftest import run_cli
    run_cli("tenants", "create", "other", "--data-dir", str(data_dir))


async def test_secrets_are_encrypted_at_rest_with_the_data_dir_key(data_dir, admin_key, receiver):
    key_file = data_dir / "webhook-secrets.key"
    assert key_file.stat().st_mode & 0o777 == 0o600  # made by init
    key_file.unlink()  # an older data dir: the first start makes it
    async with events_app(data_dir, admin_key, receiver) as client:
        assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
        hook = await create_hook(client, receiver.url())
        stored = services(client).reader.scalar("SELECT secret FROM webhooks WHERE id = ?", (hook["id"],))
        services(client).writer.flush()
        await services(client).writer.write()
    assert stored.startswith("v1:") and hook["secret"] not in stored
    raw = b"".join(p.read_bytes() for p in data_dir.glob("appliance.db*"))
    assert hook["secret"].encode() not in raw and hook["secret"][6:].encode() not in raw
    # The sealed secret is bound to its webhook: moved to another row it does not open.
    from appliance.webhooks.secretbox import SecretBox
    box = SecretBox.open(data_dir)
    assert box.unseal(stored, hook["id"]) == hook["secret"]
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        box.unseal(stored, "wh-other")


async def test_events_go_only_to_the_scans_tenant(data_dir, admin_key, receiver):
    run_cli_tenant(data_dir)
    other_key = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "webhooks:create",
                         "--scope", "webhooks:read", "--scope", "webhooks:update")["key"]
    async with events_app(data_dir, admin_key, receiver) as client:
        theirs = (await client.post("/api/v1/webhooks", json={"name": "t", "url": receiver.url("/theirs")},
                                    headers={"X-API-Key": other_key})).json()["data"]
        ours = await create_hook(client, receiver.url("/ours"))
        await run_to(client, await new_scan(client))
        await await_for(lambda: receiver.received, 10, 0.05, "our delivery")
        await services(client).events.dispatcher.run_once()
        await asyncio.sleep(0.3)
        assert [r.path for r in receiver.received] == ["/ours"]
        delivery = (await client.get(f"/api/v1/webhooks/{ours['id']}/deliveries")).json()["data"][0]
        # Another tenant cannot redeliver it through its own webhook.
        response = await client.post(f"/api/v1/webhooks/{theirs['id']}/deliveries/{delivery['id']}/redeliver",
                                     headers={"X-API-Key": other_key})
        assert response.status_code == 404 and response.json()["code"] == "DELIVERY_NOT_FOUND"


async def test_pending_deliveries_of_a_deactivated_webhook_are_not_sent(data_dir, admin_key, receiver):
    receiver.respond = lambda item: (500, {})
    async with events_app(data_dir, admin_key, receiver, webhooks__retry_schedule=[1]) as client:
        hook = await create_hook(client, receiver.url())
        await run_to(client, await new_scan(client))
        await await_for(lambda: receiver.received, 10, 0.05, "the first attempt")
        await client.patch(f"/api/v1/webhooks/{hook['id']}", json={"isActive": False})

        async def ended():
            data = (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
            return data[0] if data[0]["status"] == "failed" else None
        delivery = await await_for(ended, 10, 0.1, "the delivery to end")
        assert delivery["error"] == "the webhook is not active" and delivery["attempt"] == 2
        assert len(receiver.received) == 1
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}")).json()["data"]["consecutiveFailures"] == 1


async def test_a_slow_receiver_times_out_and_answers_are_cut_to_1_kib(data_dir, admin_key, receiver, monkeypatch):
    monkeypatch.setattr("appliance.webhooks.delivery.TIMEOUT", 0.5)  # the real limit is 10 s
    receiver.reply = b"x" * 5000
    async with events_app(data_dir, admin_key, receiver) as client:
        hook = await create_hook(client, receiver.url())
        quick = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
        assert quick["status"] == "succeeded" and quick["responseBodyExcerpt"] == "x" * 1024
        receiver.delay = 1.5
        started = time.monotonic()
        slow = (await client.post(f"/api/v1/webhooks/{hook['id']}/test")).json()["data"]
        assert time.monotonic() - started < 1.4
    assert slow["status"] == "failed" and slow["error"] == "no answer within 0.5 s" and slow["responseStatus"] is None
