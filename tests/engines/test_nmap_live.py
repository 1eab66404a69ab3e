"""The real nmap, run through the adapter's argv, against an HTTP server this test starts on loopback."""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.nmap import NmapEngine

NMAP = shutil.which("nmap")
pytestmark = pytest.mark.skipif(NMAP is None, reason="nmap is not installed")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep nmap's probes out of the test output
        pass


@pytest.fixture
def http_port(tmp_path):
    handler = functools.partial(_Quiet, directory=str(tmp_path))  # serves an empty dir
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_real_nmap_finds_the_loopback_http_server(tmp_path, http_port):
    engine = NmapEngine(NMAP)
    workdir = tmp_path / "work"
    workdir.mkdir()
    options = engine.validate({"ports": str(http_port), "serviceDetection": True,
                               "hostTimeout": 60})
    spec = ScanSpec("live-1", "127.0.0.1", "ip", options, 120, workdir, NMAP)
    argv = engine.build_argv(spec)
    assert argv[-1] == "127.0.0.1"

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=workdir,
                          stdin=subprocess.DEVNULL)

    outcome = engine.outcome(spec, proc.returncode, proc.stderr)
    assert outcome.success, (outcome, proc.stderr)
    findings = list(engine.parse(spec))
    port = [f for f in findings if f.rule_id == "nmap.open-port" and f.port == http_port]
    assert len(port) == 1, findings
    assert (port[0].protocol, port[0].ip, port[0].host) == ("tcp", "127.0.0.1", "127.0.0.1")
    assert port[0].raw["service"].get("name") == "http"
    assert port[0].url == f"http://127.0.0.1:{http_port}/"
    assert engine.progress(spec) is None or 0 <= engine.progress(spec) <= 99
    assert Path(workdir / "nmap.xml").stat().st_size > 0
