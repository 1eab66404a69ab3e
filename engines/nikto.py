"""Nikto adapter: web server checks (outdated software, dangerous files, missing headers).

Decisions worth knowing:

* Nikto 2.1.5 (Debian's, non-free) writes XML (``-Format xml``); it has no JSON. The report is read
  in a stream so that a cut file still yields every complete ``<item>``.
* The scan connects to the vetted address (``-h http://<address>:<port>/``) and sends the URL's name
  with ``-vhost``; ``-nolookup`` stops nikto's own DNS lookups (it reverse-resolves the address
  otherwise). A path in the URL becomes ``-root`` (its directory part).
* Stop: SIGINT makes nikto's ``safe_quit`` write the report of what it has checked so far (measured:
  a complete ``<scandetails>`` within 0.5 s); SIGTERM would leave an empty file.
* Nikto rates nothing. Severity: medium when an item names a CVE, low for an OSVDB entry or an
  outdated-software item (ids 6xxxxx, nikto's ``db_outdated``), else info.
* ``+ ERROR: Host maximum execution time of N seconds reached`` is printed at the start of every
  2.1.5 scan (a bug) and says nothing; ``Scan terminated:`` is what an actual ``-maxtime`` stop prints.
"""
from __future__ import annotations

import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from engines.base import Engine, Finding, Outcome, RunControl, RunResult, ScanSpec, extract_cves
from engines.options import Option
from engines.web import UnvettedTarget, WebTarget, clip, failed, first_line, read_tail, refused, web_target

REPORT = "nikto.xml"
TUNING = "1234567890abc"
_PROGRESS_RE = re.compile(r"\(~(\d+)% complete")
_OUTDATED_IDS = range(600000, 700000)


def normalize_tuning(value: str) -> str:
    """``"x41"`` → ``"x14"``: nikto's tuning letters, each once, ``x`` (all but these) first."""
    reverse = value.startswith("x")
    letters = value[1:] if reverse else value
    bad = sorted(set(letters) - set(TUNING))
    if bad or not letters:
        raise ValueError(f"tuning takes the letters {TUNING} (optionally after x), not {''.join(bad) or value!r}")
    ordered = "".join(c for c in TUNING if c in letters)
    return ("x" if reverse else "") + ordered


class NiktoEngine(Engine):
    name = "nikto"  # type: ignore[misc]
    title = "Nikto"  # type: ignore[misc]
    binary = "nikto"  # type: ignore[misc]
    target_types = frozenset({"url"})
    default_timeout = 3600
    version_args = ("-Version",)
    version_pattern = r"Nikto main\s+(\d+(?:\.\d+)+)"
    install_hint = "install it with `build.sh engines` (Debian non-free package nikto)"
    stop_grace = 5.0
    options = (
        Option("tuning", "string", "Nikto test classes (-Tuning): letters from 1234567890abc, 'x' first to "
               "exclude them instead (default: all)", pattern=r"x?[0-9a-c]{1,13}", max_length=14,
               normalize=normalize_tuning),
        Option("maxTimeSeconds", "integer", "Stop testing after this many seconds (-maxtime)", default=600,
               minimum=10, maximum=86400),
        Option("ssl", "boolean", "Force SSL (true) or plain HTTP (false) on the URL's port (default: from the "
               "URL's scheme)"),
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
        argv = [spec.executable, "-h", target.connect_origin + "/", "-ask", "no", "-nointeractive", "-nolookup",
                "-maxtime", str(opts["maxTimeSeconds"]), "-Display", "P", "-Format", "xml",
                "-output", str(spec.workdir / REPORT)]
        root = _root(target)
        if root:
            argv += ["-root", root]
        if target.vhost:
            argv += ["-vhost", target.vhost]
        if "tuning" in opts:
            argv += ["-Tuning", opts["tuning"]]
        if opts.get("ssl") is True:
            argv.append("-ssl")
        elif opts.get("ssl") is False:
            argv.append("-nossl")
        return argv

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)

    def progress(self, spec: ScanSpec) -> int | None:
        matches = _PROGRESS_RE.findall(read_tail(spec.workdir / "stdout.log", 4096))
        return min(99, int(matches[-1])) if matches else None

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        try:
            target: WebTarget | None = web_target(spec)
        except UnvettedTarget:
            target = None
        return parse_file(spec.workdir / REPORT, target, scheme=_scheme(spec))

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        stdout = read_tail(spec.workdir / "stdout.log")
        report = spec.workdir / REPORT
        if "No web server found" in stdout:
            line = next(ln for ln in stdout.splitlines() if "No web server found" in ln)
            return failed(f"nikto: {line.lstrip('+ ').strip()} (0 hosts tested)")
        if not report.is_file() or report.stat().st_size == 0:
            hint = first_line(stderr) or _last_plus_line(stdout)
            return failed("nikto wrote no report" + (f": {hint}" if hint else f" (exit {returncode})"))
        details = scan_details(report)
        if details is None:
            hint = _last_plus_line(stdout)
            return failed("nikto tested no host" + (f": {hint}" if hint else ""))
        if "Error limit" in stdout:
            return failed("nikto gave up on the host after too many errors (error limit reached)")
        return Outcome(True)


