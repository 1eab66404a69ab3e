"""Runs one scanner process: argv only, its own process group, a scrubbed environment, capped
output, a deadline and a stop flag. Knows nothing of scans or the database."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
POLL_SECONDS = 0.2


@dataclass
class RunResult:
    returncode: int | None
    stopped: bool  # the stop flag was raised (cancel or shutdown)
    timed_out: bool
    stderr_tail: str
    duration: float


def scrubbed_env(workdir: Path) -> dict[str, str]:
    """No proxy variables, no inherited secrets: scanners see only what they need."""
    return {"HOME": str(workdir), "TERM": "dumb", "PATH": SAFE_PATH, "LANG": "C.UTF-8",
            "TMPDIR": str(workdir)}


def _drain(stream: IO[bytes], path: Path, cap: int) -> None:
    """Copy ``stream`` to ``path`` up to ``cap`` bytes, then keep reading so the child never blocks."""
    kept = 0
    with stream, open(path, "wb") as out:
        for chunk in iter(lambda: stream.read(65536), b""):
            if kept < cap:
                out.write(chunk[: cap - kept])
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
                output_cap: int = 1 << 20, tick_seconds: float = 1.0) -> RunResult:
    """Run ``argv`` in ``workdir`` until it exits, ``timeout`` passes or ``should_stop()``."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=workdir, env=scrubbed_env(workdir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            close_fds=True)
    pgid = proc.pid  # start_new_session: the child leads a new group with its own pid
    on_start(pgid)
    drains = [threading.Thread(target=_drain, args=(stream, workdir / name, output_cap), daemon=True)
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
        for thread in drains:
            thread.join(5)
    return RunResult(proc.returncode, stopped, timed_out, _tail(workdir / "stderr.log"),
                     time.monotonic() - started)


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
