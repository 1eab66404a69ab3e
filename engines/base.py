"""The Engine protocol and what every scanner adapter shares.

An engine is pure: given a validated :class:`ScanSpec` it builds an argv list, and from the files the
scanner left in the scan's work dir it yields normalized :class:`Finding` objects and decides whether
the run succeeded. It never touches the appliance database, so the same adapter serves the embedded
worker and, later, remote workers.
"""
from __future__ import annotations

import abc
import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import msgspec

from engines import schema
from engines.options import Option, options_struct, validate_options

SEVERITIES = ("critical", "high", "medium", "low", "info")
CONFIDENCES = ("high", "medium", "low")
CVE_RE = re.compile(r"\bCVE-\d{4}-\d{4,7}\b", re.IGNORECASE)
_STRUCTS: dict[type, tuple[tuple[Option, ...], type[msgspec.Struct]]] = {}  # engine class -> its options Struct


@dataclass
class Finding:
    """A normalized finding, the contract's §4 fields; ``fingerprint`` is derived, not given."""

    rule_id: str
    title: str
    severity: str = "info"
    confidence: str = "high"
    host: str | None = None
    ip: str | None = None
    port: int | None = None
    protocol: str | None = None
    url: str | None = None
    parameter: str | None = None
    cve: list[str] = field(default_factory=list)
    cwe: list[str] = field(default_factory=list)
    cvss: dict[str, Any] | None = None
    description: str | None = None
    evidence: str | None = None
    remediation: str | None = None
    references: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"bad severity {self.severity!r}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"bad confidence {self.confidence!r}")

    def fingerprint(self, engine: str) -> str:
        """Stable across scans of the same issue: identity fields only, never evidence or time."""
        return fingerprint_of(engine, self.rule_id, self.host, self.ip, self.port, self.protocol, self.url,
                              self.parameter)


def fingerprint_of(engine: str, rule_id: str, host: Any, ip: Any, port: Any, protocol: Any, url: Any,
                   parameter: Any) -> str:
    """A finding's fingerprint from its identity fields (a :class:`Finding`'s, or a remote worker's
    decoded report entry's): stable across scans of the same issue, never evidence or time."""
    parts = [engine, rule_id, host or ip or "", str(port or ""), protocol or "", url or "", parameter or ""]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def extract_cves(text: str | None) -> list[str]:
    """CVE ids in ``text``, upper-cased, first occurrence order, no duplicates."""
    if not text:
        return []
    return list(dict.fromkeys(m.upper() for m in CVE_RE.findall(text)))


@dataclass(frozen=True)
class DataStatus:
    """One piece of offline data an engine reads (a vulnerability DB, a template bundle, a wordlist):
    imported by the operator, never downloaded at scan time."""

    name: str
    required: bool  # scans cannot run without it
    version: str | None = None
    path: str | None = None
    size: int | None = None
    updated_at: float | None = None  # unix time of the import
    missing: str | None = None  # why it is not usable, when it is not


@dataclass(frozen=True)
class Availability:
    installed: bool
    version: str | None = None
    path: str | None = None
    missing: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.installed and not self.missing


@dataclass
class ScanSpec:
    """Everything an engine needs to run one scan; built by the worker, never by the client."""

    scan_id: str
    target: str
    target_type: str
    options: dict[str, Any]
    timeout: int
    workdir: Path
    executable: str
    # For a hostname target: the addresses the appliance resolved and authorized just before the
    # run. Engines that connect to the target scan these, so a DNS change after the check cannot
    # redirect the scan; the name stays the finding's host.
    addresses: tuple[str, ...] = ()
    data_dir: Path | None = None  # the engine's imported offline data, when it has any


@dataclass(frozen=True)
class Outcome:
    success: bool
    error_code: str | None = None
    message: str | None = None


@dataclass
class RunResult:
    returncode: int | None
    stopped: bool  # the stop flag was raised (cancel or shutdown)
    timed_out: bool
    stderr_tail: str
    duration: float


