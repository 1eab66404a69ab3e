"""Trivy adapter: vulnerabilities, misconfigurations, secrets and licenses in images, folders and
repositories on this machine. It never connects to a scan target (``connects_to_target = False``):
targets are artifacts vetted by path (``path:`` allowlist entries) or by registry.

Decisions worth knowing:

* Nothing is downloaded or reported at scan time: ``--skip-db-update --skip-java-db-update
  --skip-check-update --offline-scan --skip-version-check --disable-telemetry`` (trivy otherwise sends
  usage data and asks for update notices). Misconfiguration and secret checks are embedded in the binary; vulnerability
  scanning reads the trivy-db bundle the operator imported (``engines import trivy-db``), so a scan
  with ``vuln`` and no imported DB is refused at submit (503 ``ENGINE_UNAVAILABLE``).
* ``--cache-dir`` is the scan's work dir, with ``db`` a symlink to the imported bundle resolved once
  when the scan starts: trivy opens the DB read-only, scans share it, and an import during a scan
  does not change it under the scan.
* Paths are handed to trivy resolved (``realpath``), exactly what the allowlist check resolved.
* Images from a registry are pulled by trivy itself (``--image-src remote``): no Docker daemon is asked
  to pull anything. A tarball is read with ``--input``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.base import DataStatus, Engine, Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.offline_data import bundle_status, current_bundle
from engines.options import Option
from engines.trivy_report import TRIVY_SEVERITY, load, parse_report

REPORT = "trivy.json"
CACHE = "trivy-cache"
SCANNERS = ("vuln", "misconfig", "secret", "license")
DEFAULT_SCANNERS = "vuln,misconfig,secret"
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MESSAGE_MAX = 300
_DB_MISSING_MARKERS = ("--skip-db-update cannot be specified", "vulnerability database", "trivy.db")
_SUBCOMMAND = {"image": "image", "filesystem": "filesystem", "repository": "repository"}


def _normalize_list(allowed: tuple[str, ...]) -> Any:
    def normalize(value: str) -> str:
        names = list(dict.fromkeys(v.strip().lower() for v in value.split(",")))
        for name in names:
            if name not in allowed:
                raise ValueError(f"{name!r} is not one of {', '.join(allowed)}")
        return ",".join(names)
    return normalize


class TrivyEngine(Engine):
    name = "trivy"  # type: ignore[misc]
    title = "Trivy"  # type: ignore[misc]
    binary = "trivy"  # type: ignore[misc]
    target_types = frozenset({"image", "filesystem", "repository"})
    connects_to_target = False
    default_timeout = 1800
    version_args = ("--version",)
    version_pattern = r"Version:\s*v?(\d+(?:\.\d+)+)"
    options = (
        Option("scanners", "string", "Comma-separated: vuln, misconfig, secret, license (vuln needs the "
               "imported trivy-db)", default=DEFAULT_SCANNERS, pattern=r"[a-z]+(?:,[a-z]+)*", max_length=64,
               normalize=_normalize_list(SCANNERS)),
        Option("severity", "string", "Comma-separated severities to report: critical, high, medium, low, "
               "info (trivy's UNKNOWN); default all", pattern=r"[a-z]+(?:,[a-z]+)*", max_length=64,
               normalize=_normalize_list(tuple(TRIVY_SEVERITY))),
        Option("ignoreUnfixed", "boolean", "Skip vulnerabilities that have no fixed version yet",
               default=False),
    )

    def data_status(self) -> list[DataStatus]:
        # Not required: misconfig and secret scans run without it (see required_data).
        return [bundle_status(self.data_dir, "trivy-db", False, self.name)]

    def required_data(self, options: dict[str, Any]) -> list[str]:
        scanners = options.get("scanners", DEFAULT_SCANNERS).split(",")
        return ["trivy-db"] if "vuln" in scanners else []

    def infer_target_type(self, target: str) -> str | None:
        if target.startswith("/"):
            return "image" if target.endswith(TARBALL_SUFFIXES) else "filesystem"
        if "://" not in target and ("/" in target or ":" in target):
            return "image"
        return None

    # -- running ------------------------------------------------------------------------------
    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        self.prepare(spec)
        return control.execute(self.build_argv(spec))

    def prepare(self, spec: ScanSpec) -> None:
        """The scan's cache dir, with the imported DB linked in when vulnerabilities are scanned."""
        cache = spec.workdir / CACHE
        cache.mkdir(mode=0o700, exist_ok=True)
        link = cache / "db"
        if "vuln" in self._scanners(spec) and not link.exists():
            bundle = current_bundle(spec.data_dir or self.data_dir, "trivy-db")
            if bundle is not None:
                link.symlink_to(bundle.payload)

    def build_argv(self, spec: ScanSpec) -> list[str]:
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        argv = [spec.executable, _SUBCOMMAND[spec.target_type],
                "--format", "json", "--output", str(spec.workdir / REPORT),
                "--cache-dir", str(spec.workdir / CACHE),
                "--skip-db-update", "--skip-java-db-update", "--skip-check-update", "--offline-scan",
                "--skip-version-check", "--disable-telemetry", "--no-progress",
                "--scanners", opts["scanners"], "--timeout", f"{spec.timeout}s"]
        if "severity" in opts:
            argv += ["--severity", ",".join(TRIVY_SEVERITY[s] for s in opts["severity"].split(","))]
        if opts["ignoreUnfixed"]:
            argv.append("--ignore-unfixed")
        if spec.target_type == "image" and spec.target.startswith("/"):
            return [*argv, "--input", os.path.realpath(spec.target)]
        if spec.target_type == "image":
            return [*argv, "--image-src", "remote", "--", spec.target]
        return [*argv, "--", os.path.realpath(spec.target)]

    def _scanners(self, spec: ScanSpec) -> list[str]:
        return str(spec.options.get("scanners", DEFAULT_SCANNERS)).split(",")

    # -- results ------------------------------------------------------------------------------
    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        report = load(spec.workdir / REPORT)
        return parse_report(report) if report is not None else iter(())

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        report = load(spec.workdir / REPORT)
        if report is not None and report.get("SchemaVersion") == 2:
            return Outcome(True)
        fatal = _fatal_line(stderr)
        if "vuln" in self._scanners(spec) and any(m in stderr for m in _DB_MISSING_MARKERS):
            return Outcome(False, "ENGINE_UNAVAILABLE", "trivy-db is missing or unreadable (import it with "
                           "'cix-appliance engines import trivy-db'): " + fatal)
        if spec.target_type != "image" and not Path(os.path.realpath(spec.target)).exists():
            return Outcome(False, "ENGINE_ERROR", f"{spec.target} does not exist on the scanning host")
        return Outcome(False, "ENGINE_ERROR", "trivy wrote no report" + (f": {fatal}" if fatal
                                                                         else f" (exit {returncode})"))


def _fatal_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    line = next((ln for ln in reversed(lines) if "FATAL" in ln or "ERROR" in ln), lines[-1] if lines else "")
    return line[:MESSAGE_MAX]
