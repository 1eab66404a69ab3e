"""Unit tests of theHarvester and Sublist3r adapters: options, argv, parsers on real outputs, outcome,
and the appliance's DNS brute force against the lab DNS server on a loopback port."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from appliance.engine_data import import_bundle
from engines.base import ScanSpec
from engines.dnsbrute import RESULTS, brute_force, read_results
from engines.harvester import BOOTSTRAP, HarvesterEngine, parse_hosts
from engines.options import OptionError
from engines.sublist3r import Sublist3rEngine, parse_report
from tests.engines.bundles import LAB_WORDS, wordlist
from tests.engines.lab_dns import LabDns

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines"


def spec(tmp_path: Path, engine, options: dict | None = None) -> ScanSpec:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return ScanSpec("s", "lab.test", "domain", engine.validate(options or {}), 600, work, "/opt/x", (),
                    engine.data_dir)


@pytest.fixture
def data_root(tmp_path) -> Path:
    import_bundle(tmp_path / "engine-data", "wordlist", wordlist(tmp_path / "w.txt"))
    return tmp_path / "engine-data"


@pytest.mark.parametrize("cls", [HarvesterEngine, Sublist3rEngine])
def test_domain_targets_and_wordlist_requirement(tmp_path, cls):
    engine = cls(None, tmp_path / "none")
    assert engine.infer_target_type("Lab.Test") == "domain" and engine.infer_target_type("10.0.0.1") is None
    assert not engine.connects_to_target and engine.target_types == frozenset({"domain"})
    assert engine.missing_data(engine.validate({})) == []
    assert engine.missing_data(engine.validate({"bruteforce": True}))[0].startswith("wordlist: not imported")
    with pytest.raises(OptionError, match="nothing to do"):
        engine.validate({"passive": False})


def test_harvester_argv(tmp_path, data_root):
    engine = HarvesterEngine("/opt/cix-engines/bin/harvester_windows", data_root / "harvester")
    engine.configure({"engines.resolver": "10.53.0.1"})
    argv = engine.build_argv(spec(tmp_path, engine, {"bruteforce": True, "sources": "crtsh,otx"}))
    assert argv[1:3] == ["-c", BOOTSTRAP]
    assert argv[3].endswith("/wordlist.txt") and "current" not in argv[3]
    assert argv[argv.index("-r") + 1] == "10.53.0.1" and argv[argv.index("-b") + 1] == "crtsh,otx"
    assert argv[-1] == "-c" and argv[argv.index("-d") + 1] == "lab.test"
    quiet = engine.build_argv(spec(tmp_path, engine, {"bruteforce": True, "passive": False}))
    assert "-b" not in quiet
    plain = engine.build_argv(spec(tmp_path, engine))
    assert plain[3] == "-" and "-c" not in plain[4:]
    for bad in ({"sources": "shodan"}, {"sources": "crtsh;id"}, {"limit": 0}):
        with pytest.raises(OptionError):
            engine.validate(bad)


def test_sublist3r_argv_never_brute_forces_or_port_scans(tmp_path):
    engine = Sublist3rEngine()
    argv = engine.build_argv(spec(tmp_path, engine, {"engines": "ssl,bing", "bruteforce": True}))
    assert "-b" not in argv and "-p" not in argv and argv[argv.index("-e") + 1] == "ssl,bing"
    with pytest.raises(OptionError):
        engine.validate({"engines": "ssl,shodan"})


def test_harvester_report_parsing():
    brute = json.loads((FIXTURES / "theharvester" / "harvester-brute.json").read_text())
    hosts = parse_hosts(brute, "lab.test")
    assert hosts == {f"{n}.lab.test": ["127.0.0.1"] for n in ("admin", "api", "dev", "mail", "vpn", "www")}
    passive = json.loads((FIXTURES / "theharvester" / "harvester-passive-offline.json").read_text())
    assert parse_hosts(passive, "lab.test") == {}
    assert parse_hosts({"hosts": ["a.lab.test", "b.lab.test:10.0.0.1, 10.0.0.2", "evil.example:1.2.3.4"]},
                       "lab.test") == {"a.lab.test": [], "b.lab.test": ["10.0.0.1", "10.0.0.2"]}


def test_harvester_findings_and_outcome(tmp_path):
    engine = HarvesterEngine()
    s = spec(tmp_path, engine)
    assert not engine.outcome(s, 0, "Traceback ...\nFileNotFoundError: dns-names.txt").success
    shutil.copy(FIXTURES / "theharvester" / "harvester-brute.json", s.workdir / "harvester.json")
    assert engine.outcome(s, 1, "").success
    findings = list(engine.parse(s))
    assert [f.title for f in findings][:2] == ["Subdomain discovered: admin.lab.test",
                                               "Subdomain discovered: api.lab.test"]
    assert all(f.severity == "info" and f.ip == "127.0.0.1" for f in findings) and len(findings) == 6


def test_sublist3r_report_and_outcome(tmp_path):
    engine = Sublist3rEngine()
    s = spec(tmp_path, engine)
    (s.workdir / "sublist3r.txt").write_text("www.lab.test\nmail.lab.test<BR>dev.lab.test\nexample.com\n\n")
    assert parse_report(s.workdir / "sublist3r.txt", "lab.test") == ["www.lab.test", "mail.lab.test", "dev.lab.test"]
    shutil.copy(FIXTURES / "sublist3r" / "sublist3r-passive-offline.stdout.txt", s.workdir / "stdout.log")
    assert engine.outcome(s, 0, "").success  # every engine failed offline, but it ran through the domain
    (s.workdir / "stdout.log").write_text("")
    assert not engine.outcome(s, 0, "usage: sublist3r ...").success
    assert {f.host for f in engine.parse(s)} == {"www.lab.test", "mail.lab.test", "dev.lab.test"}


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_brute_force_against_the_lab_zone(tmp_path):
    port = _free_udp_port()
    with LabDns(port=port):
        result = brute_force("lab.test", LAB_WORDS, "127.0.0.1", tmp_path / RESULTS, lambda: False, lambda: 60,
                             port=port)
    found, summary = read_results(tmp_path / RESULTS)
    assert {f["name"] for f in found} == {f"{n}.lab.test" for n in ("www", "mail", "admin", "dev", "api", "vpn")}
    assert summary is not None and summary["queried"] == len(LAB_WORDS) and result.errors == 0


def test_brute_force_stops_and_reports_a_silent_resolver(tmp_path):
    port = _free_udp_port()  # nothing listens there: every query times out
    started = time.monotonic()
    result = brute_force("lab.test", [f"w{i}" for i in range(1000)], "127.0.0.1", tmp_path / RESULTS,
                         lambda: time.monotonic() - started > 1, lambda: 60, port=port)
    assert result.stopped and time.monotonic() - started < 6
    assert read_results(tmp_path / RESULTS) == ([], None)  # no closing line: the run did not finish
    result = brute_force("lab.test", ["www", "mail"], "127.0.0.1", tmp_path / "r2.jsonl", lambda: False, lambda: 60,
                         port=port)
    assert result.errors == result.queried == 2
