"""trivy and nuclei through the whole appliance: offline data imported and targets allowed with the CLI,
scans submitted to the in-process API, run by the embedded queue, results read back. Plus the OSINT
scan types' names and their data check at submit (OSINT scans themselves run only inside a network
namespace: tests/engines/test_osint_live.py)."""
from __future__ import annotations

import os

import pytest

from tests.api.test_scans import finished
from tests.conftest import make_key, run_cli_async, serve_in_process
from tests.engines.bundles import TEMPLATES
from tests.engines.live import binary, lab_http
from tests.engines.test_data_engines_live import GITHUB_PAT, project

pytestmark = pytest.mark.anyio


def _paths() -> dict[str, str]:
    return {name: path for name, tool in (("trivy", "trivy"), ("nuclei", "nuclei"),
                                          ("harvester", "harvester_windows"), ("sublist3r", "sublist3r"))
            if (path := binary(tool)) is not None}


@pytest.mark.data_engines
async def test_trivy_scan_through_the_api(tmp_path, data_dir, admin_key):
    if "trivy" not in _paths():
        # ./test.sh installs it (CI sets CI=true): there, a missing scanner is a failure, not a skip.
        assert not os.environ.get("CI"), "trivy is missing although ./test.sh installs it"
        pytest.skip("trivy is not installed (bash build.sh engines)")
    src = project(tmp_path / "builds" / "app")
    await run_cli_async("targets", "allow", "--data-dir", str(data_dir), f"path:{tmp_path / 'builds'}")
    async with serve_in_process(data_dir, engines__paths=_paths()) as client:
        client.headers["X-API-Key"] = admin_key
        response = await client.post("/api/v1/scans", json={
            "scanType": "trivy", "target": str(src), "options": {"scanners": "misconfig,secret"}})
        assert response.status_code == 201, response.text
        scan = response.json()["data"]
        assert scan["targetType"] == "filesystem"
        done = await finished(client, scan["id"], timeout=180)
        assert done["status"] == "completed", done
        findings = (await client.get(f"/api/v1/scans/{scan['id']}/results")).json()["data"]["findings"]
    rules = {f["ruleId"] for f in findings}
    assert "trivy.secret.github-pat" in rules and rules & {"trivy.misconfig.DS-0002", "trivy.misconfig.DS002"}
    assert all(GITHUB_PAT not in (f["evidence"] or "") for f in findings)
    assert done["resultSummary"]["critical"] >= 1


@pytest.mark.data_engines
async def test_nuclei_scan_through_the_api(data_dir, admin_key):
    if "nuclei" not in _paths():
        # ./test.sh installs it (CI sets CI=true): there, a missing scanner is a failure, not a skip.
        assert not os.environ.get("CI"), "nuclei is missing although ./test.sh installs it"
        pytest.skip("nuclei is not installed (bash build.sh engines)")
    async with serve_in_process(data_dir, engines__paths=_paths()) as client:
        client.headers["X-API-Key"] = admin_key
        early = await client.post("/api/v1/scans", json={"scanType": "nuclei", "target": "http://127.0.0.1:9/"})
        assert early.status_code == 503 and "nuclei-templates" in early.json()["error"]
        await run_cli_async("engines", "import", "--data-dir", str(data_dir), "nuclei-templates", str(TEMPLATES))
        engines = (await client.get("/api/v1/engines")).json()["data"]
        nuclei = next(e for e in engines if e["scanType"] == "nuclei")
        assert nuclei["available"] and nuclei["offlineData"][0]["version"] and nuclei["offlineDataAge"] is not None
        with lab_http() as (port, handler):
            response = await client.post("/api/v1/scans", json={
                "scanType": "nuclei", "target": f"http://127.0.0.1:{port}/", "options": {"tags": "cix"}})
            assert response.status_code == 201, response.text
            done = await finished(client, response.json()["data"]["id"], timeout=120)
        assert done["status"] == "completed", done
        results = (await client.get(f"/api/v1/scans/{done['id']}/results")).json()["data"]
    (finding,) = results["findings"]
    assert finding["ruleId"] == "nuclei.cix-lab-canary.build" and finding["severity"] == "medium"
    assert finding["url"] == f"http://127.0.0.1:{port}/canary.txt" and handler.hosts


async def test_osint_scan_types_and_their_wordlist(tmp_path, data_dir, admin_key):
    async with serve_in_process(data_dir, engines__paths=_paths()) as client:
        client.headers["X-API-Key"] = admin_key
        old = await client.post("/api/v1/scans", json={"scanType": "theharvester", "target": "lab.test"})
        assert old.status_code == 400 and old.json()["code"] == "INVALID_SCAN_TYPE"
        names = {e["scanType"] for e in (await client.get("/api/v1/engines")).json()["data"]}
        assert "harvester" in names and "theharvester" not in names
        for scan_type in ("harvester", "sublist3r"):
            if scan_type not in _paths():
                continue
            response = await client.post("/api/v1/scans", json={"scanType": scan_type, "target": "lab.test",
                                                                 "options": {"bruteforce": True}})
            assert response.status_code == 503 and "wordlist" in response.json()["error"], response.text
    key = make_key(data_dir, "--name", "osint", "--scan-type", "harvester")
    assert key["allowedScanTypes"] == ["harvester"]
