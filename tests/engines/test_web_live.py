"""The real nikto, sqlmap and wapiti, run through their adapters exactly as a worker runs them, against
the deliberately vulnerable app (tests/vulnapp.py) this test starts on 127.0.0.1.

Select with ``-m web``. Installs: ``build.sh engines``.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engines.base import Engine
from engines.nikto import NiktoEngine
from engines.sqlmap import SqlmapEngine
from engines.wapiti import WapitiEngine
from tests.engines.harness import EngineRun, run_engine
from tests.helpers import free_port, live_group_members
from tests.vulnapp import BANNER, VulnApp, vuln_app

pytestmark = pytest.mark.web
NIKTO, SQLMAP, WAPITI = shutil.which("nikto"), shutil.which("sqlmap"), shutil.which("wapiti")
needs_nikto = pytest.mark.skipif(NIKTO is None, reason="nikto is not installed (build.sh engines)")
needs_sqlmap = pytest.mark.skipif(SQLMAP is None, reason="sqlmap is not installed (build.sh engines)")
needs_wapiti = pytest.mark.skipif(WAPITI is None, reason="wapiti is not installed (build.sh engines)")
# Small scans: the web-engine group must stay within a few minutes on 2 cores.
NIKTO_FAST = {"maxTimeSeconds": 120}
SQLMAP_FAST = {"technique": "BEU"}
WAPITI_FAST = {"modules": "sql,xss,http_headers", "depth": 2, "maxAttackTimeSeconds": 60}


@pytest.fixture
def app() -> Iterator[VulnApp]:
    with vuln_app() as running:
        yield running


def _after(seconds: float) -> Callable[[], bool]:
    started = time.monotonic()
    return lambda: time.monotonic() - started > seconds


def _assert_nothing_left(run: EngineRun) -> None:
    assert run.pids
    for pid in run.pids:
        assert live_group_members(pid) == [], f"processes of group {pid} still run"


def _unreachable(engine: Engine, tmp_path: Path, options: dict, path: str = "") -> EngineRun:
    run = run_engine(engine, tmp_path / "w", f"http://127.0.0.1:{free_port()}/{path}", "url", options, timeout=120)
    assert not run.outcome.success
    assert run.outcome.error_code == "ENGINE_ERROR" and run.outcome.message
    assert run.findings == []
    return run


# -- nikto ----------------------------------------------------------------------------------------
@needs_nikto
def test_nikto_reports_banner_and_headers(app, tmp_path):
    run = run_engine(NiktoEngine(), tmp_path / "w", app.url, "url", NIKTO_FAST, timeout=180)
    assert run.outcome.success, run.outcome
    rules = {f.rule_id: f for f in run.findings}
    assert rules["nikto.banner"].title == f"Server banner: {BANNER}"
    assert "X-Frame-Options" in rules["nikto.999976"].title
    outdated = rules["nikto.600050"]
    assert "Apache/2.2.8 appears to be outdated" in outdated.title and outdated.severity == "low"
    assert all(f.url.startswith(app.url) and f.port == app.port for f in run.findings)
    assert run.progress and all(0 <= p <= 99 for p in run.progress)  # nikto's status lines, read live


@needs_nikto
def test_nikto_scans_a_name_at_its_vetted_address(app, tmp_path):
    url = f"http://vuln.example.test:{app.port}/"
    run = run_engine(NiktoEngine(), tmp_path / "w", url, "url", {"tuning": "b", "maxTimeSeconds": 60},
                     timeout=120, addresses=("127.0.0.1",))
    assert run.outcome.success, run.outcome
    assert f"vuln.example.test:{app.port}" in app.hosts_seen or "vuln.example.test" in app.hosts_seen
    assert {f.host for f in run.findings} == {"vuln.example.test"}
    assert {f.ip for f in run.findings} == {"127.0.0.1"}


@needs_nikto
def test_nikto_unreachable(tmp_path):
    run = _unreachable(NiktoEngine(), tmp_path, {"maxTimeSeconds": 30})
    assert "No web server found" in run.outcome.message


@needs_nikto
def test_nikto_cancel_keeps_partial_report(app, tmp_path):
    run = run_engine(NiktoEngine(), tmp_path / "w", app.url, "url", NIKTO_FAST, timeout=180, stop=_after(3))
    assert run.result.stopped
    assert run.result.duration < 3 + NiktoEngine.stop_grace + 3
    assert "nikto.banner" in {f.rule_id for f in run.findings}  # SIGINT made nikto write what it had
    _assert_nothing_left(run)


# -- sqlmap ---------------------------------------------------------------------------------------
@needs_sqlmap
def test_sqlmap_finds_the_injectable_parameters(app, tmp_path):
    run = run_engine(SqlmapEngine(), tmp_path / "w", app.url + "item?id=1", "url", SQLMAP_FAST, timeout=180)
    assert run.outcome.success, run.outcome
    (finding,) = run.findings
    assert (finding.rule_id, finding.parameter, finding.cwe, finding.severity) == (
        "sqlmap.sqli.get", "id", ["CWE-89"], "high")
    assert finding.url == app.url + "item" and finding.raw["dbms"] == "SQLite"


@needs_sqlmap
def test_sqlmap_forms_and_crawl_through_a_name(app, tmp_path):
    url = f"http://vuln.example.test:{app.port}/"
    run = run_engine(SqlmapEngine(), tmp_path / "w", url, "url", SQLMAP_FAST | {"forms": True, "crawlDepth": 1},
                     timeout=180, addresses=("127.0.0.1",))
    assert run.outcome.success, run.outcome
    found = {(f.rule_id, f.parameter, f.url) for f in run.findings}
    assert ("sqlmap.sqli.post", "name", url + "lookup") in found
    assert ("sqlmap.sqli.get", "id", url + "item") in found
    assert app.hosts_seen == {f"vuln.example.test:{app.port}"}  # every request carried the name


@needs_sqlmap
def test_sqlmap_unreachable(tmp_path):
    run = _unreachable(SqlmapEngine(), tmp_path, SQLMAP_FAST, "item?id=1")
    assert "unable to connect" in run.outcome.message


@needs_sqlmap
def test_sqlmap_url_without_parameters_fails_with_sqlmaps_reason(app, tmp_path):
    run = run_engine(SqlmapEngine(), tmp_path / "w", app.url, "url", SQLMAP_FAST, timeout=120)
    assert not run.outcome.success and "no parameter(s) found" in run.outcome.message


@needs_sqlmap
def test_sqlmap_cancel_reports_confirmed_injections(app, tmp_path):
    # level 5 / risk 3 with every technique runs for minutes; the boolean-based hit comes in the first second.
    run = run_engine(SqlmapEngine(), tmp_path / "w", app.url + "item?id=1", "url", {"level": 5, "risk": 3},
                     timeout=300, stop=_after(4))
    assert run.result.stopped
    assert run.result.duration < 4 + SqlmapEngine.stop_grace
    assert [(f.rule_id, f.parameter) for f in run.findings] == [("sqlmap.sqli.get", "id")]
    _assert_nothing_left(run)


# -- wapiti ---------------------------------------------------------------------------------------
@needs_wapiti
def test_wapiti_finds_sql_injection_and_xss(app, tmp_path):
    run = run_engine(WapitiEngine(), tmp_path / "w", app.url, "url", WAPITI_FAST, timeout=240)
    assert run.outcome.success, run.outcome
    found = {(f.rule_id, f.parameter): f for f in run.findings}
    assert found[("wapiti.sql.sql-injection", "id")].cwe == ["CWE-89"]
    assert found[("wapiti.sql.sql-injection.post", "name")].severity == "critical"
    xss = found[("wapiti.xss.reflected-cross-site-scripting", "q")]
    assert xss.cwe == ["CWE-79"] and xss.url == app.url + "search"
    assert ("wapiti.http_headers.clickjacking-protection", None) in found


@needs_wapiti
def test_wapiti_scans_a_name_at_its_vetted_address(app, tmp_path):
    url = f"http://vuln.example.test:{app.port}/"
    run = run_engine(WapitiEngine(), tmp_path / "w", url, "url", {"modules": "xss", "depth": 1}, timeout=240,
                     addresses=("127.0.0.1",))
    assert run.outcome.success, run.outcome
    assert app.hosts_seen == {f"vuln.example.test:{app.port}"}
    assert any(f.rule_id == "wapiti.xss.reflected-cross-site-scripting" and f.url == url + "search"
               for f in run.findings)


@needs_wapiti
def test_wapiti_unreachable(tmp_path):
    run = _unreachable(WapitiEngine(), tmp_path, WAPITI_FAST)
    assert "crawled no page" in run.outcome.message or "ConnectError" in run.outcome.message


@needs_wapiti
def test_wapiti_cancel_writes_a_partial_report(app, tmp_path):
    # wapiti runs sql, xss, then timesql (seconds per payload): stop while timesql attacks.
    options = {"modules": "sql,xss,timesql", "maxAttackTimeSeconds": 120}
    stdout = tmp_path / "w" / "stdout.log"

    def in_timesql() -> bool:
        return stdout.is_file() and "Launching module timesql" in stdout.read_text()

    started = time.monotonic()
    run = run_engine(WapitiEngine(), tmp_path / "w", app.url, "url", options, timeout=300, stop=in_timesql)
    assert run.result.stopped
    assert time.monotonic() - started < 60
    assert (tmp_path / "w" / "wapiti.json").is_file()
    assert any(f.rule_id.startswith("wapiti.sql.") for f in run.findings)
    _assert_nothing_left(run)


# -- overhead -------------------------------------------------------------------------------------
@needs_sqlmap
def test_sqlmap_overhead_against_a_direct_run(app, tmp_path, capsys):
    """The same sqlmap command run directly and through run_engine: prints both times, asserts only
    that both found the same injection."""
    engine = SqlmapEngine()
    target = app.url + "item?id=1"
    warm = run_engine(engine, tmp_path / "warm", target, "url", SQLMAP_FAST, timeout=180)  # probe + page cache
    assert warm.outcome.success
    from engines.base import ScanSpec

    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    spec = ScanSpec("bench", target, "url", engine.validate(SQLMAP_FAST), 180, direct_dir, SQLMAP or "sqlmap")
    argv = engine.build_argv(spec)
    started = time.monotonic()
    subprocess.run(argv, cwd=direct_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb",
                                                   "HOME": str(direct_dir)}, timeout=180, check=False)
    direct = time.monotonic() - started
    assert [f.parameter for f in engine.parse(spec)] == ["id"]
    started = time.monotonic()
    run = run_engine(engine, tmp_path / "appliance", target, "url", SQLMAP_FAST, timeout=180)
    through = time.monotonic() - started
    assert [f.parameter for f in run.findings] == ["id"]
    with capsys.disabled():
        print(f"\nsqlmap direct {direct:.2f} s, through run_engine {through:.2f} s "
              f"(overhead {through - direct:+.2f} s, budget {0.05 * direct + 0.5:.2f} s)")
