"""OWASP ZAP adapter: runs ZAP as a daemon for one scan and drives it through its API.

Decisions worth knowing:

* One daemon per scan: ``zap.sh -daemon -silent -host 127.0.0.1 -port <free port> -config
  api.key=<random per-scan key> -dir <workdir>/zaphome``. Its home is the scan's work dir, so no state
  (sites, alerts, add-on updates) carries over between scans; ``-silent`` stops ZAP's update checks
  and other unsolicited requests. The key goes in the ``X-ZAP-API-Key`` header, never in a URL.
* ``scanMode``: ``baseline`` = spider + passive scan (what zap-baseline does); ``full`` = baseline +
  active scan; ``api`` = import the target URL as an OpenAPI definition, then active scan.
  ``ajaxSpider`` needs a browser the appliance does not ship: only ``false`` is accepted.
* A URL with a name is scanned at the vetted address; a replacer rule sets the ``Host`` header to
  the name, and findings get the name back.
* Stop (cancel, shutdown, deadline): ``spider/action/stop`` and ``ascan/action/stop``, then the
  report of what was found so far is fetched, then ``core/action/shutdown``; the runner kills the
  daemon's process group whatever happens.
* Unreachable target: ZAP keeps no message for a request that got no response, so a target with no
  message after the spider has failed.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from engines.base import Engine, Finding, Outcome, RunControl, RunResult, ScanSpec
from engines.options import Option, OptionError
from engines.web import UnvettedTarget, WebTarget, failed, read_tail, refused, web_target
from engines.zap_report import load_report, parse_report

REPORT = "zap.json"
STATUS = "zap-status.json"
STARTUP_SECONDS = 180  # ZAP's JVM and add-ons take 10-60 s to come up on 2 cores
POLL_SECONDS = 1.0


class ZapError(RuntimeError):
    """The daemon did not start, or its API answered with an error."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_ajax(value: Any) -> Any:
    if value:
        raise ValueError("the AJAX spider needs a browser the appliance does not ship; only false is accepted")
    return value


