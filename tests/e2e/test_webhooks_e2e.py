"""End to end: a real ``serve`` process delivers a signed webhook over TLS to a receiver on
127.0.0.1, is killed after the first (failed) attempt, and retries after its restart with the
same delivery id; the audit chain verifies afterwards."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.server import APPLIANCE, Server, cli, cli_json
from tests.events.common import expected_signature, scan_body
from tests.events.receiver import Receiver
from tests.helpers import http_target, wait_for

pytestmark = pytest.mark.e2e
BINARY = Path(__file__).parents[2] / "dist" / "cix-appliance"
FROZEN = pytest.param([str(BINARY)], id="binary", marks=[pytest.mark.binary, pytest.mark.skipif(
    not BINARY.exists() and not os.environ.get("CI"), reason=f"{BINARY} is missing; build it with `bash build.sh`")])


@pytest.mark.parametrize("command", [pytest.param(APPLIANCE, id="source"), FROZEN])
def test_delivery_survives_a_crash_between_attempts(tmp_path, command):
    data = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data), "--allow-loopback", command=command)["key"]
    assert (data / "webhook-secrets.key").stat().st_mode & 0o777 == 0o600
    answers = iter([503])
    with Receiver(tmp_path / "rx", respond=lambda item: (next(answers, 200), {})) as receiver, \
            http_target() as port:
        for key, value in (("webhooks.allowed_networks", '["127.0.0.0/8"]'),
                           ("webhooks.ca_file", f'"{receiver.ca_file}"'), ("webhooks.retry_schedule", "[1, 1]")):
            cli("config", "set", "--data-dir", str(data), key, value, command=command)
        server = Server(data, command).start()
        try:
            with server.client(admin) as c:
                hook = c.post("/api/v1/webhooks", json={"name": "e2e", "url": receiver.url(),
                                                        "events": ["scan.queued"]}).json()["data"]
                assert c.post("/api/v1/scans", json=scan_body(port)).status_code == 201
                wait_for(lambda: receiver.received, 15, 0.1, "the first attempt")

                def recorded():
                    data_ = c.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
                    return data_ and data_[0]["attempt"] == 1 and data_[0]["status"] == "pending"
                # Killed before the attempt is recorded, the delivery would be sent again as a first
                # attempt (at least once); wait for the record to make the count exact.
                wait_for(recorded, 10, 0.05, "the failed attempt to be recorded")
            assert server.stop(signal.SIGKILL) != 0  # a crash: the retry lives only in the table
            server = Server(data, command).start()
            wait_for(lambda: len(receiver.received) >= 2, 20, 0.1, "the retry after the restart")
            with server.client(admin) as c:
                def succeeded():
                    data_ = c.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
                    return data_ if data_ and data_[0]["status"] == "succeeded" else None
                deliveries = wait_for(succeeded, 15, 0.2, "the succeeded delivery")
            assert server.stop() == 0
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.stop(signal.SIGKILL)
    first, second = receiver.received[:2]
    assert len(deliveries) == 1 and deliveries[0]["attempt"] == 2 and deliveries[0]["responseStatus"] == 200
    assert first.headers["X-CertIX-Delivery"] == second.headers["X-CertIX-Delivery"] == deliveries[0]["id"]
    assert first.body == second.body
    for item in (first, second):
        assert item.headers["X-CertIX-Signature"] == expected_signature(hook["secret"], item.headers, item.body)
    assert "audit chain ok" in cli("audit", "verify", "--data-dir", str(data), command=command)
