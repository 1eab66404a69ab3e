"""Unit tests of the nuclei adapter: templates only from the imported bundle, argv, parser on real
reports, outcome from nuclei's closing statistics."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance.engine_data import import_bundle
from engines.base import ScanSpec
from engines.nuclei import NucleiEngine, scan_url
from engines.nuclei_report import parse_file
from engines.options import OptionError
from tests.engines.bundles import TEMPLATES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "nuclei"
STATS = '{"duration":"0:00:01","errors":"%s","hosts":"1","matched":"0","percent":"100","requests":"%s"}'


@pytest.fixture
def engine(tmp_path) -> NucleiEngine:
    import_bundle(tmp_path / "engine-data", "nuclei-templates", TEMPLATES)
    return NucleiEngine("/opt/nuclei", tmp_path / "engine-data" / "nuclei")


def spec(tmp_path: Path, engine: NucleiEngine, options: dict | None = None, target: str = "http://127.0.0.1:8080/",
         addresses: tuple[str, ...] = ()) -> ScanSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return ScanSpec("s", target, "url", engine.validate(options or {}), 600, work, "/opt/nuclei", addresses,
                    engine.data_dir)


def test_unavailable_without_templates(tmp_path):
    engine = NucleiEngine("/bin/true", tmp_path / "none")
    assert engine.missing_data({}) == [("nuclei-templates: not imported (cix-appliance engines import "
                                        "nuclei-templates ...)")]
    assert any("nuclei-templates" in m for m in engine.probe().missing)


def test_argv_runs_only_the_bundle_offline(tmp_path, engine):
    argv = engine.build_argv(spec(tmp_path, engine, {"tags": "cix", "severity": "high,medium", "rateLimit": 5}))
    templates = argv[argv.index("-t") + 1]
    assert templates.endswith("/templates") and "current" not in templates and Path(templates).is_dir()
    for flag in ("-duc", "-ni", "-jsonl", "-or"):
        assert flag in argv
    assert argv[argv.index("-tags") + 1] == "cix" and argv[argv.index("-severity") + 1] == "high,medium"
    assert argv[argv.index("-rl") + 1] == "5" and argv[argv.index("-u") + 1] == "http://127.0.0.1:8080/"
    assert "-H" not in argv


def test_options_are_checked_against_the_bundle(engine):
    assert engine.validate({"templates": "cix-lab-canary"}) == {"templates": "cix-lab-canary"}
    for bad in ({"templates": "nginx-version"}, {"tags": "cve"}, {"templates": "/etc/passwd"},
                {"templates": "../x"}, {"severity": "urgent"}, {"rateLimit": 0}, {"template": "x"}):
        with pytest.raises(OptionError):
            engine.validate(bad)


def test_a_name_is_scanned_at_its_vetted_address(tmp_path, engine):
    assert scan_url("https://app.lab.test:8443/x?y=1", ("10.1.2.3",)) == (
        "https://10.1.2.3:8443/x?y=1", "app.lab.test:8443", "app.lab.test")
    assert scan_url("http://app.lab.test/", ("::1",)) == ("http://[::1]/", "app.lab.test", None)
    argv = engine.build_argv(spec(tmp_path, engine, target="https://app.lab.test/", addresses=("127.0.0.1",)))
    assert argv[argv.index("-u") + 1] == "https://127.0.0.1/"
    assert argv[argv.index("-H") + 1] == "Host: app.lab.test" and argv[argv.index("-sni") + 1] == "app.lab.test"


def test_parser_on_real_reports():
    findings = list(parse_file(FIXTURES / "dd-many_findings_new.json"))
    cve = next(f for f in findings if f.rule_id == "nuclei.CVE-2018-15473")
    assert (cve.severity, cve.cve, cve.cwe, cve.host, cve.ip) == (
        "medium", ["CVE-2018-15473"], ["CWE-362"], "nuclei-example.com", "127.0.0.1")
    assert cve.cvss["score"] == 5.3 and cve.port == 22
    multiple = list(parse_file(FIXTURES / "dd-multiple_v3.json"))
    assert len(multiple) == 6 and {f.host for f in multiple} == {"www.asdf.de"}
    ssl = next(f for f in multiple if f.rule_id == "nuclei.ssl-issuer")
    assert ssl.port == 443 and ssl.ip == "8.8.8.8"
    assert all("template-encoded" not in f.raw and "request" not in f.raw for f in multiple)
    assert len({f.fingerprint("nuclei") for f in multiple}) == len(multiple)


def test_a_cut_jsonl_keeps_its_complete_lines(tmp_path):
    lines = (FIXTURES / "dd-many_findings_new.json").read_text().strip().splitlines()
    (tmp_path / "r.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    assert [f.rule_id for f in parse_file(tmp_path / "r.jsonl")] == ["nuclei.CVE-2018-15473"]


def test_findings_of_a_name_are_reported_under_it(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"template-id":"t","info":{"name":"T","severity":"low"},"host":"127.0.0.1:80",'
                                      '"matched-at":"http://127.0.0.1:80/a","ip":"127.0.0.1","type":"http"}\n')
    (finding,) = parse_file(tmp_path / "r.jsonl", rename=("http://127.0.0.1:80", "http://app.lab.test:80"),
                            host="app.lab.test")
    assert (finding.host, finding.ip, finding.url) == ("app.lab.test", "127.0.0.1", "http://app.lab.test:80/a")


@pytest.mark.parametrize("log, success, message", [
    ("[INF] Templates loaded for current scan: 2\n" + STATS % (0, 2) + "\n[INF] Scan completed in 1s.", True, None),
    ("[INF] Templates loaded for current scan: 2\n" + STATS % (4, 2) + "\n[INF] Scan completed in 1s.", False,
     "unreachable"),
    ("[FTL] Could not run nuclei: no templates provided for scan", False, "no templates"),
    ("[INF] Templates loaded for current scan: 2\n", False, "did not finish"),
])
def test_outcome_from_the_log(tmp_path, engine, log, success, message):
    s = spec(tmp_path, engine)
    (s.workdir / "stderr.log").write_text(log)
    outcome = engine.outcome(s, 0, "")
    assert outcome.success is success and (message is None or message in (outcome.message or ""))
    if success:
        assert engine.progress(s) == 99
