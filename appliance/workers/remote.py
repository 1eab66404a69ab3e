"""``cix-appliance worker``: a scan worker on another host — no data dir, no database.

It takes jobs from the appliance's Redis queue (only the zones it was placed in, only the engines
installed here), runs them with the same task and runner code as the embedded worker, and reports
over HTTPS with its worker token. It answers SIGTERM by stopping its scanners and handing their
scans back to the queue.
"""
from __future__ import annotations

import logging
import signal
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from appliance import __version__
from appliance.scanning.queue import Backend, ScanQueue
from appliance.scanning.reporter import INTERNAL_PREFIX, WORKER_TOKEN_HEADER, RemoteReporter
from appliance.scanning.task import ScanTask, TaskSettings
from engines import Engine, build_registry
from engines.registry import probe_all

log = logging.getLogger(__name__)
HELLO_SECONDS = 10.0


class WorkerError(Exception):
    """The worker cannot start: the appliance refused it or cannot be reached."""


@dataclass(frozen=True)
class WorkerOptions:
    appliance: str
    token: str
    queue_url: str
    ca_file: Path | None
    concurrency: int
    work_dir: Path
    engine_paths: dict[str, str]
    kill_grace: float = 3.0
    engine_settings: dict[str, Any] = field(default_factory=dict)  # the engines.* config keys


def _client(options: WorkerOptions) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return httpx.Client(base_url=options.appliance.rstrip("/"), verify=context, timeout=15,
                        headers={WORKER_TOKEN_HEADER: options.token})


class _Counting:
    """The task, counting the scans this worker runs right now (reported in each hello)."""

    def __init__(self, task: ScanTask) -> None:
        self._task = task
        self._lock = threading.Lock()
        self.running = 0

    def __call__(self, job: dict[str, Any]) -> str:
        with self._lock:
            self.running += 1
        try:
            return self._task(job)
        finally:
            with self._lock:
                self.running -= 1


def hello(client: httpx.Client, engines: list[str], running: int) -> dict[str, Any]:
    try:
        response = client.post(f"{INTERNAL_PREFIX}/hello",
                               json={"version": __version__, "engines": engines, "running": running})
    except httpx.HTTPError as exc:
        raise WorkerError(f"cannot reach the appliance: {exc}") from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise WorkerError(f"the appliance refused this worker ({response.status_code}): {message}")
    data: dict[str, Any] = response.json()["data"]
    return data


def run_worker(options: WorkerOptions, stopping: threading.Event | None = None) -> None:
    """Serve scans until SIGTERM/SIGINT (or ``stopping``)."""
    stopping = stopping or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    options.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    scans_dir = options.work_dir / "scans"
    scans_dir.mkdir(exist_ok=True, mode=0o700)
    engines = build_registry(options.engine_paths, options.work_dir / "engine-data", options.engine_settings)
    probe_all(engines)
    caps = {name: options.concurrency for name, engine in engines.items()
            if isinstance(engine, Engine) and engine.runnable()}
    with _client(options) as client:
        me = hello(client, sorted(caps), 0)
        zones = list(me["zones"]) or [""]
        task = _Counting(ScanTask(engines, RemoteReporter(client, me["name"]), scans_dir,
                                  TaskSettings(kill_grace=options.kill_grace), stopping))
        queue = ScanQueue(Backend("redis", redis_url=options.queue_url), task)
        queue.start(zones, caps, options.concurrency, max_delay=0.25)
        log.info("worker %s: zones %s, engines %s, up to %d scans at once", me["name"],
                 ", ".join(z or "(default)" for z in zones), ", ".join(sorted(caps)) or "none", options.concurrency)
        try:
            while not stopping.wait(HELLO_SECONDS):
                try:
                    hello(client, sorted(caps), task.running)
                except WorkerError as exc:
                    log.warning("%s", exc)
        finally:
            log.info("worker %s: stopping; running scans go back to the queue", me["name"])
            queue.stop(options.kill_grace + 10)
