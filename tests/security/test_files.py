"""Issue 10, files at rest (item 14): after a real scan, everything the appliance wrote is owner-only,
whatever umask it was started with."""
from __future__ import annotations

import os
import shutil
import signal
import stat

import pytest

from tests.e2e.server import Server, cli_json
from tests.helpers import http_target

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (.ci/run installs it)")]


@pytest.fixture
def loose_umask():
    """The umask the report was made with (a default shell's): the appliance must not depend on it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_database_queue_and_scan_output_are_private_after_a_real_scan(tmp_path, loose_umask):
    data = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data), "--allow-loopback")["key"]
    server = Server(data).start()
    try:
        with http_target() as port, server.client(admin) as c:
            scan = c.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1",
                                                 "options": {"ports": str(port)}}).json()["data"]
            assert server.wait_scan(c, scan["id"])["status"] == "completed"
        names = {p.name for p in data.iterdir()}
        assert {"queue.db", "queue.db-wal", "queue.db-shm", "appliance.db-wal"} <= names  # while serving
        loose = []
        for root, dirs, files in os.walk(data):
            for name in dirs:
                if stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) & 0o077:
                    loose.append(os.path.join(root, name))
            for name in files:
                if stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) != 0o600:
                    loose.append(f"{os.path.join(root, name)} {oct(os.stat(os.path.join(root, name)).st_mode)}")
        assert (data / "scans" / scan["id"] / "nmap.xml").exists()
        assert loose == []
        assert server.stop() == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
