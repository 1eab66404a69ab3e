"""Nmap adapter: port and service discovery, with an allowlisted set of offline NSE scripts.

Decisions worth knowing:

* ``-oX`` is the only machine-readable format nmap has (there is no JSON); it is read in a stream so
  that a report cut short by a cancel or timeout still yields every complete ``<host>``.
* ``-n``: no reverse DNS. PTR lookups on an isolated network are slow or time out, and on a network
  target they are one query per address; names the client gave are still reported (``type="user"``).
* ``-Pn`` for single-host targets (host, ip, domain): the client asked for this host, so a firewall that
  drops discovery probes must not hide its open ports. Network targets keep host discovery, so dead
  addresses are not port-scanned one by one.
* ``--`` ends nmap's options before the target (checked with nmap 7.93: what follows is read as a
  target, never as a flag), a second guard behind target validation.
* ``scripts``: named scripts come from :data:`SCRIPTS`; a category from :data:`SCRIPT_CATEGORIES` is
  passed as ``"<category> and safe and not (<unsafe categories>)"``, so it never selects a script that
  calls third-party services (``external``, e.g. ``vulners``), broadcasts on the LAN, or attacks.
* A host that hits ``hostTimeout`` loses all its results (nmap's rule): it becomes an
  ``nmap.host-timeout`` finding, and a scan whose every host timed out fails.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from engines.base import Engine, Finding, Outcome, ScanSpec, extract_cves
from engines.options import Option, OptionError

REPORT = "nmap.xml"
EVIDENCE_MAX = 4000
MESSAGE_MAX = 300
_CAP_NET_RAW = 13
_SINGLE_HOST_TYPES = frozenset({"host", "ip", "domain"})
_TECHNIQUES = {"connect": "-sT", "syn": "-sS", "udp": "-sU"}
_HTTP_SERVICES = frozenset({"http", "http-alt", "http-proxy"})
_HTTPS_SERVICES = frozenset({"https", "https-alt"})

SCRIPT_CATEGORIES = frozenset({"default", "safe", "discovery", "vuln"})
# http-slowloris-check is filed as "safe" but holds connections open: against a server without an
# idle timeout it never ends, and it is the denial of service it looks for.
_CATEGORY_EXCLUDES = ("broadcast or brute or dos or exploit or external or fuzzer or intrusive or malware"
                      " or http-slowloris-check")
# Scripts that only talk to the target. A few are in nmap's "intrusive" category (ssl-enum-ciphers,
# http-enum: many requests) and are allowed because the client names them explicitly.
SCRIPTS = frozenset({
    "banner", "dns-nsid", "dns-recursion", "ftp-anon", "ftp-syst", "http-auth", "http-cookie-flags",
    "http-enum", "http-favicon", "http-generator", "http-git", "http-headers", "http-methods",
    "http-ntlm-info", "http-robots.txt", "http-security-headers", "http-server-header", "http-title",
    "mysql-info", "ntp-info", "rdp-enum-encryption", "smb-os-discovery", "smb-protocols",
    "smb-security-mode", "smb-vuln-ms17-010", "smb2-security-mode", "smtp-commands", "snmp-info",
    "ssh-hostkey", "ssh2-enum-algos", "ssl-ccs-injection", "ssl-cert", "ssl-date", "ssl-dh-params",
    "ssl-enum-ciphers", "ssl-heartbleed", "ssl-poodle", "tls-alpn", "vnc-info",
})

_PORTS_PATTERN = r"\d{1,5}(?:-\d{1,5})?(?:,\d{1,5}(?:-\d{1,5})?)*"
_SCRIPTS_PATTERN = r"[a-z0-9][a-z0-9.-]*(?:,[a-z0-9][a-z0-9.-]*)*"
_PROGRESS_RE = re.compile(rb'<taskprogress\b[^>]*\bpercent="(\d+(?:\.\d+)?)"')
# The text form of nmap's vulns library ("State: VULNERABLE", "State: LIKELY VULNERABLE");
# "State: NOT VULNERABLE" does not match.
_VULN_STATE_RE = re.compile(r"^\s*State:\s*(?:LIKELY\s+)?VULNERABLE\b", re.MULTILINE)


def normalize_ports(value: str) -> str:
    """``"80,22,8000-8100,81"`` → ``"22,80-81,8000-8100"``: sorted, merged, each port 1-65535."""
    ranges: list[tuple[int, int]] = []
    for part in value.split(","):
        start_s, _, end_s = part.partition("-")
        start, end = int(start_s), int(end_s or start_s)
        if not (1 <= start <= 65535 and 1 <= end <= 65535):
            raise ValueError(f"port {part} is outside 1-65535")
        if start > end:
            raise ValueError(f"range {part} ends before it starts")
        ranges.append((start, end))
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return ",".join(str(s) if s == e else f"{s}-{e}" for s, e in merged)


def normalize_scripts(value: str) -> str:
    """Check each name against the allowlists; drop duplicates, keep order."""
    names = list(dict.fromkeys(value.split(",")))
    for name in names:
        if name not in SCRIPTS and name not in SCRIPT_CATEGORIES:
            raise ValueError(f"{name!r} is not an allowed script or category")
    return ",".join(names)


def script_expression(scripts: str) -> str:
    """The ``--script`` argument for a normalized ``scripts`` option."""
    return ",".join(name if name in SCRIPTS else f"{name} and safe and not ({_CATEGORY_EXCLUDES})"
                    for name in scripts.split(","))


def _raw_socket_needs(options: dict[str, Any]) -> list[tuple[str, str]]:
    """(option field, what) for each chosen feature that needs raw sockets."""
    needs = []
    if options.get("technique") in ("syn", "udp"):
        needs.append(("options.technique", f"technique {options['technique']!r}"))
    if options.get("osDetection"):
        needs.append(("options.osDetection", "OS detection"))
    return needs


def has_raw_socket_capability() -> bool:
    """Whether this process may open raw sockets (SYN/UDP scans, OS detection)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_NET_RAW & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


