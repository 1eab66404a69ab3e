"""SQLMap adapter: SQL injection detection on a URL, its forms and (optionally) crawled links.

Decisions worth knowing:

* Run as one CLI process with ``--report-json``: sqlmap 1.10 writes there exactly what its REST API's
  ``/scan/<id>/data`` returns (the same assembler), so the structured results come without the API
  server, whose start alone (0.8 s measured) would break the appliance's overhead budget.
* Stop: SIGINT, then ``e`` on stdin (sqlmap's "end detection phase" answer). sqlmap then reports the
  injection points it has confirmed and writes the JSON report (measured: 0.1-0.3 s). The REST API's
  ``/scan/<id>/stop`` only SIGTERMs its engine, which loses the target under test.
* Only detection: no enumeration or dump option is exposed. ``--batch`` answers every prompt, and
  ``--answers="skip further tests=N"`` keeps testing the other crawled/form targets of a host once
  one is found injectable (sqlmap's batch default would skip them).
* A URL with a name is scanned at the vetted address: ``-u`` gets the address, ``--host`` the name.
* Success from the output: sqlmap exits 0 when it could not connect. Its ``[CRITICAL]`` lines tell a
  failure ("unable to connect", "no parameter(s) found", "no forms found") from a clean run that
  found nothing ("all tested parameters do not appear to be injectable").
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engines.base import Engine, Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.options import Option, OptionError
from engines.web import UnvettedTarget, WebTarget, clip, failed, first_line, read_tail, refused, web_target

REPORT = "sqlmap.json"
OUTPUT_DIR = "sqlmap-out"
DBMS = ("mysql", "postgresql", "mssql", "oracle", "sqlite", "access", "firebird", "maxdb", "sybase", "db2",
        "informix", "hsqldb", "h2")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A form body: name=value pairs joined by '&'. Values may be percent-encoded and may hold sqlmap's '*'
# injection marker; nothing that a shell or sqlmap's option parser would read specially.
_PAIR = r"[A-Za-z0-9_][A-Za-z0-9_.\-\[\]]{0,63}=[A-Za-z0-9_.\-~+%*,:@]{0,512}"
DATA_PATTERN = rf"{_PAIR}(?:&{_PAIR}){{0,63}}"
# sqlmap starts some lines with '\r' (it redraws a progress line in place).
_CRITICAL_RE = re.compile(r"^\r?\[[^\]]*\] \[CRITICAL\] (.+?)\r?$", re.MULTILINE)
# [CRITICAL] lines of a run that worked: it tested and found nothing.
_NOT_FAILURES = ("do not appear to be injectable", "sqlmap is going to retry")
_STACKED = "stacked queries"


def normalize_technique(value: str) -> str:
    return "".join(c for c in "BEUSTQ" if c in value)


class SqlmapEngine(Engine):
    name = "sqlmap"  # type: ignore[misc]
    title = "SQLMap"  # type: ignore[misc]
    binary = "sqlmap"  # type: ignore[misc]
    target_types = frozenset({"url"})
    default_timeout = 3600
    version_args = ("--version",)
    version_pattern = r"(\d+(?:\.\d+)+)"
    install_hint = "install it with `build.sh engines` (PyPI sqlmap 1.10.10 in its own venv)"
    stop_grace = 10.0
    options = (
        Option("level", "integer", "Level of tests to perform (--level)", default=1, minimum=1, maximum=5),
        Option("risk", "integer", "Risk of tests to perform (--risk)", default=1, minimum=1, maximum=3),
        Option("technique", "string", "SQL injection techniques, letters from BEUSTQ (--technique)",
               default="BEUSTQ", pattern=r"[BEUSTQ]{1,6}", max_length=6, normalize=normalize_technique),
        Option("forms", "boolean", "Parse and test the forms of the target URL (--forms)", default=False),
        Option("crawlDepth", "integer", "Crawl the site from the URL to this depth (--crawl; 0: off)",
               default=0, minimum=0, maximum=3),
        Option("method", "enum", "HTTP method of the request (--method; default: sqlmap's choice)",
               choices=METHODS),
        Option("data", "string", "Form body to send, k=v&k2=v2 (--data)", pattern=DATA_PATTERN,
               max_length=2048, generic_check=False),
        Option("dbms", "enum", "Back-end DBMS, when known (--dbms)", choices=DBMS),
    )

    def check(self, options: dict[str, Any]) -> None:
        if "data" in options and options.get("method") == "GET":
            raise OptionError("options.data", "cannot be sent with options.method GET")

    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        try:
            web_target(spec)
        except UnvettedTarget as exc:
            return refused(str(exc))
        return super().run(spec, control)

    def build_argv(self, spec: ScanSpec) -> list[str]:
        target = web_target(spec)
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        argv = [spec.executable, "-u", target.connect_url, "--batch", "--disable-coloring", "--flush-session",
                f"--output-dir={spec.workdir / OUTPUT_DIR}", f"--report-json={spec.workdir / REPORT}",
                f"--level={opts['level']}", f"--risk={opts['risk']}", f"--technique={opts['technique']}",
                "--timeout=10", "--retries=1", "--answers=skip further tests=N"]
        if opts["forms"]:
            argv.append("--forms")
        if opts["crawlDepth"]:
            argv.append(f"--crawl={opts['crawlDepth']}")
        if "method" in opts:
            argv.append(f"--method={opts['method']}")
        if "data" in opts:
            argv.append(f"--data={opts['data']}")
        if "dbms" in opts:
            argv.append(f"--dbms={opts['dbms']}")
        if target.vhost:
            argv.append(f"--host={target.host_header}")
        return argv

    def stdin(self, spec: ScanSpec) -> bytes | None:
        return b""  # a pipe, for the answer stop() gives

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)
        if proc.stdin is not None:
            proc.stdin.write(b"e\n")  # "(e)nd detection phase": report what is confirmed, then exit
            proc.stdin.flush()

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        try:
            target: WebTarget | None = web_target(spec)
        except UnvettedTarget:
            target = None
        return parse_file(spec.workdir / REPORT, target)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        stdout = read_tail(spec.workdir / "stdout.log", 1 << 20)
        criticals = [m.strip() for m in _CRITICAL_RE.findall(stdout)]
        failures = [c for c in criticals if not any(marker in c for marker in _NOT_FAILURES)]
        report = spec.workdir / REPORT
        found = any(True for _ in parse_file(report))
        if found:
            return Outcome(True)
        if failures:
            return failed(f"sqlmap: {failures[-1]}")
        if not report.is_file():
            hint = criticals[-1] if criticals else first_line(stderr)
            return failed("sqlmap wrote no report" + (f": {hint}" if hint else f" (exit {returncode})"))
        return Outcome(True)


def _targets(path: Path) -> list[dict[str, Any]]:
    """The per-target results of a report: ``{data, error}`` objects (one, or one per crawled target)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # missing or cut short: sqlmap writes it in one go at the end
    if not isinstance(report, dict):
        return []
    targets = report.get("targets")
    return [t for t in (targets if isinstance(targets, list) else [report]) if isinstance(t, dict)]


