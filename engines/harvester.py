"""theHarvester adapter (scan type ``harvester``): names and e-mail addresses of a domain from
theHarvester's passive sources, and its own DNS brute force.

Decisions worth knowing:

* Installed from PyPI as ``harvester-windows`` 4.11.1 (upstream theHarvester repackaged; it needs
  Python >= 3.12, so it lives in its own venv). Its console script is ``harvester_windows``.
* Brute force is theHarvester's own ``-c`` with ``-r <engines.resolver>`` (``-e`` is parsed but
  unused by 4.11.1). It reads its wordlist from a fixed path inside its package, which the wheel does
  not even ship; the adapter runs the tool's ``main`` through a fixed three-line bootstrap with the
  venv's interpreter that points that path at the wordlist imported into the appliance
  (``engines import wordlist``), so the venv is never written at scan time.
* ``-r`` is always given, so the names found are resolved by the configured resolver, not by the
  system's. Passive sources reach the internet through theHarvester's HTTP clients: offline, each
  fails quietly and the run still writes its JSON report.
* ``HOME`` is the scan's work dir (the runner's): theHarvester writes its api-keys/proxies YAML and
  its SQLite stash there.
* Cancel: SIGTERM to the process group; theHarvester dies at once and writes nothing.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from engines.base import Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.options import Option
from engines.osint import BRUTEFORCE_OPTIONS, OsintEngine, list_normalizer, merged, subdomain_findings, under
from engines.venv_tools import dist_version, interpreter

REPORT = "harvester.json"
# Keyless sources (the others need API keys the appliance does not hold).
SOURCES = ("baidu", "certspotter", "commoncrawl", "crtsh", "dnsdumpster", "duckduckgo", "hackertarget",
           "mojeek", "otx", "rapiddns", "robtex", "subdomaincenter", "thc", "threatcrowd", "urlscan",
           "waybackarchive")
DEFAULT_SOURCES = "crtsh,hackertarget,rapiddns,duckduckgo,otx,certspotter"
MESSAGE_MAX = 300
# Argv-only (python -c): sys.argv[1] is the wordlist path or "-", the rest is theHarvester's argv.
BOOTSTRAP = (
    "import sys, pathlib\n"
    "words = sys.argv.pop(1)\n"
    "if words != '-':\n"
    "    import harvester_windows.discovery.dnssearch as dnssearch\n"
    "    dnssearch.DNS_NAMES = pathlib.Path(words)\n"
    "from harvester_windows.theHarvester import main\n"
    "sys.argv[0] = 'theHarvester'\n"
    "sys.exit(main())\n"
)
_BYTES_REPR = re.compile(r"^b'(.*)'$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9.-]{1,253})$")


class HarvesterEngine(OsintEngine):
    name = "harvester"  # type: ignore[misc]
    title = "theHarvester"  # type: ignore[misc]
    binary = "harvester_windows"  # type: ignore[misc]
    options = (
        Option("sources", "string", "Comma-separated keyless sources: " + ", ".join(SOURCES),
               default=DEFAULT_SOURCES, pattern=r"[a-z0-9]+(?:,[a-z0-9]+)*", max_length=256,
               normalize=list_normalizer(SOURCES)),
        Option("limit", "integer", "Results asked of each source", default=500, minimum=1, maximum=5000),
        *BRUTEFORCE_OPTIONS,
    )

    def _read_version(self, path: str) -> str | None:
        if interpreter(path) is None:
            return None  # not a console script of a venv: the bootstrap could not run it
        return dist_version(path, "harvester_windows")

    def build_argv(self, spec: ScanSpec) -> list[str]:
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        python = interpreter(spec.executable) or spec.executable
        words = self.wordlist(spec) if opts.get("bruteforce") else None
        argv = [python, "-c", BOOTSTRAP, str(words) if words else "-", "-d", spec.target,
                "-l", str(opts["limit"]), "-q", "-r", self.resolver(), "-f", str(spec.workdir / REPORT)]
        if opts.get("passive", True):
            argv += ["-b", opts["sources"]]
        if opts.get("bruteforce"):
            argv.append("-c")
        return argv

    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        return control.execute(self.build_argv(spec))

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        report = _load(spec)
        if report is None:
            return
        hosts = parse_hosts(report, spec.target)
        yield from subdomain_findings(self.name, spec.target, merged([("theHarvester", hosts)]))
        for email in report.get("emails") or []:
            match = _EMAIL.match(str(email))
            if match and under(match.group(1).lower(), spec.target):
                yield Finding("harvester.email", f"E-mail address discovered: {email}", "info", "medium",
                              host=match.group(1).lower(), parameter=str(email), evidence="source: theHarvester",
                              raw={"email": email})

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        if _load(spec) is not None:
            return Outcome(True)
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        hint = lines[-1] if lines else f"exit {returncode}"
        if "dns-names.txt" in stderr or "DNS_NAMES" in stderr:
            hint = "theHarvester could not read the wordlist: " + hint
        return Outcome(False, "ENGINE_ERROR", ("theHarvester wrote no report: " + hint)[:MESSAGE_MAX])


def _load(spec: ScanSpec) -> dict[str, Any] | None:
    try:
        report = json.loads((spec.workdir / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and "cmd" in report else None


def parse_hosts(report: dict[str, Any], domain: str) -> dict[str, list[str]]:
    """``hosts`` entries are ``name``, ``name:ip[,ip]`` or, from the brute force, ``name:b'ip'`` (a bytes
    repr) and ``name:`` for names that did not resolve — those are dropped: the brute force asked
    for them, nothing found them."""
    out: dict[str, list[str]] = {}
    for entry in report.get("hosts") or []:
        name, sep, rest = str(entry).partition(":")
        name = name.strip().lower().rstrip(".")
        if not under(name, domain):
            continue
        addresses = []
        for part in rest.split(","):
            part = part.strip()
            match = _BYTES_REPR.match(part)
            if match:
                part = match.group(1)
            if part:
                addresses.append(part)
        if sep and not addresses:
            continue
        known = out.setdefault(name, [])
        known.extend(a for a in addresses if a not in known)
    return out