class RunControl(Protocol):
    """What the runner lends an engine's :meth:`Engine.run`: processes under its supervision (own
    process group, scrubbed env, output cap, deadline, stop flag), and the stop flag itself for
    engines that drive a daemon through its API."""

    def execute(self, argv: list[str], *, stdin: bytes | None = None,
                graceful_stop: Callable[[subprocess.Popen[bytes]], None] | None = None,
                stop_grace: float = 0.0, env: Mapping[str, str] | None = None) -> RunResult:
        """Run ``argv`` to its end (or stop/deadline). ``graceful_stop(proc)`` is called first on a
        stop; the process then has ``stop_grace`` seconds before its group is killed."""
        ...

    def spawn(self, argv: list[str], *, env: Mapping[str, str] | None = None,
              log_name: str = "daemon") -> subprocess.Popen[bytes]:
        """Start a helper process (a scanner's daemon); its whole group is killed when the run ends."""
        ...

    def should_stop(self) -> bool:
        """True once the scan was cancelled, its lease lost, or the worker is shutting down."""
        ...

    def seconds_left(self) -> float:
        """Time until the scan's deadline."""
        ...

    def report_progress(self, percent: int) -> None:
        """For driven engines that learn their progress from an API rather than a file."""
        ...


class Scanner:
    """A scan type the appliance knows of: where its binary is and which version it is.

    Scan types whose adapter is not written yet are plain ``Scanner`` objects: listed by
    ``GET /engines`` with what is missing, and answered 503 ``ENGINE_UNAVAILABLE`` on submit.
    """

    implemented: ClassVar[bool] = False
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    version_pattern: ClassVar[str] = r"(\d+(?:\.\d+)+)"
    # The target kinds (``targetType`` values) the engine accepts; the API accepts their union.
    target_types: ClassVar[frozenset[str]] = frozenset()
    # True: the engine connects to the target, so it must be given only vetted addresses.
    # False: it works on the name or an artifact (OSINT domains, trivy paths) and is vetted by name.
    connects_to_target: ClassVar[bool] = True
    options: ClassVar[tuple[Option, ...]] = ()
    default_timeout: ClassVar[int] = 3600
    # Appended to "<binary> not found on PATH": how to get the scanner (shown by ``GET /engines``).
    install_hint: ClassVar[str | None] = None

    def __init__(self, name: str, title: str, binary: str, executable: str | None = None,
                 data_dir: Path | None = None) -> None:
        self.name = name
        self.title = title
        self.binary = binary
        self._executable = executable
        self.data_dir = data_dir
        self._availability: Availability | None = None

    # -- availability -------------------------------------------------------------------------
    def executable(self) -> str | None:
        return self._executable or shutil.which(self.binary)

    def data_status(self) -> list[DataStatus]:
        """The offline data this engine reads, with version and age (``GET /engines``)."""
        return []

    def probe(self, refresh: bool = False) -> Availability:
        """Find the scanner, read its version and check its offline data. The binary part is cached
        (scanners do not move while we run); data is looked at each time, since an import may
        have just swapped it in."""
        if self._availability is None or refresh:
            path = self.executable()
            missing: list[str] = []
            version = None
            if path is None:
                missing.append(f"{self.binary} not found on PATH"
                               + (f"; {self.install_hint}" if self.install_hint else ""))
            else:
                version = self._read_version(path)
                if version is None:
                    missing.append(f"{path} did not report a version")
            if not self.implemented:
                missing.append("no adapter for this scanner in this release")
            self._availability = Availability(path is not None, version, path, tuple(missing))
        found = self._availability
        data_missing = tuple(f"{d.name}: {d.missing}" for d in self.data_status() if d.required and d.missing)
        if data_missing:
            return Availability(found.installed, found.version, found.path, found.missing + data_missing)
        return found

    def runnable(self) -> bool:
        """Installed and adapted, whatever its offline data: a worker consumes its queue, so that data
        imported while the appliance runs is used at once (scans lacking it are refused at submit)."""
        self.probe()
        return self._availability is not None and self._availability.available

    def _read_version(self, path: str) -> str | None:
        try:
            out = subprocess.run([path, *self.version_args], capture_output=True, text=True,
                                 timeout=15, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.SubprocessError):
            return None
        match = re.search(self.version_pattern, out.stdout + out.stderr)
        return match.group(1) if match else None


