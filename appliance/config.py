"""Configuration: one TOML file in the data dir, every key typed and defaulted here.

``KEYS`` is the single description of the configuration: loading, ``config get|set`` and the tests
that keep ``config.example.toml`` complete all read it. Each key's value is checked against a msgspec
type made from its declaration (type, range, choices), like request bodies and engine options
(:mod:`engines.schema`); checks no type can express (a CIDR parses, a target entry is valid) follow.
"""
from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engines import schema

CONFIG_NAME = "config.toml"


class ConfigError(Exception):
    """A config value is missing, ill-typed or out of range; the message names the key."""


class Constraint:
    """A bound a type can carry (a range, a set of choices): part of the key's msgspec type."""

    def __init__(self, annotate: Callable[[Any], Any]) -> None:
        self.annotate = annotate


_BASE: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list[Any],
                         "table": dict[str, Any]}


@dataclass(frozen=True)
class Key:
    type: str  # str | int | float | bool | list | table
    default: Any
    doc: str
    # A Constraint (part of the type), or a function returning a problem (checked after the type).
    check: Constraint | Callable[[Any], str | None] | None = None

    def annotation(self) -> Any:
        base = _BASE[self.type]
        return self.check.annotate(base) if isinstance(self.check, Constraint) else base

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None (type first, then any further check)."""
        try:
            msgspec.convert(value, self.annotation(), strict=True)
        except msgspec.ValidationError as exc:
            found = schema.error_of(str(exc), self.annotation(), value, "value", "", None)
            return _table_message(self, found.message)
        if self.check is not None and not isinstance(self.check, Constraint):
            return self.check(value)
        return None


def _table_message(key: Key, message: str) -> str:
    return "must be a table" if key.type == "table" and message == "must be an object" else message


def _range(lo: float, hi: float) -> Constraint:
    return Constraint(lambda base: Annotated[base, msgspec.Meta(ge=lo, le=hi)])


def _choice(*options: str) -> Constraint:
    return Constraint(lambda _base: Literal[options])


def _cidrs(values: list[Any]) -> str | None:
    for v in values:
        try:
            ipaddress.ip_network(str(v), strict=False)
        except ValueError:
            return f"{v!r} is not an IP address or CIDR"
    return None


def _targets(values: list[Any]) -> str | None:
    from appliance.targets import parse_policy_entry  # late: targets imports nothing from here

    for v in values:
        try:
            parse_policy_entry(str(v))
        except ValueError as exc:
            return str(exc)
    return None


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _schedule(values: list[Any]) -> str | None:
    if not 1 <= len(values) <= 20:
        return "must list 1 to 20 delays"
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 86400]
    return f"{bad[0]!r} is not a delay in seconds (0 < delay <= 86400)" if bad else None


def _redis_url(value: str) -> str | None:
    if value and not value.startswith(("redis://", "rediss://")):
        return "must start with redis:// or rediss://"
    return None


def _int_table(values: dict[str, Any]) -> str | None:
    bad = [k for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    return f"{bad[0]} must be a positive integer" if bad else None


def _str_table(values: dict[str, Any]) -> str | None:
    bad = [k for k, v in values.items() if not isinstance(v, str)]
    return f"{bad[0]} must be a string" if bad else None


KEYS: dict[str, Key] = {
    "server.host": Key("str", "0.0.0.0", "Address to listen on."),
    "server.port": Key("int", 8443, "TCP port of the HTTPS API.", _range(1, 65535)),
    "server.trusted_proxies": Key("list", [], "Proxies (IPs/CIDRs) whose X-Forwarded-For is believed.",
                                  _cidrs),
    "server.hostname": Key("str", "localhost", "Name put in the self-signed certificate."),
    "server.shutdown_grace_seconds": Key("int", 10, "How long SIGTERM waits for in-flight requests.",
                                         _range(1, 600)),
    "server.handshake_timeout_seconds": Key("float", 10.0, "The post-quantum listener drops a TLS handshake "
                                            "not finished by then (the main listener's deadline is 10 s, fixed).",
                                            _range(0.5, 60)),
    "server.header_timeout_seconds": Key("float", 10.0, "Time to send a request's line and headers (and the "
                                         "longest pause inside its body); the connection is closed after it.",
                                         _range(0.5, 60)),
    "server.max_connections": Key("int", 1000, "Open connections served at once (both listeners); requests "
                                  "beyond it get 503 (size LimitNOFILE in the systemd unit to match).",
                                  _range(1, 100000)),
    "server.io_threads": Key("int", 1, "Threads that do TLS and HTTP for the main listener (the app runs on "
                             "one thread whatever this is); more only help with more cores.", _range(1, 64)),
    "server.pq_port": Key("int", 0, "TCP port of a second HTTPS listener offering post-quantum key exchange "
                          "(X25519MLKEM768); 0: off.", _range(0, 65535)),
    "tls.cert_file": Key("str", "", "Operator certificate (PEM). Empty: the self-signed one in the data dir."),
    "tls.key_file": Key("str", "", "Private key of tls.cert_file (PEM)."),
    "tls.pq_only": Key("bool", False, "The server.pq_port listener refuses clients that cannot do X25519MLKEM768 "
                       "(no classical key exchange)."),
    "storage.busy_timeout_ms": Key("int", 5000, "SQLite busy timeout.", _range(100, 600000)),
    "queue.backend": Key("str", "sqlite", "Where scan jobs wait: sqlite (embedded) or redis (remote workers).",
                         _choice("sqlite", "redis")),
    "queue.redis_url": Key("str", "", "With queue.backend = redis: redis:// or rediss:// URL, password in it.",
                           _redis_url),
    "queue.workers": Key("int", 4, "Scans the serve process runs itself at once; 0: only remote workers scan.",
                         _range(0, 64)),
    "queue.max_delay_seconds": Key("float", 0.25, "Longest pause between queue polls.", _range(0.05, 10)),
    "engines.concurrency": Key("table", {"nmap": 2}, "Per-engine cap on simultaneous scans.", _int_table),
    "engines.paths": Key("table", {}, "Per-engine executable path; default: looked up on PATH.",
                         _str_table),
    "engines.resolver": Key("str", "127.0.0.1", "DNS server the OSINT engines' brute force asks (an IP).",
                            _ip),
    "scans.kill_grace_seconds": Key("float", 3.0, "SIGTERM to SIGKILL grace on cancel and timeout.",
                                    _range(0.1, 60)),
    "scans.output_cap_bytes": Key("int", 1048576, "stdout/stderr kept per scan.", _range(1024, 1 << 30)),
    "scans.max_queued_seconds": Key("int", 86400, "A scan queued longer than this fails with TIMEOUT.",
                                    _range(60, 30 * 86400)),
    "scans.reconcile_interval_seconds": Key("int", 30, "How often orphaned scans are looked for.",
                                            _range(1, 3600)),
    "scans.lease_seconds": Key("int", 30, "A worker silent this long loses its scan (re-queued once).",
                               _range(5, 3600)),
    "scans.max_running_per_tenant": Key("int", 0, "Scans one tenant may run at once; 0: no cap.",
                                        _range(0, 10000)),
    "scans.max_timeout_seconds": Key("int", 86400, "Longest timeout a scan may ask for.", _range(30, 86400)),
    "scans.heartbeat_seconds": Key("int", 5, "How often a running scan reports it is alive.",
                                   _range(1, 300)),
    "targets.denylist": Key("list", ["0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
                                     "fe80::/10", "ff00::/8"],
                            "Targets no tenant may scan (CIDRs, domain suffixes); wins over allowlists.",
                            _targets),
    "ratelimit.failed_auth_per_minute": Key("int", 30, "Failed authentications per source IP per minute.",
                                            _range(1, 100000)),
    "webhooks.allowed_networks": Key("list", [], "CIDRs webhooks and callbacks may reach even though they are "
                                     "loopback, link-local, private or metadata addresses.", _cidrs),
    "webhooks.denied_networks": Key("list", [], "CIDRs webhooks and callbacks never reach (wins over "
                                    "allowed_networks).", _cidrs),
    "webhooks.ca_file": Key("str", "", "Extra CA certificates (PEM) trusted for webhook receivers; "
                            "empty: the system's CAs only."),
    "webhooks.retry_schedule": Key("list", [30, 120, 600, 1800, 3600, 7200, 14400, 28800],
                                   "Seconds before each retry of a failed delivery (jittered +-20%).", _schedule),
    "webhooks.secret_grace_hours": Key("int", 24, "How long a rotated webhook or callback secret still signs.",
                                       _range(0, 720)),
    "webhooks.concurrency": Key("int", 64, "Deliveries in flight at once.", _range(1, 1024)),
    "webhooks.tenant_concurrency": Key("int", 48, "Deliveries in flight at once for one tenant.",
                                       _range(1, 1024)),
    "quotas.monthly_scans": Key("int", 0, "Scans each tenant may submit per calendar month (UTC); 0: no limit. "
                                "`tenants set-quota` overrides it per tenant.", _range(0, 100_000_000)),
    "retention.calls_days": Key("int", 90, "Days the API call log is kept; 0: forever.", _range(0, 36500)),
    "retention.scan_dirs_days": Key("int", 30, "Days a finished scan's work dir (raw scanner output) is kept; "
                                    "0: forever.", _range(0, 36500)),
    "retention.findings_days": Key("int", 0, "Days a finished scan's findings are kept (the scan and its "
                                   "summary stay); 0: forever.", _range(0, 36500)),
    "retention.interval_seconds": Key("int", 3600, "How often retention runs.", _range(10, 86400)),
    "audit.checkpoint_seconds": Key("int", 3600, "Longest time between signed audit checkpoints (one is "
                                    "written only when rows were added, and at shutdown).", _range(1, 7 * 86400)),
    "logging.level": Key("str", "info", "Log level.", _choice("debug", "info", "warning", "error")),
    "logging.format": Key("str", "text", "Log lines as text or as JSON objects (one per line, for journald or a "
                          "SIEM).", _choice("text", "json")),
    "logging.access_log": Key("bool", True, "One log line per request (method, route, status, duration, key id "
                              "prefix, request id)."),
    "metrics.enabled": Key("bool", False, "Serve Prometheus metrics at GET /metrics (no API key)."),
    "metrics.allowed_ips": Key("list", [], "IPs/CIDRs allowed to read /metrics; empty: any address.", _cidrs),
}




class Config:
    """Validated settings: ``config["server.port"]``. Unknown keys are errors, never ignored."""

    def __init__(self, data_dir: Path, values: dict[str, Any], path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.path = path
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "appliance.db"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def scans_dir(self) -> Path:
        return self.data_dir / "scans"

    def engine_settings(self) -> dict[str, Any]:
        """The ``engines.*`` keys, for the adapters (which never see the config object)."""
        return {name: value for name, value in self._values.items() if name.startswith("engines.")}

    @property
    def engine_data_dir(self) -> Path:
        """Offline data bundles (``engines import``), one folder per scan type."""
        return self.data_dir / "engine-data"


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML document → dotted keys; tables that are values of a key stay whole."""
    flat: dict[str, Any] = {}
    for name, value in doc.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and not (dotted in KEYS and KEYS[dotted].type == "table"):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def validate(flat: dict[str, Any]) -> dict[str, Any]:
    values = {name: key.default for name, key in KEYS.items()}
    for name, value in flat.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"{name}: unknown setting")
        problem = key.problem(value)
        if problem:
            raise ConfigError(f"{name}: {problem}")
        values[name] = float(value) if key.type == "float" else value
    if values["queue.backend"] == "redis" and not values["queue.redis_url"]:
        raise ConfigError("queue.redis_url: required when queue.backend = \"redis\"")
    return values


