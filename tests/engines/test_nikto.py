"""Unit tests of the nikto adapter: options, argv, parser and outcome on recorded reports."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.nikto import NiktoEngine, parse_file
from engines.options import OptionError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "nikto"


@pytest.fixture
def engine() -> NiktoEngine:
    return NiktoEngine("/usr/bin/nikto")


def spec(tmp_path: Path, options: dict | None = None, target: str = "http://127.0.0.1:5001/",
         addresses: tuple[str, ...] = ()) -> ScanSpec:
    return ScanSpec("scan-1", target, "url", options or {}, 600, tmp_path, "/usr/bin/nikto", addresses)


@pytest.mark.parametrize("tuning, canonical", [("1", "1"), ("41b", "14b"), ("x6", "x6"), ("x06", "x60"),
                                               ("1234567890abc", "1234567890abc"), ("bb", "b")])
def test_tuning_is_normalized(engine, tuning, canonical):
    assert engine.validate({"tuning": tuning}) == {"tuning": canonical}


@pytest.mark.parametrize("tuning", ["", "z", "x", "-1", "1;2", "1 2", "X1", "1x", "d", "12345678901234"])
def test_bad_tuning_is_rejected(engine, tuning):
    with pytest.raises(OptionError) as err:
        engine.validate({"tuning": tuning})
    assert err.value.field == "options.tuning"


def test_other_options_are_checked(engine):
    with pytest.raises(OptionError, match="maxTimeSeconds"):
        engine.validate({"maxTimeSeconds": 5})
    with pytest.raises(OptionError, match="ssl"):
        engine.validate({"ssl": "yes"})
    with pytest.raises(OptionError, match="unknown option"):
        engine.validate({"evasion": "1"})


def test_argv_for_an_ip_url(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path, engine.validate({"tuning": "b"})))
    assert argv[:3] == ["/usr/bin/nikto", "-h", "http://127.0.0.1:5001/"]
    for flag in ("-nointeractive", "-nolookup"):
        assert flag in argv
    assert argv[argv.index("-ask") + 1] == "no"
    assert argv[argv.index("-maxtime") + 1] == "600"
    assert argv[argv.index("-Tuning") + 1] == "b"
    assert argv[argv.index("-output") + 1] == str(tmp_path / "nikto.xml")
    assert "-vhost" not in argv and "-root" not in argv and "-ssl" not in argv


def test_a_name_is_scanned_at_the_vetted_address_with_vhost(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path, {"ssl": True}, "https://shop.example.test:8443/app/index.php",
                                  ("192.0.2.7",)))
    assert argv[argv.index("-h") + 1] == "https://192.0.2.7:8443/"
    assert argv[argv.index("-vhost") + 1] == "shop.example.test"
    assert argv[argv.index("-root") + 1] == "/app"
    assert "-ssl" in argv
    assert not any("shop.example.test" in a for a in argv if a != "shop.example.test")


def test_a_name_without_vetted_addresses_is_refused_before_running(engine, tmp_path):
    class NoRun:
        def execute(self, *args, **kwargs):
            raise AssertionError("nikto must not run")

    s = spec(tmp_path, target="http://shop.example.test/")
    result = engine.run(s, NoRun())
    outcome = engine.outcome(s, result.returncode or 0, result.stderr_tail)
    assert not outcome.success and "vetted address" in outcome.message


def test_parse_recorded_report(engine, tmp_path):
    findings = list(parse_file(FIXTURES / "nikto-8000.xml"))
    by_rule = {f.rule_id: f for f in findings}
    assert by_rule["nikto.banner"].title == "Server banner: SimpleHTTP/0.6 Python/3.11.7"
    assert by_rule["nikto.999976"].severity == "info"
    assert by_rule["nikto.600720"].severity == "low"  # outdated software
    admin = by_rule["nikto.001551"]
    assert (admin.severity, admin.url, admin.port, admin.ip) == ("low", "http://localhost:8000/admin/", 8000,
                                                                 "127.0.0.1")
    assert admin.references == ["http://osvdb.org/3092"]
    assert len({f.fingerprint("nikto") for f in findings}) == len(findings)


def test_parse_maps_to_the_clients_name(engine, tmp_path):
    shutil.copy(FIXTURES / "nikto-vulnapp-sigint.xml", tmp_path / "nikto.xml")
    s = spec(tmp_path, target="http://shop.example.test:5601/", addresses=("127.0.0.1",))
    findings = list(engine.parse(s))
    assert {f.host for f in findings} == {"shop.example.test"}
    assert {f.ip for f in findings} == {"127.0.0.1"}
    assert "http://shop.example.test:5601/robots.txt" in {f.url for f in findings}
    outdated = next(f for f in findings if f.rule_id == "nikto.600050")
    assert outdated.severity == "low" and "Apache/2.2.8" in outdated.title


def test_cve_in_an_item_makes_it_medium(tmp_path):
    report = tmp_path / "nikto.xml"
    report.write_text('<?xml version="1.0" ?><niktoscan><scandetails targetip="127.0.0.1" targetport="80">'
                      '<item id="000123" osvdbid="0" method="GET"><description><![CDATA[/x: CVE-2014-6271 '
                      'shellshock]]></description><uri><![CDATA[/x]]></uri></item></scandetails></niktoscan>')
    (finding,) = parse_file(report)
    assert (finding.severity, finding.cve) == ("medium", ["CVE-2014-6271"])


def test_truncated_report_keeps_complete_items(tmp_path):
    text = (FIXTURES / "nikto-8000.xml").read_text()
    cut = tmp_path / "nikto.xml"
    cut.write_text(text[: text.index("</item>", text.index("</item>") + 1) + 10])
    assert [f.rule_id for f in parse_file(cut)] == ["nikto.banner", "nikto.999976", "nikto.600720"]


def test_outcome(engine, tmp_path):
    s = spec(tmp_path)
    shutil.copy(FIXTURES / "nikto-closed-port.xml", tmp_path / "nikto.xml")
    shutil.copy(FIXTURES / "nikto-closed-port.stdout.txt", tmp_path / "stdout.log")
    outcome = engine.outcome(s, 0, "")
    assert not outcome.success and "No web server found on localhost:9" in outcome.message

    (tmp_path / "stdout.log").write_text("+ 0 host(s) tested\n")
    outcome = engine.outcome(s, 0, "")
    assert not outcome.success and "tested no host" in outcome.message

    (tmp_path / "nikto.xml").write_bytes(b"")  # what a SIGTERM leaves
    assert not engine.outcome(s, 0, "").success

    shutil.copy(FIXTURES / "nikto-5001.xml", tmp_path / "nikto.xml")
    (tmp_path / "stdout.log").write_text("+ ERROR: Host maximum execution time of 300 seconds reached\n")
    assert engine.outcome(s, 0, "+ ERROR: Host maximum execution time of 300 seconds reached").success


def test_progress_from_status_lines(engine, tmp_path):
    s = spec(tmp_path)
    assert engine.progress(s) is None
    (tmp_path / "stdout.log").write_text("- STATUS: Completed 2000 tests (~31% complete, 5 seconds left)\n"
                                         "- STATUS: Completed 2500 tests (~38% complete, 3 seconds left)\n")
    assert engine.progress(s) == 38


def test_version_pattern(engine):
    import re

    out = (FIXTURES.parent / "nikto" / "README.md").read_text()  # not the version output: must not match
    assert re.search(engine.version_pattern, out) is None
    assert re.search(engine.version_pattern, "Nikto main                         2.1.5\n").group(1) == "2.1.5"
