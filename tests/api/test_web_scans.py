"""The web engines through the in-process API: submit, queue, run the real scanner against
tests/vulnapp.py on 127.0.0.1 (allowed by ``init --allow-loopback``), poll, read /results, cancel.

Select with ``-m web``; needs ``build.sh engines``.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from engines.sqlmap import SqlmapEngine
from tests.api.test_scans import finished
from tests.helpers import await_for, free_port, live_group_members
from tests.vulnapp import vuln_app

pytestmark = [pytest.mark.anyio, pytest.mark.web]
needs = {name: pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed (build.sh engines)")
         for name in ("nikto", "sqlmap", "wapiti")}


async def scan(client, scan_type: str, target: str, options: dict, timeout: float = 180) -> tuple[dict, list]:
    response = await client.post("/api/v1/scans", json={"scanType": scan_type, "target": target,
                                                         "targetType": "url", "options": options})
    assert response.status_code == 201, response.json()
    done = await finished(client, response.json()["data"]["id"], timeout)
    results = (await client.get(f"/api/v1/scans/{done['id']}/results?limit=500")).json()["data"]["findings"]
    return done, results


async def test_engines_lists_the_web_scanners(client):
    engines = {e["scanType"]: e for e in (await client.get("/api/v1/engines")).json()["data"]}
    for name in ("nikto", "sqlmap", "wapiti"):
        if shutil.which(name):
            assert engines[name]["available"] and engines[name]["version"], engines[name]
            assert engines[name]["targetTypes"] == ["url"]
    assert engines["sqlmap"]["version"] in (None, "1.10.10")
    assert engines["wapiti"]["version"] in (None, "3.2.3")
    assert engines["nikto"]["version"] in (None, "2.1.5")
    zap = engines["zap"]
    assert set(zap["options"]["properties"]) == {"scanMode", "maxDurationMinutes", "spiderMaxDepth", "ajaxSpider"}
    if shutil.which("zap.sh") is None:
        assert not zap["available"]
        assert zap["missing"] == ["zap.sh not found on PATH; install OWASP ZAP >= 2.16 and Java 17 and set "
                                  "engines.paths.zap"]


async def test_unsafe_options_are_rejected_before_anything_runs(client):
    for scan_type, options, field in (("sqlmap", {"data": "a=1;reboot"}, "options.data"),
                                      ("sqlmap", {"technique": "BEUX"}, "options.technique"),
                                      ("wapiti", {"modules": "sql,ssrf"}, "options.modules"),
                                      ("nikto", {"tuning": "1 -output /etc/x"}, "options.tuning")):
        if shutil.which(scan_type) is None:
            continue
        response = await client.post("/api/v1/scans", json={"scanType": scan_type, "target": "http://127.0.0.1/",
                                                            "targetType": "url", "options": options})
        assert response.status_code == 400, response.json()
        assert response.json()["code"] == "INVALID_OPTIONS" and field in response.text


@needs["sqlmap"]
async def test_sqlmap_through_the_api_and_its_overhead(client, tmp_path, capsys):
    with vuln_app() as app:
        target = app.url + "item?id=1"
        options = {"technique": "BEU"}
        await scan(client, "sqlmap", target, options)  # warm-up: probe, page cache
        started = time.monotonic()
        done, findings = await scan(client, "sqlmap", target, options)
        through_api = time.monotonic() - started
        engine = SqlmapEngine()
        from engines.base import ScanSpec

        spec = ScanSpec("direct", target, "url", engine.validate(options), 180, tmp_path, shutil.which("sqlmap") or "")
        started = time.monotonic()
        subprocess.run(engine.build_argv(spec), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb",
                                                       "HOME": str(tmp_path)}, timeout=180, check=False)
        direct = time.monotonic() - started
    assert done["status"] == "completed", done
    (finding,) = findings
    assert (finding["engine"], finding["ruleId"], finding["parameter"], finding["cwe"], finding["severity"]) == (
        "sqlmap", "sqlmap.sqli.get", "id", ["CWE-89"], "high")
    assert [f.parameter for f in engine.parse(spec)] == ["id"]
    with capsys.disabled():
        print(f"\nsqlmap direct {direct:.2f} s, submit-to-completed through the API {through_api:.2f} s "
              f"(includes the 0.2 s status polling of this test)")


@needs["wapiti"]
async def test_wapiti_through_the_api_on_a_hostname(client):
    with vuln_app() as app:
        url = f"http://localhost:{app.port}/"
        done, findings = await scan(client, "wapiti", url, {"modules": "sql,xss", "depth": 2})
        assert app.hosts_seen == {f"localhost:{app.port}"}
    assert done["status"] == "completed", done
    by_rule = {(f["ruleId"], f["parameter"]): f for f in findings}
    assert by_rule[("wapiti.sql.sql-injection", "id")]["url"] == url + "item"
    assert by_rule[("wapiti.xss.reflected-cross-site-scripting", "q")]["cwe"] == ["CWE-79"]
    assert {f["host"] for f in findings} == {"localhost"} and {f["ip"] for f in findings} == {"127.0.0.1"}


@needs["nikto"]
async def test_nikto_through_the_api(client):
    with vuln_app() as app:
        done, findings = await scan(client, "nikto", app.url, {"tuning": "b", "maxTimeSeconds": 60})
    assert done["status"] == "completed", done
    assert "nikto.banner" in {f["ruleId"] for f in findings}


@needs["sqlmap"]
async def test_unreachable_url_fails_with_the_reason(client):
    done, findings = await scan(client, "sqlmap", f"http://127.0.0.1:{free_port()}/item?id=1", {})
    assert done["status"] == "failed" and findings == []
    assert done["error"]["code"] == "ENGINE_ERROR" and "unable to connect" in done["error"]["message"]


@needs["wapiti"]
async def test_cancel_a_running_wapiti_scan(client):
    services = client.app.state.services
    with vuln_app() as app:
        response = await client.post("/api/v1/scans", json={
            "scanType": "wapiti", "target": app.url, "targetType": "url",
            "options": {"modules": "sql,xss,timesql", "maxAttackTimeSeconds": 120}})
        scan_id = response.json()["data"]["id"]

        def running_pid() -> int | None:
            row = services.reader.one("SELECT status, pid FROM scans WHERE id = ?", (scan_id,))
            return row["pid"] if row["status"] == "running" and row["pid"] else None

        pid = await await_for(running_pid, 60, what="the wapiti scan to start")
        stdout = Path(services.config.scans_dir / scan_id / "stdout.log")
        # wapiti runs sql, xss, then timesql (seconds per payload): cancel while timesql attacks.
        await await_for(lambda: stdout.is_file() and "Launching module timesql" in stdout.read_text(), 60,
                        what="wapiti to reach its timesql module")
        await anyio.sleep(1)
        cancelled = (await client.post(f"/api/v1/scans/{scan_id}/cancel")).json()["data"]
        assert cancelled["status"] == "cancelled"
        await await_for(lambda: live_group_members(pid) == [], 30, interval=0.2,
                        what="wapiti's process group to exit")
    # SIGINT + "r": wapiti wrote the report of the modules it had run, and the worker stores those findings
    # after the cancel (the cancel itself answered at once).
    async def sql_findings() -> list:
        found = (await client.get(f"/api/v1/scans/{scan_id}/results")).json()["data"]["findings"]
        return [f for f in found if f["ruleId"].startswith("wapiti.sql.")]

    await await_for(sql_findings, 30, what="the findings of the partial report")
    assert (await client.get(f"/api/v1/scans/{scan_id}")).json()["data"]["status"] == "cancelled"