def parse_file(path: Path, target: WebTarget | None = None) -> Iterator[Finding]:
    """Findings from a ``--report-json`` file or a saved REST API ``/scan/<id>/data`` answer: one per
    injectable (place, parameter) of each target."""
    for result in _targets(path):
        scanned: dict[str, Any] = {}
        for item in result.get("data") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type_name") == "TARGET" and isinstance(item.get("value"), dict):
                scanned = item["value"]
            elif item.get("type_name") == "TECHNIQUES" and isinstance(item.get("value"), list):
                for injection in item["value"]:
                    if isinstance(injection, dict) and injection.get("parameter"):
                        yield _finding(injection, scanned, target)


def _finding(injection: dict[str, Any], scanned: dict[str, Any], target: WebTarget | None) -> Finding:
    place = str(injection.get("place") or "GET")
    parameter = str(injection["parameter"])
    techniques = [t for t in injection.get("data") or [] if isinstance(t, dict)]
    names = [str(t.get("technique") or t.get("title") or "") for t in techniques]
    dbms = injection.get("dbms")
    versions = injection.get("dbms_version") or []
    url = str(scanned.get("url") or "") or None
    host, port = None, None
    if target is not None:
        url = target.public_url(url) if url else target.path_url(target.path)
        host, port = target.host, target.port
    elif url:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    evidence = [f"{place} parameter '{parameter}'"]
    if dbms:
        evidence.append(f"back-end DBMS: {dbms} {' '.join(map(str, versions))}".rstrip())
    for tech in techniques:
        evidence.append(f"{tech.get('technique')}: {tech.get('title')}\n  payload: {tech.get('payload')}")
    severity = "critical" if any(_STACKED in n for n in names) else "high"
    return Finding(
        f"sqlmap.sqli.{re.sub(r'[^a-z0-9]+', '-', place.lower()).strip('-')}",
        f"SQL injection in {place} parameter '{parameter}'", severity, "high",
        host=host, ip=target.ip if target is not None else None, port=port, protocol="tcp", url=url,
        parameter=parameter, cwe=["CWE-89"],
        description=f"sqlmap confirmed that the {place} parameter '{parameter}' is injectable "
                    f"({', '.join(n for n in names if n) or 'technique not reported'}).",
        evidence=clip("\n".join(evidence)),
        remediation="Use parameterized queries (prepared statements) for every database access; never "
                    "build SQL from request data.",
        references=["https://cwe.mitre.org/data/definitions/89.html"],
        raw={"place": place, "dbms": dbms, "dbms_version": versions, "os": injection.get("os"),
             "notes": injection.get("notes") or [], "techniques": names, "query": scanned.get("query"),
             "data": scanned.get("data")})