class NmapEngine(Engine):
    # Scanner declares these per instance; an engine's are its class's (see Engine in engines/base.py).
    name = "nmap"  # type: ignore[misc]
    title = "Nmap"  # type: ignore[misc]
    binary = "nmap"  # type: ignore[misc]
    target_types = frozenset({"host", "ip", "domain", "network"})
    default_timeout = 3600
    version_args = ("--version",)
    options = (
        Option("ports", "string", "Ports and ranges, e.g. 22,80,8000-8100 (default: nmap's top 1000)",
               pattern=_PORTS_PATTERN, max_length=1024, normalize=normalize_ports),
        Option("topPorts", "integer", "Scan the N most common ports instead of `ports`",
               minimum=1, maximum=65535),
        Option("timing", "enum", "Timing template", default="T4",
               choices=("T0", "T1", "T2", "T3", "T4", "T5")),
        Option("serviceDetection", "boolean", "Probe open ports for service and version (-sV)",
               default=True),
        Option("osDetection", "boolean", "OS detection (-O); needs CAP_NET_RAW", default=False),
        Option("scripts", "string", "Comma-separated NSE scripts or categories from the allowlist",
               pattern=_SCRIPTS_PATTERN, max_length=512, normalize=normalize_scripts),
        Option("technique", "enum", "Scan technique; syn and udp need CAP_NET_RAW", default="connect",
               choices=tuple(_TECHNIQUES)),
        Option("hostTimeout", "integer", "Give up on a host after this many seconds",
               minimum=1, maximum=86400),
    )

    def check(self, options: dict[str, Any]) -> None:
        if "ports" in options and "topPorts" in options:
            raise OptionError("options.topPorts", "cannot be combined with options.ports")
        needs = _raw_socket_needs(options)
        if needs and not has_raw_socket_capability():
            field, what = needs[0]
            raise OptionError(field, f"{what} requires raw sockets, but the appliance process lacks "
                                     "CAP_NET_RAW (technique 'connect' works without it)")

    def build_argv(self, spec: ScanSpec) -> list[str]:
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        argv = [spec.executable, _TECHNIQUES[opts["technique"]]]
        if "ports" in opts:
            argv += ["-p", opts["ports"]]
        elif "topPorts" in opts:
            argv += ["--top-ports", str(opts["topPorts"])]
        argv.append(f"-{opts['timing']}")
        if opts["serviceDetection"]:
            argv += ["-sV", "--version-light"]
        if opts["osDetection"]:
            argv.append("-O")
        if "scripts" in opts:
            argv += ["--script", script_expression(opts["scripts"])]
        if "hostTimeout" in opts:
            argv += ["--host-timeout", f"{opts['hostTimeout']}s"]
        # No --noninteractive: it also silences --stats-every, and with it the <taskprogress> lines
        # progress is read from (checked with nmap 7.93). stdin is /dev/null, so no key is ever read.
        argv += ["--max-retries", "2", "--stats-every", "2s", "-oX", str(spec.workdir / REPORT), "-n"]
        if spec.target_type in _SINGLE_HOST_TYPES:
            argv.append("-Pn")
        # Without root, nmap refuses raw scans unless told that it holds the capability.
        if _raw_socket_needs(opts) and os.geteuid() != 0:
            argv.append("--privileged")
        target = spec.target
        if spec.addresses:  # the vetted addresses of a hostname: nmap must not look it up again
            target = next((a for a in spec.addresses if ":" not in a), spec.addresses[0])
        if ":" in target:  # an IPv6 address or network: nmap scans IPv6 only when told so
            argv.append("-6")
        return [*argv, "--", target]

    def progress(self, spec: ScanSpec) -> int | None:
        """Percent of nmap's current phase (connect scan, service scan, NSE), from the partial XML."""
        try:
            with open(spec.workdir / REPORT, "rb") as report:
                report.seek(max(0, report.seek(0, os.SEEK_END) - 65536))
                tail = report.read()
        except OSError:
            return None
        matches = _PROGRESS_RE.findall(tail)
        return min(99, int(float(matches[-1]))) if matches else None

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        # A hostname target was scanned by its vetted address: findings still carry the name.
        return parse_file(spec.workdir / REPORT, name=spec.target if spec.addresses else None)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        hint = _first_line(stderr)
        if "QUITTING!" in stderr:
            return _failed(hint or "nmap quit")
        report = spec.workdir / REPORT
        if not report.is_file() or report.stat().st_size == 0:
            return _failed("nmap wrote no report" + (f": {hint}" if hint else f" (exit {returncode})"))
        runstats, timed_out = None, 0
        for elem in _top_elements(report):
            if elem.tag == "runstats":
                runstats = elem
            elif elem.tag == "host" and elem.get("timedout") == "true":
                timed_out += 1
        finished = runstats.find("finished") if runstats is not None else None
        if runstats is None or finished is None:
            return _failed(f"report is incomplete: nmap stopped before it finished (exit {returncode})")
        if finished.get("exit") != "success":
            return _failed(_first_line(finished.get("errormsg", "")) or "nmap reported an error")
        hosts = runstats.find("hosts")
        if hosts is not None and hosts.get("total") == "0":
            return _failed("no host was scanned" + (f": {hint}" if hint else ""))
        if hosts is not None and timed_out >= int(hosts.get("up", "0")) > 0:
            return _failed("every host hit options.hostTimeout; nmap discarded their results")
        return Outcome(True)


