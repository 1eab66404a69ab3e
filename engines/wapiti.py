"""Wapiti adapter: crawls a web application and attacks what it finds (SQL injection, XSS, …).

Decisions worth knowing:

* Offline only: ``modules`` come from :data:`MODULES`, which leaves out every module that calls a
  third party (``ssrf``, ``xxe``, ``log4shell``, ``spring4shell`` use wapiti3.ovh; ``wapp``, ``cms``,
  ``htp``, ``wp_enum``, ``network_device``, ``nikto`` download databases; ``takeover`` resolves
  foreign names). ``--endpoint`` points at a closed loopback port and
  ``--dns-endpoint`` at ``localhost`` (without them wapiti resolves dns.wapiti3.ovh at start), and
  ``--no-bugreport`` keeps a crash from being uploaded.
* Wapiti has no resolve override (no ``--resolve``, and its proxy option would route through
  something the appliance would have to run). A URL with a name is therefore handed over at the
  vetted address and the name is sent as ``Host`` (``-H``); findings get the name back. Its crawler
  then stays on the address: absolute links that spell out the name are out of scope and not
  followed, and a ``https://`` site's certificate is not checked against the name (wapiti does not
  verify certificates by default anyway).
* Stop: SIGINT opens wapiti's interactive menu; ``r`` on stdin makes it write the report of what it
  has so far (measured: ~1 s). SIGTERM would lose everything.
* Severity is wapiti's ``level``: 4 critical, 3 high, 2 medium, 1 low, 0 info. CWE ids come from the
  ``CWE-…`` keys of the category's ``ref`` in ``classifications``.
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

from engines.base import Engine, Finding, Outcome, RunControl, RunResult, ScanSpec, extract_cves
from engines.options import Option
from engines.web import UnvettedTarget, WebTarget, clip, failed, first_line, read_tail, refused, web_target

REPORT = "wapiti.json"
MODULES = frozenset({
    "backup", "brute_login_form", "buster", "cookieflags", "crlf", "csp", "csrf", "exec", "file", "htaccess",
    "http_headers", "https_redirect", "ldap", "methods", "permanentxss", "redirect", "shellshock", "sql", "ssl",
    "timesql", "upload", "xss",
})
DEFAULT_MODULES = "sql,xss,exec,file,redirect,permanentxss,upload,http_headers,cookieflags,csp,methods"
# Nothing listens there: modules that would call an external endpoint get a refused connection.
_DEAD_ENDPOINT = "http://127.0.0.1:9/"
_SEVERITY = {4: "critical", 3: "high", 2: "medium", 1: "low", 0: "info"}
_SECTIONS = (("vulnerabilities", "high"), ("anomalies", "medium"), ("additionals", "high"))
_CWE_RE = re.compile(r"^CWE-(\d+)\b")


def normalize_modules(value: str) -> str:
    names = list(dict.fromkeys(value.split(",")))
    for module in names:
        if module not in MODULES:
            raise ValueError(f"{module!r} is not an allowed module (allowed: {', '.join(sorted(MODULES))})")
    return ",".join(names)


class WapitiEngine(Engine):
    name = "wapiti"  # type: ignore[misc]
    title = "Wapiti"  # type: ignore[misc]
    binary = "wapiti"  # type: ignore[misc]
    target_types = frozenset({"url"})
    default_timeout = 3600
    version_args = ("--version",)
    version_pattern = r"Wapiti (\d+(?:\.\d+)+)"
    install_hint = "install it with `build.sh engines` (PyPI wapiti3 3.2.3 in its own venv)"
    stop_grace = 15.0
    options = (
        Option("modules", "string", "Comma-separated attack modules from the offline allowlist (-m)",
               default=DEFAULT_MODULES, pattern=r"[a-z0-9_]+(?:,[a-z0-9_]+)*", max_length=512,
               normalize=normalize_modules),
        Option("depth", "integer", "Crawl depth (-d)", default=2, minimum=0, maximum=10),
        Option("scope", "enum", "What to crawl: the page, its folder, or the whole host (--scope)",
               default="folder", choices=("page", "folder", "domain")),
        Option("maxScanTimeSeconds", "integer", "Stop the whole scan after this many seconds (--max-scan-time)",
               default=1800, minimum=10, maximum=86400),
        Option("maxAttackTimeSeconds", "integer", "Stop each attack module after this many seconds "
               "(--max-attack-time)", default=300, minimum=5, maximum=86400),
    )

    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        try:
            web_target(spec)
        except UnvettedTarget as exc:
            return refused(str(exc))
        return super().run(spec, control)

    def build_argv(self, spec: ScanSpec) -> list[str]:
        target = web_target(spec)
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        argv = [spec.executable, "-u", target.connect_url, "--scope", opts["scope"], "-m", opts["modules"],
                "-d", str(opts["depth"]), "--max-scan-time", str(opts["maxScanTimeSeconds"]),
                "--max-attack-time", str(opts["maxAttackTimeSeconds"]), "-t", "10", "--flush-session",
                "--no-bugreport", "--endpoint", _DEAD_ENDPOINT, "--dns-endpoint", "localhost",
                "--store-session", str(spec.workdir / "wapiti-session"),
                "--store-config", str(spec.workdir / "wapiti-config"),
                "-f", "json", "-o", str(spec.workdir / REPORT), "-v", "1"]
        if target.vhost:
            argv += ["-H", f"Host: {target.host_header}"]
        return argv

    def stdin(self, spec: ScanSpec) -> bytes | None:
        return b""  # a pipe: stop() answers wapiti's menu through it

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)
        if proc.stdin is not None:
            proc.stdin.write(b"r\n")  # "generate the report now"
            proc.stdin.flush()

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        try:
            target: WebTarget | None = web_target(spec)
        except UnvettedTarget:
            target = None
        return parse_file(spec.workdir / REPORT, target)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        stdout = read_tail(spec.workdir / "stdout.log")
        error = next((ln.strip() for ln in stdout.splitlines()
                      if (ln.startswith("[!]") and "Error" in ln) or ln.startswith(("Error:", "Invalid argument"))), "")
        report = _load(spec.workdir / REPORT)
        if report is None:
            hint = error or first_line(stderr)
            return failed("wapiti wrote no report" + (f": {hint}" if hint else f" (exit {returncode})"))
        if not _dict(report.get("infos")).get("crawled_pages_nbr"):
            return failed("wapiti crawled no page" + (f": {error.lstrip('[!] ')}" if error else ""))
        return Outcome(True)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # wapiti writes the report in one go; a missing or cut file holds nothing usable
    return report if isinstance(report, dict) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_file(path: Path, target: WebTarget | None = None) -> Iterator[Finding]:
    """Findings from a wapiti JSON report. Items of one category on the same method, path and
    parameter are merged (wapiti reports an injection once per technique that found it)."""
    report = _load(path)
    if report is None:
        return
    infos = _dict(report.get("infos"))
    classes = _dict(report.get("classifications"))
    merged: dict[tuple[str, ...], Finding] = {}
    for section, confidence in _SECTIONS:
        categories = report.get(section)
        if not isinstance(categories, dict):
            continue
        for category, items in categories.items():
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict):
                    continue
                finding = _finding(category, item, _dict(classes.get(category)), confidence, infos, target)
                key = (finding.rule_id, finding.url or "", finding.parameter or "")
                if key in merged:
                    _merge(merged[key], finding)
                else:
                    merged[key] = finding
    yield from merged.values()


def _merge(kept: Finding, other: Finding) -> None:
    if other.evidence and other.evidence not in (kept.evidence or ""):
        kept.evidence = clip(f"{kept.evidence}\n---\n{other.evidence}")
    kept.raw.setdefault("also", []).append(other.raw.get("info"))
    if list(_SEVERITY.values()).index(other.severity) < list(_SEVERITY.values()).index(kept.severity):
        kept.severity = other.severity


def _finding(category: str, item: dict[str, Any], classification: dict[str, Any], confidence: str,
             infos: dict[str, Any], target: WebTarget | None) -> Finding:
    level: int = item["level"] if isinstance(item.get("level"), int) else 0
    method = str(item.get("method") or "GET").upper()
    module = str(item.get("module") or "unknown")
    parameter = str(item.get("parameter") or "") or None
    path = str(item.get("path") or "/")
    info = str(item.get("info") or "")
    refs = _dict(classification.get("ref"))
    cwes = list(dict.fromkeys(f"CWE-{m.group(1)}" for k in refs if (m := _CWE_RE.match(str(k)))))
    rule_id = f"wapiti.{module}.{_slug(category)}" + ("" if method == "GET" else f".{method.lower()}")
    host: str | None
    port: int | None
    if target is not None:
        url, host, port, ip = target.path_url(path), target.host, target.port, target.ip
    else:
        base = urlsplit(str(infos.get("target") or ""))
        origin = f"{base.scheme}://{base.netloc}" if base.netloc else ""
        url, host, ip = origin + path.split("?", 1)[0], base.hostname, None
        port = base.port or ({"https": 443, "http": 80}.get(base.scheme))
    title = f"{category} in parameter '{parameter}'" if parameter else f"{category} on {path.split('?', 1)[0]}"
    evidence = "\n".join(x for x in (info, str(item.get("http_request") or ""), str(item.get("curl_command") or ""))
                         if x)
    return Finding(rule_id, title, _SEVERITY.get(level, "info"), confidence, host=host, ip=ip, port=port,
                   protocol="tcp", url=url, parameter=parameter, cve=extract_cves(info), cwe=cwes,
                   description=str(classification.get("desc") or "") or None, evidence=clip(evidence),
                   remediation=str(classification.get("sol") or "") or None,
                   references=[str(u) for u in refs.values()],
                   raw={"category": category, "module": module, "method": method, "path": path, "info": info,
                        "level": level, "wstg": item.get("wstg") or []})
