"""trivy and nuclei for real: trivy on a folder the test writes, nuclei with the templates the tests ship
(imported through ``cix-appliance engines import``) against an HTTP server the test starts on 127.0.0.1."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.engine_data import import_bundle
from appliance.scanning.runner import group_alive
from engines.nuclei import NucleiEngine
from engines.trivy import TrivyEngine
from tests.engines.bundles import TEMPLATES
from tests.engines.harness import run_engine
from tests.engines.live import _Lab, lab_http, require

pytestmark = pytest.mark.data_engines
# Built from pieces so that no scanner flags this file itself as a leaked token.
GITHUB_PAT = "ghp_" + "R4nd0mT0k3nV4lu3F0rT3st1ng" + "Only0123456"


def project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM python:3.8\nRUN pip install -r requirements.txt\n"
                                     f"ENV GITHUB_PAT={GITHUB_PAT}\nCMD [\"python\", \"app.py\"]\n")
    (root / "requirements.txt").write_text("urllib3==1.26.3\nflask==0.12\n")
    (root / "app.py").write_text("print('hello')\n")
    return root


def test_trivy_reports_the_misconfiguration_and_the_secret(tmp_path):
    engine = TrivyEngine(require("trivy"), tmp_path / "engine-data" / "trivy")
    src = project(tmp_path / "src")
    run = run_engine(engine, tmp_path / "work", str(src), "filesystem", {"scanners": "misconfig,secret"},
                     timeout=240)
    assert run.outcome.success, (run.outcome, run.result.stderr_tail)
    rules = {f.rule_id: f for f in run.findings}
    misconf = rules.get("trivy.misconfig.DS-0002") or rules.get("trivy.misconfig.DS002")
    assert misconf is not None and misconf.url == "Dockerfile" and misconf.severity == "high", rules
    secret = rules["trivy.secret.github-pat"]
    assert secret.url == "Dockerfile" and secret.severity == "critical" and GITHUB_PAT not in (secret.evidence or "")
    assert not any(f.rule_id.startswith("trivy.vuln.") for f in run.findings)  # no DB, no vuln scanner


def test_trivy_severity_filter(tmp_path):
    engine = TrivyEngine(require("trivy"))
    src = project(tmp_path / "src")
    run = run_engine(engine, tmp_path / "work", str(src), "filesystem",
                     {"scanners": "misconfig,secret", "severity": "critical"}, timeout=240)
    assert run.outcome.success and run.findings
    assert {f.severity for f in run.findings} == {"critical"}


def test_trivy_cancel_kills_the_group(tmp_path):
    engine = TrivyEngine(require("trivy"))
    src = project(tmp_path / "src")
    started = time.monotonic()
    run = run_engine(engine, tmp_path / "work", str(src), "filesystem", {"scanners": "misconfig,secret"},
                     timeout=240, stop=lambda: time.monotonic() - started > 0.5)
    assert run.result.stopped and not run.outcome.success
    assert run.pids and not any(group_alive(pid) for pid in run.pids)


@pytest.fixture
def lab_server() -> Iterator[tuple[int, type[_Lab]]]:
    with lab_http() as server:
        yield server


@pytest.fixture
def nuclei(tmp_path) -> NucleiEngine:
    data_root = tmp_path / "engine-data"
    import_bundle(data_root, "nuclei-templates", TEMPLATES)
    return NucleiEngine(require("nuclei"), data_root / "nuclei")


def test_nuclei_runs_the_imported_template(tmp_path, nuclei, lab_server):
    port, _ = lab_server
    run = run_engine(nuclei, tmp_path / "work", f"http://127.0.0.1:{port}/", "url", {"rateLimit": 20}, timeout=120)
    assert run.outcome.success, (run.outcome, run.result.stderr_tail)
    (finding,) = run.findings  # the admin-panel template must not match
    assert finding.rule_id == "nuclei.cix-lab-canary.build" and finding.severity == "medium"
    assert finding.url == f"http://127.0.0.1:{port}/canary.txt" and finding.cwe == ["CWE-200"]
    assert "build=1234" in (finding.evidence or "")


def test_nuclei_scans_a_name_at_its_vetted_address(tmp_path, nuclei, lab_server):
    port, handler = lab_server
    run = run_engine(nuclei, tmp_path / "work", f"http://cix-lab.test:{port}/", "url", {"tags": "lab"},
                     timeout=120, addresses=("127.0.0.1",))
    assert run.outcome.success, (run.outcome, run.result.stderr_tail)
    assert handler.hosts and set(handler.hosts) == {f"cix-lab.test:{port}"}
    (finding,) = run.findings
    assert finding.host == "cix-lab.test" and finding.url == f"http://cix-lab.test:{port}/canary.txt"


def test_nuclei_template_filter_and_unreachable_target(tmp_path, nuclei, lab_server):
    port, _ = lab_server
    run = run_engine(nuclei, tmp_path / "w1", f"http://127.0.0.1:{port}/", "url",
                     {"templates": "cix-lab-admin-panel"}, timeout=120)
    assert run.outcome.success and run.findings == []
    with pytest.raises(Exception, match="not in the imported templates"):
        nuclei.validate({"templates": "nginx-version"})
    closed = run_engine(nuclei, tmp_path / "w2", "http://127.0.0.1:9/", "url", {"timeoutSeconds": 2}, timeout=120)
    assert not closed.outcome.success and "unreachable" in (closed.outcome.message or ""), closed.outcome


def test_nuclei_cancel_kills_the_group(tmp_path, nuclei, lab_server):
    port, handler = lab_server
    handler.slow = True
    started = time.monotonic()
    run = run_engine(nuclei, tmp_path / "work", f"http://127.0.0.1:{port}/", "url", {"timeoutSeconds": 60},
                     timeout=120, stop=lambda: time.monotonic() - started > 2)
    assert run.result.stopped and time.monotonic() - started < 10
    assert run.pids and not any(group_alive(pid) for pid in run.pids)


def test_trivy_scans_an_image_tarball(tmp_path):
    from tests.engines.bundles import image_tarball

    tarball = image_tarball(tmp_path / "app.tar", {"etc/app.env": f"GITHUB_PAT={GITHUB_PAT}\n".encode(),
                                                   "app/Dockerfile": b"FROM scratch\nCOPY app /app\n"})
    engine = TrivyEngine(require("trivy"))
    run = run_engine(engine, tmp_path / "work", str(tarball), "image", {"scanners": "secret"}, timeout=240)
    assert run.outcome.success, (run.outcome, run.result.stderr_tail)
    (secret,) = [f for f in run.findings if f.rule_id == "trivy.secret.github-pat"]
    assert secret.url == "/etc/app.env" or secret.url == "etc/app.env", secret
    assert secret.host == str(tarball)
