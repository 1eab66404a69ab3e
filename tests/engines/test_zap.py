"""The ZAP adapter: its parser on real ZAP reports (XML and JSON), and its control flow against a fake
ZAP daemon (``fake_zap.py``) run as the adapter's ``zap.sh`` — ZAP's scan rules are in no registry
the project reaches, so a real ZAP scan cannot run here."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engines.options import OptionError
from engines.registry import build_registry
from engines.zap import ZapEngine
from engines.zap_report import load_report, parse_report
from tests.engines import fake_zap
from tests.engines.harness import run_engine
from tests.helpers import live_group_members

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "zaproxy"
BCGOV = FIXTURES / "ext-bcgov_pipeline-templates_report_json.json"


# -- parser -------------------------------------------------------------------------------------
def test_json_report():
    findings = list(parse_report(BCGOV))
    assert len(findings) == 61  # one per instance
    csp = next(f for f in findings if f.rule_id == "zap.10038-1")
    assert (csp.title, csp.severity, csp.confidence, csp.cwe) == (
        "Content Security Policy (CSP) Header Not Set", "medium", "high", ["CWE-693"])
    assert (csp.host, csp.port) == ("www.itsecgames.com", 80)
    assert csp.url.startswith("http://www.itsecgames.com")
    assert "<p>" not in csp.description and csp.description.startswith("Content Security Policy (CSP) is")
    mdn = "https://developer.mozilla.org/en-US/docs/Web/Security/CSP/Introducing_Content_Security_Policy"
    assert mdn in csp.references
    assert csp.raw["pluginid"] == "10038" and csp.raw["wascid"] == "15"


def test_lean_json_report_without_optional_keys():
    findings = list(parse_report(FIXTURES / "ext-sshniro_javascript-action_report_json.json"))
    assert len(findings) == 27
    assert all(f.rule_id.startswith("zap.") and f.url.startswith("https://www.example.com") for f in findings)


@pytest.mark.parametrize("name, count", [("dd-juicy2.xml", 86), ("dd-dvwa_baseline_dojo.xml", 124),
                                         ("dd-zap_2.16.1_with_req_resp.xml", 13),
                                         ("dd-zap-xml-plus-format.xml", 1), ("dd-empty_2.9.0.xml", 0)])
def test_xml_reports(name, count):
    findings = list(parse_report(FIXTURES / name))
    assert len(findings) == count
    for f in findings:
        assert f.severity in ("info", "low", "medium", "high")
        assert all(c.startswith("CWE-") and int(c[4:]) > 0 for c in f.cwe)


def test_xml_instance_fields():
    findings = list(parse_report(FIXTURES / "dd-zap_2.16.1_with_req_resp.xml"))
    auth = next(f for f in findings if f.parameter == "user_identifier")
    assert (auth.rule_id, auth.severity, auth.confidence, auth.host, auth.port) == (
        "zap.10111", "info", "low", "example-domain.com", 443)
    assert "method: POST" in auth.evidence and "evidence: passwordless_code" in auth.evidence


def test_risk_confidence_and_cwe_mapping(tmp_path):
    report = json.loads(BCGOV.read_text())
    alert = report["site"][0]["alerts"][0]
    report["site"][0]["alerts"] = [alert | {"riskcode": "3", "confidence": "4", "cweid": "-1"},
                                   alert | {"alertRef": "fp", "confidence": "0"},
                                   alert | {"alertRef": "cve", "otherinfo": "see CVE-2021-44228"}]
    path = tmp_path / "zap.json"
    path.write_text(json.dumps(report))
    findings = list(parse_report(path))
    assert {f.rule_id for f in findings} == {"zap.10038-1", "zap.cve"}  # confidence 0: a false positive
    high = next(f for f in findings if f.rule_id == "zap.10038-1")
    assert (high.severity, high.confidence, high.cwe) == ("high", "high", [])
    assert next(f for f in findings if f.rule_id == "zap.cve").cve == ["CVE-2021-44228"]


def test_broken_reports_yield_nothing(tmp_path):
    (tmp_path / "cut.json").write_text(BCGOV.read_text()[:5000])
    assert load_report(tmp_path / "cut.json") is None and list(parse_report(tmp_path / "cut.json")) == []
    assert list(parse_report(tmp_path / "missing.json")) == []


# -- options and availability -----------------------------------------------------------------
def test_options():
    engine = ZapEngine()
    assert engine.validate({"scanMode": "full", "maxDurationMinutes": 5, "spiderMaxDepth": 2, "ajaxSpider": False})
    with pytest.raises(OptionError) as err:
        engine.validate({"ajaxSpider": True})
    assert err.value.field == "options.ajaxSpider" and "browser" in err.value.message
    for name, value in (("scanMode", "quick"), ("maxDurationMinutes", 0), ("spiderMaxDepth", 21)):
        with pytest.raises(OptionError, match=rf"options\.{name}"):
            engine.validate({name: value})
    with pytest.raises(OptionError, match="spiderMaxDepth"):
        engine.validate({"scanMode": "api", "spiderMaxDepth": 3})


def test_missing_zap_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    found = build_registry()["zap"].probe()
    assert not found.installed and not found.available
    assert found.missing == ("zap.sh not found on PATH; install OWASP ZAP >= 2.16 and Java 17 and set "
                             "engines.paths.zap",)


# -- control flow against the fake daemon ------------------------------------------------------
@pytest.fixture
def fake(tmp_path):
    """``make(mode, report=…)`` → (engine, log path)."""
    def make(mode: str = "ok", report: Path = BCGOV, **extra: object) -> tuple[ZapEngine, Path]:
        log = tmp_path / f"calls-{mode}.jsonl"
        exe = fake_zap.write_executable(tmp_path / "zap.sh", {"mode": mode, "report": str(report),
                                                               "log": str(log), **extra})
        return build_registry({"zap": str(exe)})["zap"], log  # type: ignore[return-value]
    return make


def _paths(log: Path) -> list[str]:
    return [c["path"] for c in fake_zap.calls(log) if "path" in c]


def _no_process_left(run, log: Path) -> None:
    children = [c["child"] for c in fake_zap.calls(log) if "child" in c]
    for pid in run.pids:
        assert live_group_members(pid) == []
    assert children  # the fake's stand-in for ZAP's JVM
    for pid in children:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"ZAP's child {pid} still runs"


def _local_report(tmp_path: Path, origin: str) -> Path:
    """The real bcgov report with its site moved to ``origin`` (what ZAP would report for our target)."""
    text = BCGOV.read_text().replace("http://www.itsecgames.com", origin)
    host, port = origin.split("://")[1].split(":")
    report = json.loads(text)
    report["site"][0].update({"@name": origin, "@host": host, "@port": port})
    path = tmp_path / "local-report.json"
    path.write_text(json.dumps(report))
    return path


def test_probe_reads_the_version(fake):
    engine, _ = fake()
    found = engine.probe()
    assert found.available and found.version == "2.16.1"


def test_baseline_scan(fake, tmp_path):
    engine, log = fake("ok")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/", "url", {}, timeout=120)
    assert run.outcome.success, run.outcome
    assert not run.result.stopped and not run.result.timed_out
    assert len(run.findings) == 61
    calls = fake_zap.calls(log)
    argv = calls[0]["argv"]
    assert argv[:2] == ["-daemon", "-silent"] and argv[argv.index("-host") + 1] == "127.0.0.1"
    assert argv[argv.index("-dir") + 1] == str(tmp_path / "w" / "zaphome")
    key = next(a for a in argv if a.startswith("api.key="))
    assert len(key) > 30 and key not in (tmp_path / "w" / "zap.json").read_text()
    api = [c for c in calls if "path" in c]
    assert all(c["key_ok"] and not c["key_in_query"] for c in api)  # the key travels in a header only
    paths = _paths(log)
    assert "/JSON/spider/action/scan/" in paths and "/JSON/ascan/action/scan/" not in paths
    assert paths[-2:] == ["/OTHER/core/other/jsonreport/", "/JSON/core/action/shutdown/"]
    spider = next(c for c in api if c["path"] == "/JSON/spider/action/scan/")
    assert spider["params"]["url"] == "http://127.0.0.1:8080/"
    depth = next(c for c in api if c["path"] == "/JSON/spider/action/setOptionMaxDepth/")
    assert depth["params"]["Integer"] == "5"
    assert run.progress and max(run.progress) <= 100
    _no_process_left(run, log)


def test_full_scan_runs_the_active_scanner(fake, tmp_path):
    engine, log = fake("ok")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/", "url", {"scanMode": "full"}, timeout=120)
    assert run.outcome.success
    assert "/JSON/ascan/action/scan/" in _paths(log)


def test_api_scan_imports_the_definition(fake, tmp_path):
    engine, log = fake("ok")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/openapi.json", "url", {"scanMode": "api"},
                     timeout=120)
    assert run.outcome.success
    paths = _paths(log)
    assert "/JSON/openapi/action/importUrl/" in paths and "/JSON/spider/action/scan/" not in paths


def test_a_name_is_scanned_at_the_vetted_address(fake, tmp_path):
    engine, log = fake("ok", report=_local_report(tmp_path, "http://127.0.0.1:8080"))
    run = run_engine(engine, tmp_path / "w", "http://shop.example.test:8080/", "url", {}, timeout=120,
                     addresses=("127.0.0.1",))
    assert run.outcome.success
    api = [c for c in fake_zap.calls(log) if "path" in c]
    rule = next(c for c in api if c["path"] == "/JSON/replacer/action/addRule/")
    assert rule["params"]["matchString"] == "Host" and rule["params"]["replacement"] == "shop.example.test:8080"
    access = next(c for c in api if c["path"] == "/JSON/core/action/accessUrl/")
    assert access["params"]["url"] == "http://127.0.0.1:8080/"
    assert not any("shop.example.test" in json.dumps(c["params"]) for c in api if c is not rule)
    assert {f.host for f in run.findings} == {"shop.example.test"}
    assert all(f.url.startswith("http://shop.example.test:8080") for f in run.findings)


def test_unreachable_target_fails(fake, tmp_path):
    engine, log = fake("unreachable")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:9/", "url", {}, timeout=120)
    assert not run.outcome.success and "unreachable" in run.outcome.message
    assert "/JSON/core/action/shutdown/" in _paths(log)
    _no_process_left(run, log)


def test_daemon_that_dies_at_start_fails(fake, tmp_path):
    engine, _ = fake("crash")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/", "url", {}, timeout=120)
    assert not run.outcome.success and "exited during start-up" in run.outcome.message


def test_unvetted_name_is_not_scanned(fake, tmp_path):
    engine, log = fake("ok")
    run = run_engine(engine, tmp_path / "w", "http://shop.example.test/", "url", {}, timeout=120)
    assert not run.outcome.success and "vetted address" in run.outcome.message
    assert fake_zap.calls(log) == [] and run.pids == []


def test_cancel_stops_scans_and_keeps_the_partial_report(fake, tmp_path):
    engine, log = fake("slow")
    started = time.monotonic()

    def stop() -> bool:  # cancel once the spider runs
        return "/JSON/spider/view/status/" in _paths(log)

    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/", "url", {"scanMode": "full"}, timeout=120,
                     stop=stop)
    assert run.result.stopped and not run.result.timed_out
    assert time.monotonic() - started < 30
    paths = _paths(log)
    assert "/JSON/spider/action/stop/" in paths and "/JSON/ascan/action/scan/" not in paths
    assert paths.index("/JSON/spider/action/stop/") < paths.index("/OTHER/core/other/jsonreport/") < \
        paths.index("/JSON/core/action/shutdown/")
    assert len(run.findings) == 61  # what ZAP had when it was stopped
    _no_process_left(run, log)


def test_deadline_stops_the_active_scan(fake, tmp_path):
    engine, log = fake("slow")
    run = run_engine(engine, tmp_path / "w", "http://127.0.0.1:8080/", "url", {"scanMode": "full"}, timeout=8)
    assert run.result.timed_out and not run.result.stopped
    assert "/JSON/spider/action/stop/" in _paths(log)
    _no_process_left(run, log)

