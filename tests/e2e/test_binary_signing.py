"""The PyInstaller binary: its post-quantum listener negotiates X25519MLKEM768 and streams a signed
report, and ``verify`` checks that report with no data dir and no network. Needs dist/cix-appliance
(``bash build.sh``); like test_binary.py, a missing binary fails in CI instead of skipping."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e import pqclient
from tests.e2e.server import Server, cli, cli_json
from tests.e2e.test_pq_listener import store_scan
from tests.helpers import free_port

BINARY = Path(__file__).parents[2] / "dist" / "cix-appliance"

pytestmark = [
    pytest.mark.binary,
    pytest.mark.skipif(not BINARY.exists() and not os.environ.get("CI"),
                       reason=f"{BINARY} is missing; build it with `bash build.sh`"),
]


def offline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The binary with no data dir to find (empty HOME, no CIX_DATA_DIR) and, where the kernel lets
    an unprivileged user make one, in a network namespace with no interface but loopback down."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd)}
    prefix = ["unshare", "-rn"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True).returncode == 0 else []
    return subprocess.run([*prefix, str(BINARY), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def test_binary_pq_listener_and_offline_verify(tmp_path: Path) -> None:
    command = [str(BINARY)]
    data_dir = tmp_path / "data"
    admin = cli_json("init", "--data-dir", str(data_dir), "--allow-loopback", command=command)["key"]
    pq_port = free_port()
    cli("config", "set", "--data-dir", str(data_dir), "server.pq_port", str(pq_port), command=command)
    server = Server(data_dir, command=command).start()
    try:
        scan_id = store_scan(data_dir, 200)
        answer = pqclient.request(pq_port, "X25519MLKEM768", data_dir / "tls-cert.pem",
                                  f"/api/v1/scans/{scan_id}/report", admin)
        assert answer.status == 200 and answer.group == "X25519MLKEM768"
        assert server.stop(signal.SIGTERM) == 0, server.log.read_text()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)

    auditor = tmp_path / "auditor"
    auditor.mkdir()
    (auditor / "report.json").write_bytes(answer.body)
    (auditor / "keys.pem").write_text(cli("signing-key", "show", "--pem", "--data-dir", str(data_dir),
                                          command=command))
    done = offline("verify", "report.json", "--public-key", "keys.pem", cwd=auditor)
    assert done.returncode == 0 and "verified" in done.stdout and "200 findings" in done.stdout, done.stderr
    unpinned = offline("verify", "report.json", cwd=auditor)
    assert unpinned.returncode == 0 and "NOT that this appliance signed it" in unpinned.stderr

    body = answer.body
    at = body.index(b'"title":"Finding 5 ') + len(b'"title":"')
    (auditor / "tampered.json").write_bytes(body[:at] + b"G" + body[at + 1:])
    refused = offline("verify", "tampered.json", "--public-key", "keys.pem", cwd=auditor)
    assert refused.returncode == 1 and "NOT VERIFIED" in refused.stderr and "finding #" in refused.stderr
    assert sorted(p.name for p in auditor.iterdir()) == ["keys.pem", "report.json", "tampered.json"]
    # the audit trail the binary wrote, checkpoint at shutdown included, verifies with the binary
    audit = subprocess.run([*command, "audit", "verify", "--data-dir", str(data_dir)], capture_output=True,
                           text=True, timeout=60)
    assert audit.returncode == 0 and "last signed checkpoint" in audit.stdout, audit.stderr
