"""Helpers for event tests: the app with webhook settings for a loopback receiver, scan rows driven
through the lifecycle ops directly (the outbox does not care who made a transition)."""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from appliance import clock
from appliance.scanning import lifecycle
from tests.conftest import serve_in_process
from tests.events.receiver import Receiver


def scan_body(port: int, **extra: Any) -> dict[str, Any]:
    """A ``POST /scans`` body that could only ever scan ``port`` on 127.0.0.1 (a server the test runs)."""
    return {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": str(port)}, **extra}


@contextlib.asynccontextmanager
async def events_app(data_dir: Path, key: str, receiver: Receiver | None, hold_scans: bool = True,
                     **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app set up for a loopback receiver. ``hold_scans``: submitted scans stay queued (the
    appliance runs no scan worker, the periodic reconciler waits), so tests drive transitions by hand."""
    settings: dict[str, Any] = {"webhooks__allowed_networks": ["127.0.0.0/8"], "webhooks__retry_schedule": [1, 1, 2]}
    if hold_scans:
        settings["scans__reconcile_interval_seconds"] = 3600
        settings["queue__workers"] = 0
    if receiver is not None:
        settings["webhooks__ca_file"] = str(receiver.ca_file)
    settings.update(overrides)
    async with serve_in_process(data_dir, **settings) as client:
        client.headers["X-API-Key"] = key
        yield client


def services(client: httpx.AsyncClient) -> Any:
    return client.app.state.services  # type: ignore[attr-defined]


def tenant_id(client: httpx.AsyncClient, name: str = "default") -> str:
    return str(services(client).reader.scalar("SELECT id FROM tenants WHERE name = ?", (name,)))


async def new_scan(client: httpx.AsyncClient, callback_url: str | None = None, tenant: str | None = None) -> str:
    """A queued scan row, written like a submission writes it (with its ``scan.queued`` event)."""
    now = clock.now()
    row: dict[str, Any] = {
           "id": clock.new_id(), "tenant_id": tenant or tenant_id(client), "api_key_id": None, "scan_type": "nmap",
           "name": "t", "target": "127.0.0.1", "target_type": "ip", "status": "queued", "priority": "normal",
           "options": "{}", "config": "{}", "tags": "[]", "timeout": 600, "asset_id": None,
           "callback_url": callback_url, "created_at": now, "queued_at": now}
    await services(client).writer.write(lifecycle.submit(row))
    return row["id"]


async def run_to(client: httpx.AsyncClient, scan_id: str, status: str = "completed") -> None:
    """queued → running → ``status``, as a worker holding the lease would."""
    lease = lifecycle.new_lease()
    writer = services(client).writer
    assert (await writer.write(lifecycle.claim(scan_id, lease, "test", "test", 60, [])))[0] == 1
    code = "ENGINE_ERROR" if status == "failed" else None
    assert (await writer.write(lifecycle.finish(scan_id, lease, status, code, "boom" if code else None)))[0] == 1


def expected_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    digest = hmac.new(secret.encode(), headers["X-CertIX-Timestamp"].encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def events_of(receiver: Receiver) -> list[str]:
    return [json.loads(r.body)["event"] for r in receiver.received]
