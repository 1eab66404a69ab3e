"""Nuclei adapter: the operator's imported templates, run against one URL.

Decisions worth knowing:

* Only templates from the imported bundle run: ``-t <bundle>/templates`` resolved once at start;
  ``templates`` (ids) and ``tags`` narrow the set and are checked against the bundle's index. A path
  never comes from the client. No bundle → the engine is unavailable (503 naming what is missing).
* Nothing reaches out: ``-duc`` (no update or template download), ``-ni`` (no interactsh/OAST
  callbacks); code, headless and local-file templates stay disabled (nuclei's defaults, never
  enabled here). ``HOME`` is the scan's work dir, so nuclei's config and cache stay in it.
* A URL whose host is a name is scanned at the address the worker vetted: nuclei gets the URL with
  that address, the name as the ``Host`` header (and as TLS SNI for https), and findings are
  reported under the name again.
* Success: nuclei's closing statistics line says it finished (``percent`` 100 or "Scan completed");
  a run whose every request failed did not reach the target and fails. Exit codes are not read.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engines.base import DataStatus, Engine, Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.nuclei_report import events, parse_file
from engines.offline_data import bundle_status, current_bundle
from engines.options import Option, OptionError

REPORT = "nuclei.jsonl"
MESSAGE_MAX = 300
_SEVERITIES = ("critical", "high", "medium", "low", "info")
_STATS_RE = re.compile(rb'^\{"duration".*\}$', re.MULTILINE)


def _normalize_words(value: str) -> str:
    return ",".join(dict.fromkeys(v.strip() for v in value.split(",")))


def _normalize_severity(value: str) -> str:
    names = list(dict.fromkeys(v.strip().lower() for v in value.split(",")))
    for name in names:
        if name not in _SEVERITIES:
            raise ValueError(f"{name!r} is not one of {', '.join(_SEVERITIES)}")
    return ",".join(names)


def scan_url(target: str, addresses: tuple[str, ...]) -> tuple[str, str | None, str | None]:
    """(URL nuclei requests, Host header, TLS SNI) for a target scanned at a vetted address."""
    parts = urlsplit(target)
    if not addresses or parts.hostname is None:
        return target, None, None
    address = next((a for a in addresses if ":" not in a), addresses[0])
    host = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port else ""
    url = urlunsplit((parts.scheme, host + port, parts.path or "/", parts.query, ""))
    return url, parts.hostname + port, parts.hostname if parts.scheme == "https" else None


class NucleiEngine(Engine):
    name = "nuclei"  # type: ignore[misc]
    title = "Nuclei"  # type: ignore[misc]
    binary = "nuclei"  # type: ignore[misc]
    target_types = frozenset({"url"})
    default_timeout = 1800
    version_args = ("-version", "-nc")
    version_pattern = r"Engine Version: v?(\d+(?:\.\d+)+)"
    options = (
        Option("tags", "string", "Comma-separated template tags of the imported bundle (default: all)",
               pattern=r"[a-z0-9_-]+(?:,[a-z0-9_-]+)*", max_length=512, normalize=_normalize_words),
        Option("templates", "string", "Comma-separated template ids of the imported bundle",
               pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:,[A-Za-z0-9][A-Za-z0-9_.-]*)*", max_length=2048,
               normalize=_normalize_words),
        Option("severity", "string", "Comma-separated: critical, high, medium, low, info (default: all)",
               pattern=r"[a-z]+(?:,[a-z]+)*", max_length=64, normalize=_normalize_severity),
        Option("rateLimit", "integer", "Requests per second", default=50, minimum=1, maximum=1000),
        Option("timeoutSeconds", "integer", "Seconds to wait for each response", default=10, minimum=1,
               maximum=120),
    )

    def data_status(self) -> list[DataStatus]:
        return [bundle_status(self.data_dir, "nuclei-templates", True, self.name)]

    def check(self, options: dict[str, Any]) -> None:
        bundle = current_bundle(self.data_dir, "nuclei-templates")
        if bundle is None:
            return  # refused as unavailable before options matter
        for option, key in (("templates", "ids"), ("tags", "tags")):
            known = set(bundle.summary.get(key) or ())
            unknown = [v for v in options.get(option, "").split(",") if v and v not in known]
            if unknown:
                raise OptionError(f"options.{option}", f"{unknown[0]!r} is not in the imported templates "
                                                       f"(nuclei-templates {bundle.version})")

    def _read_version(self, path: str) -> str | None:
        # nuclei writes its config under HOME (or the cwd without one): give it a throwaway one.
        with tempfile.TemporaryDirectory(prefix="cix-nuclei-") as home:
            try:
                out = subprocess.run([path, *self.version_args], check=False, capture_output=True, text=True,
                                     timeout=15, stdin=subprocess.DEVNULL, cwd=home,
                                     env={"PATH": "/usr/bin:/bin", "HOME": home})
            except (OSError, subprocess.SubprocessError):
                return None
        match = re.search(self.version_pattern, out.stdout + out.stderr)
        return match.group(1) if match else None

    # -- running ------------------------------------------------------------------------------
    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        config = spec.workdir / ".config" / "nuclei"
        config.mkdir(parents=True, exist_ok=True)
        # Else nuclei logs a stack trace looking for it; nothing is ignored: the operator chose the bundle.
        (config / ".nuclei-ignore").write_text("tags: []\nfiles: []\n")
        return control.execute(self.build_argv(spec))

    def build_argv(self, spec: ScanSpec) -> list[str]:
        bundle = current_bundle(spec.data_dir or self.data_dir, "nuclei-templates")
        if bundle is None:
            raise RuntimeError("nuclei-templates are not imported")
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        url, host_header, sni = scan_url(spec.target, spec.addresses)
        argv = [spec.executable, "-u", url, "-t", str(bundle.payload), "-jsonl", "-o", str(spec.workdir / REPORT),
                "-nc", "-duc", "-ni", "-or", "-rl", str(opts["rateLimit"]), "-timeout", str(opts["timeoutSeconds"]),
                "-retries", "1", "-stats", "-sj", "-si", "2"]
        if "templates" in opts:
            argv += ["-id", opts["templates"]]
        if "tags" in opts:
            argv += ["-tags", opts["tags"]]
        if "severity" in opts:
            argv += ["-severity", opts["severity"]]
        if host_header:
            argv += ["-H", f"Host: {host_header}"]
        if sni:
            argv += ["-sni", sni]
        return argv

    def progress(self, spec: ScanSpec) -> int | None:
        stats = _last_stats(spec.workdir / "stderr.log")
        try:
            return min(99, int(stats["percent"])) if stats else None
        except (KeyError, ValueError):
            return None

    # -- results ------------------------------------------------------------------------------
    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        url, _, _ = scan_url(spec.target, spec.addresses)
        scanned, wanted = _origin(url), _origin(spec.target)
        name = urlsplit(spec.target).hostname if spec.addresses else None
        return parse_file(spec.workdir / REPORT, rename=(scanned, wanted) if scanned != wanted else None,
                          host=name)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        log = _read_tail(spec.workdir / "stderr.log") or stderr.encode()
        text = log.decode("utf-8", "replace")
        fatal = [ln for ln in text.splitlines() if "[FTL]" in ln]
        if fatal:
            return Outcome(False, "ENGINE_ERROR", fatal[-1].strip()[:MESSAGE_MAX])
        stats = _last_stats(spec.workdir / "stderr.log")
        if "Scan completed in" not in text and not (stats and str(stats.get("percent")) == "100"):
            return Outcome(False, "ENGINE_ERROR", f"nuclei did not finish (exit {returncode})")
        if "Templates loaded for current scan: 0" in text or "no templates provided for scan" in text.lower():
            return Outcome(False, "ENGINE_ERROR", "no template of the imported bundle matched the options")
        requests, errors = (int(stats.get(k, 0) or 0) for k in ("requests", "errors")) if stats else (0, 0)
        if 0 < requests <= errors and next(events(spec.workdir / REPORT), None) is None:  # retries count too
            return Outcome(False, "ENGINE_ERROR", f"every request to {spec.target} failed: target unreachable")
        return Outcome(True)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _read_tail(path: Path, size: int = 65536) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
            return fh.read()
    except OSError:
        return b""


def _last_stats(path: Path) -> dict[str, Any] | None:
    matches = _STATS_RE.findall(_read_tail(path))
    for raw in reversed(matches):
        try:
            stats = json.loads(raw)
        except ValueError:
            continue
        if isinstance(stats, dict):
            return stats
    return None
