"""How long 1,000 webhook deliveries take to a receiver that answers each in 1 s.

Starts the appliance in-process on a fresh data dir, an HTTPS receiver on 127.0.0.1 (test CA,
``webhooks.ca_file``, ``webhooks.allowed_networks = ["127.0.0.0/8"]``), queues the deliveries
as the dispatcher does and prints the time until the last one has succeeded.

    .venv/bin/python bench/webhooks.py [--count 1000] [--answer-in 1.0]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import run_cli
from tests.events.common import events_app, services, tenant_id
from tests.events.receiver import Receiver
from tests.events.test_delivery_load import queue_deliveries


async def main(count: int, answer_in: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = json.loads(run_cli("init", "--data-dir", str(data_dir), "--json"))["key"]
        with Receiver(Path(tmp) / "rx", delay=answer_in) as receiver:
            async with events_app(data_dir, key, receiver) as client:
                hook = (await client.post("/api/v1/webhooks", json={"name": "bench", "url": receiver.url()})
                        ).json()["data"]
                cfg = services(client).config
                started = time.monotonic()
                await queue_deliveries(client, hook["id"], tenant_id(client), count)
                reader = services(client).reader
                done = "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'"
                while reader.scalar(done) < count:
                    await asyncio.sleep(0.05)
                elapsed = time.monotonic() - started
        unique = len({r.headers["X-CertIX-Delivery"] for r in receiver.received})
    print(f"{count} deliveries to a receiver answering in {answer_in:g} s: {elapsed:.1f} s "
          f"({count / elapsed:.0f}/s; webhooks.concurrency={cfg['webhooks.concurrency']}, "
          f"tenant_concurrency={cfg['webhooks.tenant_concurrency']}; {len(receiver.received)} requests, "
          f"{unique} distinct delivery ids)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--answer-in", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.answer_in))