def _scheme(spec: ScanSpec) -> str | None:
    ssl = spec.options.get("ssl")
    return None if ssl is None else ("https" if ssl else "http")


def _root(target: WebTarget) -> str | None:
    directory = target.path.split("?", 1)[0].rsplit("/", 1)[0]
    return directory or None


def _last_plus_line(stdout: str) -> str:
    lines = [ln[2:].strip() for ln in stdout.splitlines()
             if ln.startswith("+ ") and "maximum execution time" not in ln]
    return lines[-1][:300] if lines else ""


def _events(path: Path) -> Iterator[tuple[str, ET.Element]]:
    """(event, element) of the report; stops quietly where the file is cut or broken."""
    if not path.is_file():
        return
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    with open(path, "rb") as report:
        while chunk := report.read(65536):
            parser.feed(chunk)
            try:
                for entry in parser.read_events():
                    yield cast("tuple[str, ET.Element]", entry)  # "start"/"end" carry elements
            except ET.ParseError:
                return


def scan_details(path: Path) -> dict[str, str] | None:
    """The attributes of the report's first ``<scandetails>`` (None: nikto tested no host)."""
    for event, elem in _events(path):
        if event == "start" and elem.tag == "scandetails":
            return dict(elem.attrib)
    return None


def parse_file(path: Path, target: WebTarget | None = None, scheme: str | None = None) -> Iterator[Finding]:
    """Findings from a nikto 2.1.5 XML report, complete or cut short. ``target`` maps the scanned
    address back to the URL's name; without it the report's own names are used."""
    details: dict[str, str] = {}
    for event, elem in _events(path):
        if event == "start" and elem.tag == "scandetails":
            details = dict(elem.attrib)
            banner = details.get("targetbanner")
            if banner:
                yield _banner_finding(details, banner, target)
        elif event == "end" and elem.tag == "item":
            yield _item_finding(elem, details, target, scheme)
            elem.clear()


def _where(details: dict[str, str], target: WebTarget | None) -> dict[str, Any]:
    port = int(details["targetport"]) if details.get("targetport", "").isdigit() else None
    if target is not None:
        return {"host": target.host, "ip": target.ip or details.get("targetip"), "port": target.port}
    return {"host": details.get("hostheader") or details.get("targethostname") or details.get("targetip"),
            "ip": details.get("targetip"), "port": port}


def _banner_finding(details: dict[str, str], banner: str, target: WebTarget | None) -> Finding:
    where = _where(details, target)
    url = target.origin + "/" if target is not None else (details.get("sitename") or "") + "/"
    return Finding("nikto.banner", f"Server banner: {banner}", "info", host=where["host"], ip=where["ip"],
                   port=where["port"], protocol="tcp", url=url, evidence=f"Server: {banner}",
                   raw={"targetbanner": banner})


def _item_finding(item: ET.Element, details: dict[str, str], target: WebTarget | None,
                  scheme: str | None) -> Finding:
    item_id = item.get("id", "0")
    osvdb = item.get("osvdbid", "0")
    method = item.get("method", "GET")
    description = (item.findtext("description") or "").strip()
    uri = (item.findtext("uri") or "/").strip() or "/"
    where = _where(details, target)
    url: str | None
    if target is not None:
        url = target.origin + (uri if uri.startswith("/") else "/" + uri)
        if scheme and not url.startswith(scheme + "://"):
            url = scheme + url[url.index("://"):]
    else:
        url = (item.findtext("namelink") or "").strip() or None
    cves = extract_cves(description)
    if cves:
        severity = "medium"
    elif osvdb not in ("", "0") or (item_id.isdigit() and int(item_id) in _OUTDATED_IDS):
        severity = "low"
    else:
        severity = "info"
    title = description.split(". ", 1)[0].rstrip(".") if len(description) > 160 else description.rstrip(".")
    references = [item.get("osvdblink", "")] if osvdb not in ("", "0") and item.get("osvdblink") else []
    return Finding(f"nikto.{item_id}", clip(title, 200) or f"nikto item {item_id}", severity, "medium",
                   host=where["host"], ip=where["ip"], port=where["port"], protocol="tcp", url=url,
                   cve=cves, description=description or None, evidence=clip(f"{method} {uri}: {description}"),
                   references=references, raw={"id": item_id, "osvdbid": osvdb, "method": method, "uri": uri})
