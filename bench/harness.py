"""The pieces the bench drives: an appliance started from a source tree with a fresh data dir, the
bare reference server, wrk, and py-spy. Everything listens on 127.0.0.1 only; every process the
bench starts is stopped by its own pid."""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = os.environ.get("BENCH_PYTHON", sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Https:
    """A tiny HTTPS client trusting one certificate (stdlib only: the bench measures the server)."""

    def __init__(self, base: str, cafile: Path) -> None:
        self.base = base
        self.context = ssl.create_default_context(cafile=str(cafile))

    def call(self, method: str, path: str, key: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        for name, value in {**(headers or {}), **({"X-API-Key": key} if key else {})}.items():
            request.add_header(name, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Proc:
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env, cwd=self.cwd,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.argv[:3]} exited with {self.proc.returncode}; log {self.log}:\n"
                               + self.log.read_text()[-3000:])

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to our own process (its group for multi-process servers), then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Appliance:
    """``python -m appliance init`` + ``serve`` from ``src`` (a checkout of this repository)."""

    name: str
    work: Path
    src: Path = ROOT
    config: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None  # e.g. the single binary; default: python -m appliance
    port: int = 0
    admin_key: str = ""
    server: Proc | None = None

    @property
    def data_dir(self) -> Path:
        return self.work / f"{self.name}-data"

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls-cert.pem"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src), "PYTHONDONTWRITEBYTECODE": "1"}

    def cli(self, *args: str) -> str:
        argv = [*(self.command or [PYTHON, "-m", "appliance"]), *args, "--data-dir", str(self.data_dir)]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.src, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def tool(self, *args: str, stdin: str | None = None) -> str:
        """bench/tools.py run with this appliance's source tree (its own code for keys, scans, ops)."""
        argv = [PYTHON, str(BENCH / "tools.py"), *args, "--data-dir", str(self.data_dir)]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.src, timeout=600,
                              input=stdin)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def init(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.admin_key = json.loads(self.cli("init", "--allow-loopback", "--json"))["key"]
        for key, value in self.config.items():
            self.cli("config", "set", key, value)

    def start(self) -> None:
        self.port = free_port()
        argv = [*(self.command or [PYTHON, "-m", "appliance"]), "serve", "--data-dir", str(self.data_dir),
                "--host", "127.0.0.1", "--port", str(self.port)]
        self.server = Proc(argv, self.work / f"{self.name}-serve.log", env=self.env, cwd=self.src)
        self.server.start()
        wait_for(self.ready, 60, f"{self.name} on port {self.port}")

    def ready(self) -> bool:
        assert self.server is not None
        self.server.check_alive()
        try:
            return self.client().call("GET", "/health", timeout=2)[0] == 200
        except OSError:
            return False

    def client(self) -> Https:
        return Https(self.url, self.cert)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.server is None else self.server.pid

    def stop(self) -> int | None:
        return None if self.server is None else self.server.stop()


@dataclass
class Reference:
    """bench/reference.py: the bare Starlette app on uvicorn (httptools, uvloop), TLS 1.3 only."""

    work: Path
    cert: Path
    key: Path
    bodies: dict[str, Any]
    workers: int = 1
    port: int = 0
    server: Proc | None = None

    def start(self) -> None:
        self.port = free_port()
        bodies = self.work / "reference-bodies.json"
        bodies.write_text(json.dumps(self.bodies))
        argv = [PYTHON, str(BENCH / "reference.py"), "--cert", str(self.cert), "--key", str(self.key),
                "--bodies", str(bodies), "--port", str(self.port), "--workers", str(self.workers)]
        self.server = Proc(argv, self.work / f"reference-{self.workers}.log", cwd=BENCH)
        self.server.start()
        client = Https(self.url, self.cert)

        def up() -> bool:
            assert self.server is not None
            self.server.check_alive()
            try:
                return client.call("GET", next(iter(self.bodies)), timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(up, 60, f"reference on port {self.port}")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The serving process when there is one (1 worker); uvicorn's supervisor otherwise."""
        return None if self.server is None or self.workers > 1 else self.server.pid

    def stop(self) -> int | None:
        return None if self.server is None else self.server.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its threads so far (its children's are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time so far of ``pid``'s first thread (the appliance's event loop) and of
    its other threads together (Python gives the OS no thread names to tell them apart by)."""
    first = rest = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(pid):
            first += seconds
        else:
            rest += seconds
    return first, rest


def wrk(url: str, seconds: float, connections: int = 64, threads: int = 2, keys: Path | None = None,
        method: str = "GET", body: Path | None = None, server_pid: int | None = None) -> dict[str, Any]:
    """One wrk run; its result line (bench/lua/keys.lua) plus ``rps``, the latencies in ms and, given
    ``server_pid``, the server's CPU time per request (``cpu_us``): steadier than req/s on a shared
    machine, where the server gets what CPU the others leave."""
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    argv = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", "10s", "-s", str(BENCH / "lua" / "keys.lua"), url, "--",
            str(keys) if keys else "-", method, *([str(body)] if body else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}")
    result: dict[str, Any] = json.loads(line[6:])
    if server_pid:
        result["cpu_us"] = (cpu_seconds(server_pid) - cpu_before) / max(1, result["requests"]) * 1e6
    seconds_run = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds_run
    result["ok_rps"] = (result["requests"] - result["non2xx"]) / seconds_run
    result["errors"] = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    for name in ("p50", "p90", "p99", "max"):
        result[f"{name}_ms"] = result[f"{name}_us"] / 1000
    return result


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (a onefile binary is bootloader + child)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:"))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        todo += [int(c) for c in children]
    return total / 1024
