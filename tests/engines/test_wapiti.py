"""Unit tests of the wapiti adapter: options, argv, parser and outcome on recorded reports."""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from engines.base import ScanSpec
from engines.options import OptionError
from engines.wapiti import DEFAULT_MODULES, WapitiEngine, parse_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines" / "wapiti"


@pytest.fixture
def engine() -> WapitiEngine:
    return WapitiEngine("/usr/local/bin/wapiti")


def spec(tmp_path: Path, options: dict | None = None, target: str = "http://127.0.0.1:5001/",
         addresses: tuple[str, ...] = ()) -> ScanSpec:
    return ScanSpec("scan-1", target, "url", options or {}, 600, tmp_path, "/usr/local/bin/wapiti", addresses)


def test_modules_are_allowlisted(engine):
    assert engine.validate({"modules": "sql,xss,sql"}) == {"modules": "sql,xss"}
    assert engine.validate({"modules": DEFAULT_MODULES})["modules"] == DEFAULT_MODULES


@pytest.mark.parametrize("module", ["ssrf", "xxe", "log4shell", "wapp", "nikto", "cms", "takeover", "htp",
                                    "spring4shell", "wp_enum", "network_device", "all", "common"])
def test_modules_that_call_third_parties_are_rejected(engine, module):
    with pytest.raises(OptionError) as err:
        engine.validate({"modules": f"sql,{module}"})
    assert err.value.field == "options.modules" and module in err.value.message


@pytest.mark.parametrize("modules", ["", "sql;xss", "-sql", "sql, xss", "SQL"])
def test_malformed_module_lists(engine, modules):
    with pytest.raises(OptionError, match=r"options\.modules"):
        engine.validate({"modules": modules})


def test_scope_depth_times(engine):
    assert engine.validate({"scope": "domain", "depth": 0, "maxScanTimeSeconds": 60,
                            "maxAttackTimeSeconds": 5})["scope"] == "domain"
    for name, value in (("scope", "punk"), ("scope", "subdomain"), ("depth", 11), ("maxScanTimeSeconds", 1),
                        ("maxAttackTimeSeconds", 0)):
        with pytest.raises(OptionError, match=rf"options\.{name}"):
            engine.validate({name: value})


def test_argv_stays_offline(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path, {"modules": "sql,xss", "depth": 1}))
    assert argv[:3] == ["/usr/local/bin/wapiti", "-u", "http://127.0.0.1:5001/"]
    assert argv[argv.index("-m") + 1] == "sql,xss"
    assert argv[argv.index("--endpoint") + 1].startswith("http://127.0.0.1:")
    assert argv[argv.index("--dns-endpoint") + 1] == "localhost"
    assert "--no-bugreport" in argv and "--flush-session" in argv
    assert argv[argv.index("-o") + 1] == str(tmp_path / "wapiti.json")
    assert argv[argv.index("--max-scan-time") + 1] == "1800"
    assert "-H" not in argv


def test_a_name_is_scanned_at_the_vetted_address_with_a_host_header(engine, tmp_path):
    argv = engine.build_argv(spec(tmp_path, target="https://shop.example.test/app/", addresses=("192.0.2.7",)))
    assert argv[argv.index("-u") + 1] == "https://192.0.2.7/app/"
    assert argv[argv.index("-H") + 1] == "Host: shop.example.test"


def test_stop_asks_for_the_report(engine):
    class Proc:
        def __init__(self) -> None:
            self.signals: list[int] = []
            self.written = b""

        def send_signal(self, sig: int) -> None:
            self.signals.append(sig)

        @property
        def stdin(self):
            return self

        def write(self, data: bytes) -> None:
            self.written += data

        def flush(self) -> None:
            pass

    proc = Proc()
    engine.stop(proc)
    assert proc.signals == [signal.SIGINT] and proc.written == b"r\n"


def test_parse_recorded_report():
    findings = list(parse_file(FIXTURES / "wapiti-5001.json"))
    sqli = [f for f in findings if f.rule_id == "wapiti.sql.sql-injection"]
    assert len(sqli) == 1  # two reports (error- and boolean-based) on item?id, merged
    assert (sqli[0].severity, sqli[0].cwe, sqli[0].parameter, sqli[0].url) == (
        "critical", ["CWE-89"], "id", "http://127.0.0.1:5001/item")
    assert (sqli[0].host, sqli[0].port) == ("127.0.0.1", 5001)
    assert "AND" in sqli[0].evidence and "curl" in sqli[0].evidence
    xss = {f.parameter: f for f in findings if f.rule_id == "wapiti.xss.reflected-cross-site-scripting"}
    assert set(xss) == {"id", "q"} and xss["q"].cwe == ["CWE-79"] and xss["q"].severity == "medium"
    headers = {f.rule_id for f in findings if f.rule_id.startswith("wapiti.http_headers.")}
    assert {"wapiti.http_headers.clickjacking-protection", "wapiti.http_headers.mime-type-confusion"} <= headers
    anomaly = next(f for f in findings if "internal-server-error" in f.rule_id)
    assert anomaly.confidence == "medium"
    assert len({f.fingerprint("wapiti") for f in findings}) == len(findings)
    assert all(f.references for f in sqli + list(xss.values()))


def test_post_and_get_of_one_parameter_stay_apart(tmp_path):
    report = json.loads((FIXTURES / "wapiti-5001.json").read_text())
    item = dict(report["vulnerabilities"]["SQL Injection"][0])
    report["vulnerabilities"]["SQL Injection"].append(item | {"method": "POST"})
    (tmp_path / "w.json").write_text(json.dumps(report))
    rules = [f.rule_id for f in parse_file(tmp_path / "w.json") if "sql-injection" in f.rule_id]
    assert sorted(rules) == ["wapiti.sql.sql-injection", "wapiti.sql.sql-injection.post"]


def test_parse_maps_to_the_clients_name(engine, tmp_path):
    shutil.copy(FIXTURES / "wapiti-sigint-partial.json", tmp_path / "wapiti.json")
    findings = list(engine.parse(spec(tmp_path, target="http://vuln.example.test:5001/", addresses=("127.0.0.1",))))
    assert findings and {f.host for f in findings} == {"vuln.example.test"}
    assert all(f.url.startswith("http://vuln.example.test:5001/") for f in findings)


def test_outcome(engine, tmp_path):
    s = spec(tmp_path)
    (tmp_path / "stdout.log").write_text("[!] ConnectError with URL http://127.0.0.1:9/\n")
    outcome = engine.outcome(s, 0, "")
    assert not outcome.success and "ConnectError" in outcome.message

    report = json.loads((FIXTURES / "wapiti-5001.json").read_text())
    report["infos"]["crawled_pages_nbr"] = 0
    (tmp_path / "wapiti.json").write_text(json.dumps(report))
    outcome = engine.outcome(s, 0, "")
    assert not outcome.success and "crawled no page" in outcome.message and "ConnectError" in outcome.message

    shutil.copy(FIXTURES / "wapiti-5001.json", tmp_path / "wapiti.json")
    assert engine.outcome(s, 0, "").success
    (tmp_path / "wapiti.json").write_text('{"classifications": {')
    assert not engine.outcome(s, 0, "").success