class Engine(Scanner, abc.ABC):
    """Base class of every scanner adapter. A subclass in its own module of the ``engines`` package
    is found by the registry; it sets the class attributes and implements :meth:`parse`,
    :meth:`outcome` and either :meth:`build_argv` (a scanner run as one process) or :meth:`run`
    (a scanner driven through a daemon's API)."""

    implemented = True
    name: ClassVar[str]  # type: ignore[misc]
    title: ClassVar[str]  # type: ignore[misc]
    binary: ClassVar[str]  # type: ignore[misc]
    stop_grace: ClassVar[float] = 0.0  # seconds :meth:`stop` gives the scanner to write partial results

    def __init__(self, executable: str | None = None, data_dir: Path | None = None) -> None:
        self._executable = executable
        self.data_dir = data_dir
        self._availability = None
        self.settings: dict[str, Any] = {}

    def configure(self, settings: Mapping[str, Any]) -> None:
        """The appliance's ``engines.*`` settings (e.g. ``engines.resolver``), given once at start."""
        self.settings = dict(settings)

    # -- validation ---------------------------------------------------------------------------
    def validate(self, raw: Any) -> dict[str, Any]:
        """Schema check, then the engine's cross-option rules; raises :class:`~engines.options.OptionError`."""
        clean = validate_options(self.options, raw, self.name, self.options_type())
        self.check(clean)
        return clean

    def check(self, options: dict[str, Any]) -> None:
        """Cross-option and environment rules (privileges, exclusive options)."""

    def required_data(self, options: dict[str, Any]) -> list[str]:
        """Names of the offline data items (:meth:`data_status`) a scan with these options reads.
        Default: the items marked required. Engines whose data depends on the options (trivy's
        vulnerability DB only for ``vuln``) override it."""
        return [d.name for d in self.data_status() if d.required]

    def missing_data(self, options: dict[str, Any]) -> list[str]:
        """``"<name>: <why>"`` for each item :meth:`required_data` names that is not usable: the
        scan must not start (503 ``ENGINE_UNAVAILABLE``)."""
        needed = set(self.required_data(options))
        return [f"{d.name}: {d.missing}" for d in self.data_status() if d.name in needed and d.missing]

    def infer_target_type(self, target: str) -> str | None:
        """The ``targetType`` of a target submitted without one, when the engine knows better than
        the generic inference (a trivy image reference, a path)."""
        return None

    def options_type(self) -> type[msgspec.Struct]:
        """The Struct ``options`` are checked against (and documented from), made once per class."""
        cls = type(self)
        struct = _STRUCTS.get(cls)
        if struct is None or struct[0] is not cls.options:
            struct = _STRUCTS[cls] = (cls.options, options_struct(self.name, tuple(self.options)))
        return struct[1]

    def option_schema(self) -> dict[str, Any]:
        """The JSON Schema of ``options`` (``GET /engines``; OpenAPI refers to the same type)."""
        struct = self.options_type()
        _, components = schema.json_schemas([struct], ref_template="#/$defs/{name}")
        found: dict[str, Any] = components[struct.__name__]
        return found

    # -- running ------------------------------------------------------------------------------
    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        """Run the scan. The default runs :meth:`build_argv` as one supervised process, with
        :meth:`stop` as its graceful stop when the engine defines one."""
        graceful = self.stop if type(self).stop is not Engine.stop else None
        return control.execute(self.build_argv(spec), graceful_stop=graceful, stop_grace=self.stop_grace,
                               stdin=self.stdin(spec))

    def build_argv(self, spec: ScanSpec) -> list[str]:
        """The scanner's argv: built from validated options only, never from client text."""
        raise TypeError(f"{type(self).__name__} must define build_argv() or override run()")

    def stdin(self, spec: ScanSpec) -> bytes | None:
        """Bytes for the scanner's stdin; None closes it. A pipe stays open for :meth:`stop`."""
        return None

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Engine-native graceful stop (a signal or a keystroke that makes the scanner write what
        it has); the runner kills the process group after :attr:`stop_grace` seconds anyway."""

    def progress(self, spec: ScanSpec) -> int | None:
        """Percent complete read from the scanner's output so far, if it reports any."""
        return None

    @abc.abstractmethod
    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        """Findings from the work dir; must tolerate output truncated by a cancel or timeout."""

    @abc.abstractmethod
    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        """Success from the output, not the exit code: scanners exit 0 on failure too."""
