"""Deliveries run concurrently and bounded; one tenant's slow receiver does not hold up another's;
the outbox is turned into deliveries exactly once even with two dispatchers racing."""
from __future__ import annotations

import asyncio
import time

import pytest

from appliance import clock
from appliance.store.ops import Op
from appliance.webhooks import store
from tests.conftest import make_key, run_cli
from tests.events.common import events_app, expected_signature, new_scan, run_to, services, tenant_id
from tests.events.receiver import Receiver
from tests.helpers import await_for

pytestmark = pytest.mark.anyio


async def queue_deliveries(client, hook_id: str, tenant: str, count: int) -> list[str]:
    """``count`` due deliveries of one webhook, inserted like the dispatcher inserts them."""
    ids, statements = [], []
    now = clock.now()
    for _ in range(count):
        delivery_id = clock.new_id("dlv-")
        body = store.payload(delivery_id, "scan.completed", tenant, {"scan": {"id": "x"}}, now)
        statements.append(store.insert_delivery(delivery_id, tenant, "scan.completed", body, now, 3,
                                                webhook_id=hook_id))
        ids.append(delivery_id)
    await services(client).writer.write(Op(statements))
    services(client).events.deliveries.wake()
    return ids


async def test_many_deliveries_to_a_slow_receiver_run_concurrently(data_dir, admin_key, tmp_path):
    count, answer_in = 120, 0.5
    with Receiver(tmp_path / "rx", delay=answer_in) as receiver:
        async with events_app(data_dir, admin_key, receiver) as client:
            hook = (await client.post("/api/v1/webhooks", json={"name": "h", "url": receiver.url()})).json()["data"]
            started = time.monotonic()
            ids = await queue_deliveries(client, hook["id"], tenant_id(client), count)

            def done() -> bool:
                return services(client).reader.scalar(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'") == count
            await await_for(done, 60, 0.1, "all deliveries")
            elapsed = time.monotonic() - started
    print(f"\n{count} deliveries to a receiver answering in {answer_in} s: {elapsed:.2f} s")
    assert sorted(r.headers["X-CertIX-Delivery"] for r in receiver.received) == sorted(ids)  # each exactly once
    for item in receiver.received:
        assert item.headers["X-CertIX-Signature"] == expected_signature(hook["secret"], item.headers, item.body)


async def test_a_slow_tenant_does_not_delay_another(data_dir, admin_key, tmp_path):
    def respond(item):
        if item.path == "/slow":
            time.sleep(3)
        return 200, {}

    run_cli("tenants", "create", "other", "--data-dir", str(data_dir))
    run_cli("targets", "allow", "--tenant", "other", "--data-dir", str(data_dir), "127.0.0.0/8")
    other_key = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "webhooks:create")["key"]
    with Receiver(tmp_path / "rx", respond=respond) as receiver:
        async with events_app(data_dir, admin_key, receiver, webhooks__concurrency=6,
                              webhooks__tenant_concurrency=4) as client:
            slow = (await client.post("/api/v1/webhooks", json={"name": "s", "url": receiver.url("/slow")})
                    ).json()["data"]
            fast = (await client.post("/api/v1/webhooks", json={"name": "f", "url": receiver.url("/fast")},
                                      headers={"X-API-Key": other_key})).json()["data"]
            await queue_deliveries(client, slow["id"], tenant_id(client), 40)
            await asyncio.sleep(0.5)  # the slow tenant now holds all it may hold
            finished = time.time()
            await run_to(client, await new_scan(client, tenant=tenant_id(client, "other")), "failed")
            arrived = await await_for(lambda: [r for r in receiver.received if r.path == "/fast"], 10, 0.05,
                                      "the other tenant's delivery")
            delay = arrived[0].at - finished
            slow_in_flight = len([r for r in receiver.received if r.path == "/slow"])
    print(f"\nother tenant's delivery arrived {delay:.3f} s after its transition; slow ones started: {slow_in_flight}")
    assert slow_in_flight <= 4 + 1  # the per-tenant cap held
    assert delay < 2.5  # well before any slow slot freed (3 s)
    assert fast["id"] != slow["id"]


async def test_racing_dispatchers_create_each_delivery_once(data_dir, admin_key, tmp_path):
    with Receiver(tmp_path / "rx") as receiver:
        async with events_app(data_dir, admin_key, receiver) as client:
            await client.post("/api/v1/webhooks", json={"name": "h", "url": receiver.url(),
                                                        "events": ["scan.queued", "scan.started", "scan.completed"]})
            dispatcher = services(client).events.dispatcher
            for _ in range(5):
                await run_to(client, await new_scan(client))
            await asyncio.gather(*(dispatcher.run_once() for _ in range(4)))
            await await_for(lambda: len(receiver.received) >= 15, 10, 0.05, "15 deliveries")
            await asyncio.gather(*(dispatcher.run_once() for _ in range(4)))
            rows = services(client).reader.all(
                "SELECT event_id, count(*) AS n FROM webhook_deliveries GROUP BY event_id")
            cursor = dispatcher.cursor()
            last_event = services(client).reader.scalar("SELECT max(id) FROM scan_events")
    assert len(rows) == 15 and all(r["n"] == 1 for r in rows)
    assert cursor == last_event
    assert len({r.headers["X-CertIX-Delivery"] for r in receiver.received}) == len(receiver.received) == 15


async def test_a_wake_landing_with_the_stop_does_not_keep_the_delivery_loop_alive(data_dir, admin_key):
    """The stop cancels the scheduling loop; a wake set in the same instant must not swallow that cancel
    (asyncio.wait_for did, on Python 3.11: shutdown then hung for good)."""
    async with events_app(data_dir, admin_key, None) as client:
        engine = services(client).events.deliveries
        loop_task = next(t for t in asyncio.all_tasks() if t.get_name() == "webhook-deliveries")
        await asyncio.sleep(0.05)  # the loop is waiting for a wake
        engine.wake()
        loop_task.cancel()
        done, _ = await asyncio.wait([loop_task], timeout=5)
        assert loop_task in done and loop_task.cancelled()