def load(data_dir: Path, config_file: Path | None = None) -> Config:
    """Read ``config_file`` (default: the data dir's), validate it, fill defaults."""
    path = config_file or data_dir / CONFIG_NAME
    flat: dict[str, Any] = {}
    if path.exists():
        try:
            flat = flatten(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    elif config_file is not None:
        raise ConfigError(f"{path}: no such file")
    return Config(data_dir, validate(flat), path)


def parse_literal(name: str, text: str) -> Any:
    """``config set`` takes a TOML literal: 8443, "0.0.0.0", ["10.0.0.0/8"], {nmap = 2}."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{name}: {text!r} is not a TOML value (strings need quotes)") from None


def dump_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(dump_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {dump_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(flat: dict[str, Any]) -> str:
    """Dotted keys → TOML text grouped by section (only the keys given)."""
    sections: dict[str, list[str]] = {}
    for name in sorted(flat):
        section, _, leaf = name.rpartition(".")
        sections.setdefault(section, []).append(f"{leaf} = {dump_value(flat[name])}")
    return "\n".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def set_value(path: Path, name: str, text: str) -> Any:
    """Validate and write one key into the config file; the whole file is checked before saving."""
    if name not in KEYS:
        raise ConfigError(f"{name}: unknown setting")
    value = parse_literal(name, text)
    flat = flatten(tomllib.loads(path.read_text())) if path.exists() else {}
    flat[name] = value
    validate(flat)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dumps(flat))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return value