def parse_file(path: Path | str, name: str | None = None) -> Iterator[Finding]:
    """Findings from an nmap XML report, complete or cut short; ``name`` is the host's name when the
    report has none (nmap was given an address)."""
    for elem in _top_elements(Path(path)):
        if elem.tag == "host":
            yield from _host_findings(elem, name)


def _top_elements(path: Path) -> Iterator[ET.Element]:
    """Each complete child of ``<nmaprun>``; stops quietly where the file is cut or broken."""
    if not path.is_file():
        return
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    depth = 0
    with open(path, "rb") as report:
        while chunk := report.read(65536):
            parser.feed(chunk)
            try:
                for entry in parser.read_events():
                    event, elem = cast("tuple[str, ET.Element]", entry)  # "start"/"end" carry elements
                    depth += 1 if event == "start" else -1
                    if root is None:
                        root = elem
                    elif event == "end" and depth == 1:
                        yield elem
                        root.remove(elem)  # keeps memory flat on reports of large networks
            except ET.ParseError:  # XMLPullParser reports malformed input here, not from feed()
                return


def _host_findings(host: ET.Element, default_name: str | None = None) -> Iterator[Finding]:
    ip = next((a.get("addr") for a in host.iter("address") if a.get("addrtype") != "mac"), None)
    name = next((h.get("name") for h in host.iter("hostname") if h.get("name")), default_name)
    where = name or ip
    status = host.find("status")
    if status is not None and status.get("state") == "down":
        yield Finding("nmap.host-down", f"Host down: {ip or where}", host=where, ip=ip,
                      raw={"reason": status.get("reason")})
    elif host.get("timedout") == "true":
        yield Finding("nmap.host-timeout", f"Host timed out: {ip or where}", host=where, ip=ip,
                      description="nmap gave up on this host at options.hostTimeout and dropped "
                                  "what it had found on it", raw={"timedout": True})
    else:
        for port in host.iterfind("ports/port"):
            yield from _port_findings(port, where, ip)
        for script in host.iterfind("hostscript/script"):
            yield _script_finding(script, where or "host", where, ip, None, None, None)
        yield from _os_finding(host, where, ip)


