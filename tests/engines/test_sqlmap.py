"""Unit tests of the sqlmap adapter: options, argv, parser and outcome on recorded reports."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.options import OptionError
from engines.sqlmap import SqlmapEngine, parse_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "sqlmap"


@pytest.fixture
def engine() -> SqlmapEngine:
    return SqlmapEngine("/usr/local/bin/sqlmap")


def spec(tmp_path: Path, options: dict | None = None, target: str = "http://127.0.0.1:5601/item?id=1",
         addresses: tuple[str, ...] = ()) -> ScanSpec:
    return ScanSpec("scan-1", target, "url", options or {}, 600, tmp_path, "/usr/local/bin/sqlmap", addresses)


def test_defaults_and_ranges(engine):
    assert engine.validate({}) == {}
    assert engine.validate({"level": 5, "risk": 3, "crawlDepth": 3, "forms": True}) == {
        "level": 5, "risk": 3, "crawlDepth": 3, "forms": True}
    for name, value in (("level", 0), ("level", 6), ("risk", 4), ("crawlDepth", 4), ("forms", 1)):
        with pytest.raises(OptionError) as err:
            engine.validate({name: value})
        assert err.value.field == f"options.{name}"


@pytest.mark.parametrize("technique, canonical", [("BEU", "BEU"), ("QTB", "BTQ"), ("BB", "B")])
def test_technique_is_normalized(engine, technique, canonical):
    assert engine.validate({"technique": technique}) == {"technique": canonical}


@pytest.mark.parametrize("technique", ["", "X", "beu", "B,E", "BEUSTQB"])
def test_bad_technique(engine, technique):
    with pytest.raises(OptionError, match=r"options\.technique"):
        engine.validate({"technique": technique})


@pytest.mark.parametrize("data", ["name=lamp", "a=1&b=2", "id=1*&x=", "q=a%20b&list[]=1", "email=a@b.test"])
def test_form_bodies_accepted(engine, data):
    assert engine.validate({"data": data}) == {"data": data}


@pytest.mark.parametrize("data", ["a=1;id", "a=$(id)", "-a=1", "a=1 b", "a=1&&b=2", "=1", "a", "a=1\nb=2",
                                 "a='1'", "a=1&b=`x`", "a=<x>", "a=1|b", ""])
def test_unsafe_form_bodies_rejected(engine, data):
    with pytest.raises(OptionError) as err:
        engine.validate({"data": data})
    assert err.value.field == "options.data"


def test_method_and_dbms(engine):
    assert engine.validate({"method": "POST", "data": "a=1", "dbms": "sqlite"})["dbms"] == "sqlite"
    with pytest.raises(OptionError, match=r"options\.data"):
        engine.validate({"method": "GET", "data": "a=1"})
    with pytest.raises(OptionError, match=r"options\.method"):
        engine.validate({"method": "TRACE"})
    with pytest.raises(OptionError, match=r"options\.dbms"):
        engine.validate({"dbms": "SQLite; --os-shell"})


def test_argv(engine, tmp_path):
    options = engine.validate({"level": 2, "technique": "BEU", "forms": True, "crawlDepth": 1, "method": "POST",
                               "data": "a=1&b=2", "dbms": "mysql"})
    argv = engine.build_argv(spec(tmp_path, options))
    assert argv[:3] == ["/usr/local/bin/sqlmap", "-u", "http://127.0.0.1:5601/item?id=1"]
    for arg in ("--batch", "--disable-coloring", "--flush-session", "--level=2", "--risk=1", "--technique=BEU",
                "--forms", "--crawl=1", "--method=POST", "--data=a=1&b=2", "--dbms=mysql",
                f"--report-json={tmp_path / 'sqlmap.json'}", "--answers=skip further tests=N"):
        assert arg in argv
    assert not any(a.startswith("--host=") for a in argv)


def test_a_name_is_scanned_at_the_vetted_address(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path, target="http://shop.example.test:8080/item?id=1",
                                  addresses=("192.0.2.7",)))
    assert argv[argv.index("-u") + 1] == "http://192.0.2.7:8080/item?id=1"
    assert "--host=shop.example.test:8080" in argv


def test_stop_interrupts_and_ends_detection(engine):
    class Proc:
        def __init__(self) -> None:
            self.signals: list[int] = []
            self.stdin = self

        def send_signal(self, sig: int) -> None:
            self.signals.append(sig)

        def write(self, data: bytes) -> None:
            self.written = data

        def flush(self) -> None:
            pass

    proc = Proc()
    engine.stop(proc)
    assert proc.signals == [signal.SIGINT] and proc.written == b"e\n"
    assert engine.stdin(spec(Path("/tmp"))) == b""


def test_parse_api_data(tmp_path):
    (finding,) = parse_file(FIXTURES / "api-04-scan-data.json")
    assert (finding.rule_id, finding.parameter, finding.severity, finding.cwe) == (
        "sqlmap.sqli.get", "id", "high", ["CWE-89"])
    assert finding.url == "http://127.0.0.1:5001/item"
    assert finding.raw["dbms"] == "SQLite"
    assert "boolean-based blind" in finding.evidence and "payload: id=1" in finding.evidence
    assert finding.raw["query"] == "id=1"


def test_parse_multi_target_report_and_map_names(engine, tmp_path):
    shutil.copy(FIXTURES / "report-multi-target.json", tmp_path / "sqlmap.json")
    s = spec(tmp_path, target="http://vuln.example.test:5601/", addresses=("127.0.0.1",))
    findings = {(f.rule_id, f.parameter): f for f in engine.parse(s)}
    assert set(findings) == {("sqlmap.sqli.post", "name"), ("sqlmap.sqli.get", "id")}
    post = findings[("sqlmap.sqli.post", "name")]
    assert (post.url, post.host, post.ip, post.port) == ("http://vuln.example.test:5601/lookup",
                                                         "vuln.example.test", "127.0.0.1", 5601)
    assert post.title == "SQL injection in POST parameter 'name'"
    assert len({f.fingerprint("sqlmap") for f in findings.values()}) == 2


def test_stacked_queries_are_critical(tmp_path):
    report = tmp_path / "r.json"
    report.write_text('{"success": true, "data": [{"type_name": "TECHNIQUES", "value": [{"place": "GET", '
                      '"parameter": "id", "data": [{"technique": "stacked queries", "title": "x", '
                      '"payload": "y"}]}]}]}')
    assert next(parse_file(report)).severity == "critical"


def test_truncated_or_missing_reports_yield_nothing(tmp_path):
    text = (FIXTURES / "report-multi-target.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    assert list(parse_file(tmp_path / "cut.json")) == []
    assert list(parse_file(tmp_path / "none.json")) == []


@pytest.mark.parametrize("name, success, message", [
    ("report-refused", False, "unable to connect to the target URL ('Connection refused')"),
    ("report-clean", True, None),
    ("report-multi-target", True, None),
])
def test_outcome_on_recorded_runs(engine, tmp_path, name, success, message):
    shutil.copy(FIXTURES / f"{name}.json", tmp_path / "sqlmap.json")
    shutil.copy(FIXTURES / f"{name}.stdout.txt", tmp_path / "stdout.log")
    outcome = engine.outcome(spec(tmp_path), 0, "")
    assert outcome.success is success
    if message:
        assert message in outcome.message


def test_outcome_without_a_report(engine, tmp_path):
    (tmp_path / "stdout.log").write_text("[10:00:00] [CRITICAL] there were no forms found at the given target URL\n")
    outcome = engine.outcome(spec(tmp_path), 0, "")
    assert not outcome.success and "no forms found" in outcome.message
    (tmp_path / "stdout.log").write_text("")
    outcome = engine.outcome(spec(tmp_path), 1, "Traceback: boom")
    assert not outcome.success and "wrote no report" in outcome.message