class ZapClient:
    """The few ZAP API calls the adapter makes (JSON API over HTTP on loopback)."""

    def __init__(self, port: int, key: str, timeout: float = 30.0) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = key
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any]) -> bytes:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(f"{self.base}{path}?{query}", headers={"X-ZAP-API-Key": self.key})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        try:
            with opener.open(request, timeout=self.timeout) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise ZapError(f"ZAP API {path} answered {exc.code}: {detail}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise ZapError(f"ZAP API {path} unreachable: {exc}") from None

    def call(self, component: str, kind: str, name: str, **params: Any) -> dict[str, Any]:
        body = self._get(f"/JSON/{component}/{kind}/{name}/", params)
        try:
            data = json.loads(body)
        except ValueError:
            raise ZapError(f"ZAP API {component}/{kind}/{name} did not answer JSON") from None
        if not isinstance(data, dict):
            raise ZapError(f"ZAP API {component}/{kind}/{name} answered {data!r}")
        return data

    def report(self) -> bytes:
        return self._get("/OTHER/core/other/jsonreport/", {})


class ZapEngine(Engine):
    name = "zap"  # type: ignore[misc]
    title = "OWASP ZAP"  # type: ignore[misc]
    binary = "zap.sh"  # type: ignore[misc]
    target_types = frozenset({"url"})
    default_timeout = 7200
    version_args = ("-version",)
    version_pattern = r"(\d+\.\d+\.\d+)"
    install_hint = "install OWASP ZAP >= 2.16 and Java 17 and set engines.paths.zap"
    options = (
        Option("scanMode", "enum", "baseline: spider + passive scan; full: + active scan; api: import the URL "
               "as an OpenAPI definition + active scan", default="baseline", choices=("baseline", "full", "api")),
        Option("maxDurationMinutes", "integer", "Stop scanning after this many minutes and report what was "
               "found", default=30, minimum=1, maximum=1440),
        Option("spiderMaxDepth", "integer", "Spider depth (0: unlimited)", default=5, minimum=0, maximum=20),
        Option("ajaxSpider", "boolean", "The AJAX spider; not available (false only)", default=False,
               normalize=_check_ajax),
    )

    def check(self, options: dict[str, Any]) -> None:
        if options.get("scanMode") == "api" and "spiderMaxDepth" in options:
            raise OptionError("options.spiderMaxDepth", "does not apply to scanMode api (no spider)")

    def run(self, spec: ScanSpec, control: RunControl) -> RunResult:
        started = time.monotonic()
        try:
            target = web_target(spec)
        except UnvettedTarget as exc:
            return refused(str(exc))
        opts = {o.name: o.default for o in self.options if o.default is not None} | spec.options
        port, key = free_port(), secrets.token_urlsafe(24)
        proc = control.spawn([spec.executable, "-daemon", "-silent", "-host", "127.0.0.1", "-port", str(port),
                              "-config", f"api.key={key}", "-dir", str(spec.workdir / "zaphome")], log_name="zap")
        scan = _Scan(ZapClient(port, key), control, target, opts, spec.workdir, proc.poll)
        stopped = timed_out = False
        try:
            scan.wait_ready()
            scan.execute()
        except _Stopped as why:
            stopped, timed_out = why.by_flag, not why.by_flag
        except ZapError as exc:
            _write_status(spec.workdir, error=str(exc))
        finally:
            scan.finish()
        return RunResult(proc.poll(), stopped, timed_out, read_tail(spec.workdir / "zap.log", 4096),
                         time.monotonic() - started)

    def parse(self, spec: ScanSpec) -> Iterator[Finding]:
        try:
            target: WebTarget | None = web_target(spec)
        except UnvettedTarget:
            target = None
        if target is None:
            return parse_report(spec.workdir / REPORT)
        return parse_report(spec.workdir / REPORT, target.public_url, target.host, target.ip)

    def outcome(self, spec: ScanSpec, returncode: int, stderr: str) -> Outcome:
        status = _read_status(spec.workdir)
        if status.get("error"):
            return failed(str(status["error"]))
        if load_report(spec.workdir / REPORT) is None:
            hint = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            return failed("ZAP produced no report" + (f": {hint}" if hint else ""))
        return Outcome(True)


class _Stopped(Exception):
    def __init__(self, by_flag: bool) -> None:
        super().__init__("stopped" if by_flag else "deadline")
        self.by_flag = by_flag


class _Scan:
    """One scan's conversation with the daemon."""

    def __init__(self, zap: ZapClient, control: RunControl, target: WebTarget, opts: dict[str, Any],
                 workdir: Path, daemon_exit: Any) -> None:
        self.zap = zap
        self.control = control
        self.target = target
        self.opts = opts
        self.workdir = workdir
        self.daemon_exit = daemon_exit
        self.ready = False
        self.running: list[tuple[str, str]] = []  # (component, scan id) to stop on the way out
        # The client's duration cap; the scan's own deadline may come first (seconds_left).
        self.until = time.monotonic() + int(opts["maxDurationMinutes"]) * 60

    def _tick(self) -> None:
        """Raises :class:`_Stopped` on a stop request or the scan's deadline; also the heartbeat."""
        if self.control.should_stop():
            raise _Stopped(True)
        if self.control.seconds_left() <= 5:
            raise _Stopped(False)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            self._tick()
            if self.daemon_exit() is not None:
                raise ZapError(f"ZAP exited during start-up (exit {self.daemon_exit()}); see zap.log")
            try:
                self.zap.call("core", "view", "version")
                self.ready = True
                return
            except ZapError:
                if time.monotonic() > deadline:
                    raise ZapError(f"ZAP's API did not come up within {STARTUP_SECONDS} s") from None
            time.sleep(0.5)

    def execute(self) -> None:
        target, zap = self.target, self.zap
        if target.vhost:
            zap.call("replacer", "action", "addRule", description="cix-host", enabled="true",
                     matchType="REQ_HEADER", matchRegex="false", matchString="Host",
                     replacement=target.host_header, initiators="")
        mode = self.opts["scanMode"]
        if mode == "api":
            zap.call("openapi", "action", "importUrl", url=target.connect_url)
        else:
            zap.call("core", "action", "accessUrl", url=target.connect_url, followRedirects="true")
            zap.call("spider", "action", "setOptionMaxDepth", Integer=self.opts["spiderMaxDepth"])
            scan_id = str(zap.call("spider", "action", "scan", url=target.connect_url, recurse="true")["scan"])
            self._follow("spider", scan_id, 0, 40 if mode == "full" else 80)
        if not self._reached():
            raise ZapError(f"ZAP got no response from {target.url}: the target is unreachable")
        if mode in ("full", "api") and time.monotonic() < self.until:
            scan_id = str(zap.call("ascan", "action", "scan", url=target.connect_url, recurse="true")["scan"])
            self._follow("ascan", scan_id, 40, 95)
        self._wait_passive()

    def _reached(self) -> bool:
        answer = self.zap.call("core", "view", "numberOfMessages", baseurl=self.target.connect_origin)
        return int(answer.get("numberOfMessages", 0)) > 0

    def _follow(self, component: str, scan_id: str, low: int, high: int) -> None:
        self.running.append((component, scan_id))
        while True:
            self._tick()
            if time.monotonic() >= self.until:
                return  # maxDurationMinutes: finish() stops it and reports what was found
            percent = int(self.zap.call(component, "view", "status", scanId=scan_id).get("status", 0))
            self.control.report_progress(low + (high - low) * min(percent, 100) // 100)
            if percent >= 100:
                self.running.remove((component, scan_id))
                return
            time.sleep(POLL_SECONDS)

    def _wait_passive(self) -> None:
        while time.monotonic() < self.until:
            self._tick()
            if int(self.zap.call("pscan", "view", "recordsToScan").get("recordsToScan", 0)) == 0:
                return
            time.sleep(POLL_SECONDS)

    def finish(self) -> None:
        """Stop what runs, save the report (partial or not), shut the daemon down. Best effort: the
        runner kills the daemon's group afterwards anyway."""
        if not self.ready:
            return
        for component, scan_id in self.running:
            with contextlib.suppress(ZapError):
                self.zap.call(component, "action", "stop", scanId=scan_id)
        try:
            report = self.zap.report()
            tmp = self.workdir / (REPORT + ".part")
            tmp.write_bytes(report)
            tmp.replace(self.workdir / REPORT)
        except (ZapError, OSError) as exc:
            if not _read_status(self.workdir).get("error"):
                _write_status(self.workdir, error=f"could not fetch ZAP's report: {exc}")
        with contextlib.suppress(ZapError):  # it may close the connection while shutting down
            self.zap.call("core", "action", "shutdown")
        deadline = time.monotonic() + 10
        while self.daemon_exit() is None and time.monotonic() < deadline:
            time.sleep(0.2)


def _write_status(workdir: Path, **fields: Any) -> None:
    (workdir / STATUS).write_text(json.dumps(fields), encoding="utf-8")


def _read_status(workdir: Path) -> dict[str, Any]:
    try:
        data = json.loads((workdir / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
