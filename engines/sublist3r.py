"""Sublist3r adapter: subdomains of a domain from Sublist3r's passive search engines, plus the
appliance's own DNS brute force (:mod:`engines.dnsbrute`).

Decisions worth knowing:

* Sublist3r's ``-b`` is never used: it has no resolver or wordlist option, sends to public resolvers
  and, offline, hung after its last query in every test. ``bruteforce`` runs the appliance's brute
  force instead, with the imported wordlist, against ``engines.resolver``.
* ``-p`` (port scan of every name found) is never used: OSINT names are reported, not scanned.
* Sublist3r forks one process per search engine: cancel kills the whole process group (the runner).
* Offline, every search engine fails (some with tracebacks on stderr) and Sublist3r still exits 0
  without writing its ``-o`` file: success is "it ran through the domain" (its banner line), and for
  a brute force, that every word was asked and the resolver answered.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from engines.base import Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.options import Option
from engines.osint import BRUTEFORCE_OPTIONS, OsintEngine, is_name, list_normalizer, merged, subdomain_findings, under
from engines.venv_tools import dist_version

REPORT = "sublist3r.txt"
SEARCH_ENGINES = ("baidu", "yahoo", "google", "bing", "ask", "netcraft", "dnsdumpster", "virustotal",
                  "threatcrowd", "ssl", "passivedns")
MESSAGE_MAX = 300


class Sublist3rEngine(OsintEngine):
    name = "sublist3r"  # type: ignore[misc]
    title = "Sublist3r"  # type: ignore[misc]
    binary = "sublist3r"  # type: ignore[misc]
    options = (
        Option("engines", "string", "Comma-separated search engines: " + ", ".join(SEARCH_ENGINES)
               + " (default: all)", pattern=r"[a-z]+(?:,[a-z]+)*", max_length=128,
               normalize=list_normalizer(SEARCH_ENGINES)),
        Option("threads", "integer", "Sublist3r threads", default=10, minimum=1, maximum=50),
        *BRUTEFORCE_OPTIONS,
    )

    def _read_version(self, path: str) -> str | None:
        return dist_version(path, "sublist3r")  # it has no --version

    def build_argv(self, spec: ScanSpec) -> list[str]:
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        argv = [spec.executable, "-d", spec.target, "-n", "-t", str(opts["threads"]),
                "-o", str(spec.workdir / REPORT)]
        if "engines" in opts:
            argv += ["-e", opts["engines"]]
        return argv

    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        started = time.monotonic()
        passive = None
        if spec.options.get("passive", True):
            passive = control.execute(self.build_argv(spec))
            if passive.stopped or passive.timed_out or not spec.options.get("bruteforce"):
                return passive
        brute = self.run_bruteforce(spec, control)
        return RunResult(passive.returncode if passive else 0, brute.stopped, brute.timed_out,
                         "\n".join(x for x in ((passive.stderr_tail if passive else ""), brute.stderr_tail) if x),
                         time.monotonic() - started)

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        return subdomain_findings(self.name, spec.target, merged([
            ("sublist3r", {name: [] for name in parse_report(spec.workdir / REPORT, spec.target)}),
            (f"dns brute force (resolver {self.resolver()})", self.brute_names(spec)),
        ]))

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        if spec.options.get("passive", True):
            stdout = _read(spec.workdir / "stdout.log")
            if f"Enumerating subdomains now for {spec.target}" not in stdout:
                lines = [ln for ln in (_read(spec.workdir / "stderr.log") or stderr).splitlines() if ln.strip()]
                return Outcome(False, "ENGINE_ERROR", ("sublist3r did not run: " + (lines[-1] if lines else
                                                                                   f"exit {returncode}"))[:MESSAGE_MAX])
        problem = self.bruteforce_problem(spec)
        return Outcome(False, "ENGINE_ERROR", problem) if problem else Outcome(True)


def parse_report(path: Path, domain: str) -> list[str]:
    """Sublist3r's ``-o`` file: one name per line (absent when nothing was found). Lines that are not a
    name under the domain (search engines return junk such as ``<BR>``-joined names) are dropped."""
    names = []
    for line in _read(path).splitlines():
        for part in line.replace("<BR>", " ").split():
            name = part.strip().lower().rstrip(".")
            if is_name(name) and under(name, domain) and name not in names:
                names.append(name)
    return names


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
