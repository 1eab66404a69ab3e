"""Runs scanner processes: argv only, each in its own process group, a scrubbed environment, capped
output, a deadline and a stop flag. Knows nothing of scans or the database.

:class:`ProcessControl` is what an engine's ``run()`` is lent (the :class:`engines.base.RunControl`
protocol): the default ``run()`` executes one argv; engines driven through a daemon's API spawn the
daemon and poll the stop flag themselves. Every process started here gets ``PR_SET_PDEATHSIG``, so
a worker killed with SIGKILL takes its scanners with it.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from engines.base import RunResult

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POLL_SECONDS = 0.2


def scrubbed_env(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """No proxy variables, no inherited secrets: scanners see only what they need."""
    env = {"HOME": str(workdir), "TERM": "dumb", "PATH": SAFE_PATH, "LANG": "C.UTF-8", "TMPDIR": str(workdir)}
    env.update(extra or {})
    return env


_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no libc symbols (not Linux)
    _libc = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started us goes away."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_process(argv: list[str], workdir: Path, env: Mapping[str, str] | None = None,
                  stdin: int | None = subprocess.DEVNULL, stdout: int | IO[bytes] = subprocess.PIPE,
                  stderr: int | IO[bytes] = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """A scanner process leading a new session (its own process group), never through a shell."""
    return subprocess.Popen(argv, cwd=workdir, env=scrubbed_env(workdir, env), stdin=stdin, stdout=stdout,
                            stderr=stderr, start_new_session=True, close_fds=True,
                            preexec_fn=_die_with_parent)


def _drain(stream: IO[bytes], path: Path, cap: int) -> None:
    """Copy ``stream`` to ``path`` up to ``cap`` bytes, then keep reading so the child never blocks."""
    kept = 0
    # read1 and flush: engines read progress (and tests read markers) from the log while the scanner
    # runs; read() would wait for 64 KiB or the end, and the file buffer would hold what came.
    read = getattr(stream, "read1", stream.read)
    with stream, open(path, "wb") as out:
        for chunk in iter(lambda: read(65536), b""):
            if kept < cap:
                out.write(chunk[: cap - kept])
                out.flush()
                kept += len(chunk)
        if kept > cap:
            out.write(b"\n[output truncated]\n")


def kill_group(pgid: int, grace: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to the whole group, SIGKILL after ``grace`` seconds: children die with the leader."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2
    while group_alive(pgid) and time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs. Zombies do not count: once killed, a
    scanner's orphaned children are reaped by init, at init's pace, and hold nothing meanwhile."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def run_process(argv: list[str], workdir: Path, timeout: float, should_stop: Callable[[], bool],
                on_tick: Callable[[], None], on_start: Callable[[int], object], kill_grace: float = 3.0,
                output_cap: int = 1 << 20, tick_seconds: float = 1.0, stdin: bytes | None = None,
                graceful_stop: Callable[[subprocess.Popen[bytes]], None] | None = None,
                stop_grace: float = 0.0, env: Mapping[str, str] | None = None,
                log_prefix: str = "") -> RunResult:
    """Run ``argv`` in ``workdir`` until it exits, ``timeout`` passes or ``should_stop()``.

    ``stdin``: None gives the process /dev/null; bytes are written to a pipe that stays open (an
    engine's ``graceful_stop`` may write to it). On a stop, ``graceful_stop(proc)`` runs first and
    the process gets ``stop_grace`` seconds to exit before its group is killed."""
    started = time.monotonic()
    proc = start_process(argv, workdir, env, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE)
    if stdin and proc.stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.flush()
    pgid = proc.pid  # start_new_session: the child leads a new group with its own pid
    on_start(pgid)
    drains = [threading.Thread(target=_drain, args=(stream, workdir / f"{log_prefix}{name}", output_cap),
                               daemon=True)
              for stream, name in ((proc.stdout, "stdout.log"), (proc.stderr, "stderr.log"))]
    for thread in drains:
        thread.start()
    stopped = timed_out = False
    next_tick = started + tick_seconds
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if should_stop():
                stopped = True
            elif now - started > timeout:
                timed_out = True
            if stopped or timed_out:
                if graceful_stop is not None:
                    _stop_gracefully(proc, graceful_stop, stop_grace)
                kill_group(pgid, kill_grace, proc)
                break
            if now >= next_tick:
                on_tick()
                next_tick = now + tick_seconds
            time.sleep(POLL_SECONDS)
    finally:
        # Leftover children (a scanner's helpers) go with the leader, whatever happened.
        kill_group(pgid, 0.5, proc)
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        for thread in drains:
            thread.join(5)
    return RunResult(proc.returncode, stopped, timed_out, _tail(workdir / f"{log_prefix}stderr.log"),
                     time.monotonic() - started)


def _stop_gracefully(proc: subprocess.Popen[bytes], graceful_stop: Callable[[subprocess.Popen[bytes]], None],
                     grace: float) -> None:
    try:
        graceful_stop(proc)
    except (OSError, ValueError):
        return  # the process went away or closed its stdin: the kill below finishes it
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)


class ProcessControl:
    """The :class:`engines.base.RunControl` of one scan run."""

    def __init__(self, workdir: Path, timeout: float, should_stop: Callable[[], bool],
                 on_tick: Callable[[], None], on_start: Callable[[int], None],
                 on_progress: Callable[[int], None], kill_grace: float = 3.0, output_cap: int = 1 << 20,
                 tick_seconds: float = 1.0) -> None:
        self.workdir = workdir
        self._deadline = time.monotonic() + timeout
        self._should_stop = should_stop
        self._on_tick = on_tick
        self._on_start = on_start
        self._on_progress = on_progress
        self._kill_grace = kill_grace
        self._output_cap = output_cap
        self._tick_seconds = tick_seconds
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._next_tick = time.monotonic() + tick_seconds

    def execute(self, argv: list[str], *, stdin: bytes | None = None,
                graceful_stop: Callable[[subprocess.Popen[bytes]], None] | None = None,
                stop_grace: float = 0.0, env: Mapping[str, str] | None = None) -> RunResult:
        return run_process(argv, self.workdir, max(0.0, self.seconds_left()), self._should_stop, self._on_tick,
                           self._on_start, self._kill_grace, self._output_cap, self._tick_seconds, stdin,
                           graceful_stop, stop_grace, env)

    def spawn(self, argv: list[str], *, env: Mapping[str, str] | None = None,
              log_name: str = "daemon") -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{log_name}.log", "ab") as log:
            proc = start_process(argv, self.workdir, env, stdout=log, stderr=subprocess.STDOUT)
        self._spawned.append(proc)
        self._on_start(proc.pid)
        return proc

    def should_stop(self) -> bool:
        """Also the heartbeat of engines that poll an API instead of waiting on a process."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + self._tick_seconds
            self._on_tick()
        return self._should_stop()

    def seconds_left(self) -> float:
        return self._deadline - time.monotonic()

    def report_progress(self, percent: int) -> None:
        self._on_progress(max(0, min(100, int(percent))))

    def close(self) -> None:
        """End every daemon this run spawned, whole process groups."""
        for proc in self._spawned:
            kill_group(proc.pid, self._kill_grace, proc)
            proc.wait()
        self._spawned.clear()


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
