"""What theHarvester and Sublist3r share: domain targets, the wordlist, the appliance's DNS brute force
and the "subdomain discovered" finding.

Both work on a name the tenant's domain allowlist admits (``connects_to_target = False``): they ask
public sources and DNS about it, never the target's own services. Names found are reported as info
findings and are not scanned.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from engines.base import DataStatus, Engine, Finding, RunControl, RunResult, ScanSpec
from engines.dnsbrute import RESULTS, brute_force, read_results
from engines.offline_data import bundle_status, current_bundle
from engines.options import Option, OptionError

DEFAULT_RESOLVER = "127.0.0.1"
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NAME_PATTERN = r"(?:[a-z0-9_-]{1,63}\.)+[a-z0-9-]{1,63}"


def is_name(text: str) -> bool:
    labels = text.split(".")
    return len(labels) >= 2 and len(text) <= 253 and all(_LABEL.match(x) for x in labels) \
        and not labels[-1].isdigit()


def under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def list_normalizer(allowed: Iterable[str]) -> Any:
    names = frozenset(allowed)

    def normalize(value: str) -> str:
        chosen = list(dict.fromkeys(v.strip().lower() for v in value.split(",")))
        for name in chosen:
            if name not in names:
                raise ValueError(f"{name!r} is not one of {', '.join(sorted(names))}")
        return ",".join(chosen)
    return normalize


BRUTEFORCE_OPTIONS = (
    Option("bruteforce", "boolean", "DNS brute force with the imported wordlist against engines.resolver",
           default=False),
    Option("passive", "boolean", "Ask the tool's passive sources (they need internet access)", default=True),
)


class OsintEngine(Engine):
    """Base of the two OSINT adapters (not itself registered: it has no ``name``)."""

    target_types = frozenset({"domain"})
    connects_to_target = False
    default_timeout = 1800

    def data_status(self) -> list[DataStatus]:
        return [bundle_status(self.data_dir, "wordlist", False, self.name)]

    def required_data(self, options: dict[str, Any]) -> list[str]:
        return ["wordlist"] if options.get("bruteforce") else []

    def check(self, options: dict[str, Any]) -> None:
        if options.get("passive", True) is False and not options.get("bruteforce"):
            raise OptionError("options.passive", "with passive false, bruteforce must be true (nothing to do)")

    def infer_target_type(self, target: str) -> str | None:
        return "domain" if is_name(target.rstrip(".").lower()) else None

    def resolver(self) -> str:
        return str(self.settings.get("engines.resolver") or DEFAULT_RESOLVER)

    def wordlist(self, spec: ScanSpec) -> Path | None:
        bundle = current_bundle(spec.data_dir or self.data_dir, "wordlist")
        return bundle.payload if bundle is not None else None

    # -- the appliance's brute force ----------------------------------------------------------
    def run_bruteforce(self, spec: ScanSpec, control: RunControl) -> RunResult:
        started = time.monotonic()
        words_path = self.wordlist(spec)
        if words_path is None:
            return RunResult(None, False, False, "no wordlist imported", 0.0)
        words = [w for w in words_path.read_text().split() if w]
        result = brute_force(spec.target, words, self.resolver(), spec.workdir / RESULTS, control.should_stop,
                             control.seconds_left, control.report_progress, len(words))
        note = f"dns brute force: {result.queried} asked, {result.found} found, {result.errors} unanswered"
        return RunResult(0, result.stopped, result.timed_out, note, time.monotonic() - started)

    def bruteforce_problem(self, spec: ScanSpec) -> str | None:
        """Why the brute force did not do its job, or None."""
        if not spec.options.get("bruteforce"):
            return None
        _, summary = read_results(spec.workdir / RESULTS)
        if summary is None:
            return "the DNS brute force did not finish"
        if summary.get("queried") and summary.get("errors") == summary.get("queried"):
            return f"the resolver {self.resolver()} (engines.resolver) answered no query"
        return None

    def brute_names(self, spec: ScanSpec) -> dict[str, list[str]]:
        found, _ = read_results(spec.workdir / RESULTS)
        return {str(item["name"]): [str(a) for a in item.get("addresses") or []]
                for item in found if under(str(item["name"]), spec.target)}


def merged(runs: Iterable[tuple[str, dict[str, list[str]]]]) -> dict[str, tuple[list[str], list[str]]]:
    """name → (addresses, sources), over several sources of names."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for source, names in runs:
        for name, addresses in names.items():
            have, sources = out.setdefault(name, ([], []))
            have.extend(a for a in addresses if a not in have)
            if source not in sources:
                sources.append(source)
    return out


def subdomain_findings(engine: str, domain: str, names: dict[str, tuple[list[str], list[str]]]
                       ) -> Iterator[Finding]:
    for name in sorted(names):
        addresses, sources = names[name]
        evidence = [f"addresses: {', '.join(addresses)}" if addresses else "addresses: (not resolved)",
                    f"source: {', '.join(sources)}"]
        yield Finding(f"{engine}.subdomain", f"Subdomain discovered: {name}", "info",
                      "high" if addresses else "medium", host=name, ip=addresses[0] if addresses else None,
                      evidence="\n".join(evidence),
                      description=f"A name under {domain}, found by OSINT; reported only, not scanned.",
                      raw={"name": name, "addresses": addresses, "sources": sources})