def _port_findings(port: ET.Element, where: str | None, ip: str | None) -> Iterator[Finding]:
    state = port.find("state")
    if state is None or state.get("state") != "open":
        return  # open|filtered means no answer at all: not evidence of a service
    portid, proto = int(port.get("portid", "0")), port.get("protocol", "tcp")
    service = port.find("service")
    attrs = dict(service.attrib) if service is not None else {}
    cpes = [c.text for c in port.iterfind("service/cpe") if c.text]
    url = _url(attrs, where, portid)
    label = " ".join(v for v in (attrs.get("name"), attrs.get("product"), attrs.get("version")) if v)
    evidence = [f"{k}: {attrs[k]}" for k in ("product", "version", "extrainfo") if attrs.get(k)]
    evidence += [f"cpe: {c}" for c in cpes]
    conf = int(attrs.get("conf", "0")) if service is not None else None
    yield Finding(
        "nmap.open-port", f"Open port {portid}/{proto} {label}".rstrip(), "info", _confidence(conf),
        host=where, ip=ip, port=portid, protocol=proto, url=url, evidence="\n".join(evidence) or None,
        raw={"state": state.get("state"), "reason": state.get("reason"), "service": attrs, "cpe": cpes})
    for script in port.iterfind("script"):
        yield _script_finding(script, f"{portid}/{proto}", where, ip, portid, proto, url)


def _os_finding(host: ET.Element, where: str | None, ip: str | None) -> Iterator[Finding]:
    osmatches = host.findall("os/osmatch")[:5]  # nmap lists them best first
    accuracies = [int(m.get("accuracy", "0")) for m in osmatches]
    matches = [{"name": m.get("name"), "accuracy": a, "cpe": [c.text for c in m.iter("cpe") if c.text]}
               for m, a in zip(osmatches, accuracies, strict=True)]
    if matches:
        accuracy = accuracies[0]
        yield Finding("nmap.os", f"OS: {matches[0]['name']}", "info",
                      "high" if accuracy >= 95 else "medium" if accuracy >= 85 else "low",
                      host=where, ip=ip, raw={"osmatch": matches},
                      evidence="\n".join(f"{m['name']} ({m['accuracy']}%)" for m in matches))


def _script_finding(script: ET.Element, on: str | None, host: str | None, ip: str | None,
                    port: int | None, proto: str | None, url: str | None) -> Finding:
    """Severity: high when the vulns library reports a host VULNERABLE (or LIKELY so), medium when
    the output names CVEs, else info."""
    sid = script.get("id", "unknown")
    output = script.get("output", "")
    cves = extract_cves(" ".join([output, *script.itertext()]))
    states = [e.text or "" for e in script.iter("elem") if e.get("key") == "state"]
    vulnerable = _VULN_STATE_RE.search(output) or any(
        "VULNERABLE" in s and not s.startswith("NOT") for s in states)
    severity = "high" if vulnerable else "medium" if cves else "info"
    return Finding(f"nmap.script.{sid}", f"{sid} on {on}", severity, host=host, ip=ip, port=port,
                   protocol=proto, url=url, cve=cves, evidence=output.strip()[:EVIDENCE_MAX] or None,
                   raw={"script": sid})


def _url(service: dict[str, str], host: str | None, port: int) -> str | None:
    name = service.get("name")
    if name in _HTTPS_SERVICES or (name in _HTTP_SERVICES and service.get("tunnel") == "ssl"):
        scheme = "https"
    elif name in _HTTP_SERVICES:
        scheme = "http"
    else:
        return None
    return f"{scheme}://[{host}]:{port}/" if host and ":" in host else f"{scheme}://{host}:{port}/"


def _confidence(conf: int | None) -> str:
    if conf is None:
        return "medium"
    return "high" if conf >= 8 else "medium" if conf >= 5 else "low"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((ln for ln in lines if not ln.startswith("WARNING")), lines[0] if lines else "")
    return line[:MESSAGE_MAX]


def _failed(message: str) -> Outcome:
    return Outcome(False, "ENGINE_ERROR", message[:MESSAGE_MAX])
