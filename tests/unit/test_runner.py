"""The process runner: argv only, own process group, scrubbed env, output cap, timeout, stop."""
import sys
import time

from appliance.scanning.runner import run_process
from tests.helpers import live_group_members

PY = sys.executable


def run(tmp_path, code, timeout=30.0, stop=lambda: False, cap=1 << 20):
    pids: list[int] = []
    result = run_process([PY, "-c", code], tmp_path, timeout, should_stop=stop, on_tick=lambda: None,
                         on_start=pids.append, kill_grace=1.0, output_cap=cap, tick_seconds=0.2)
    return result, pids[0]


def test_env_is_scrubbed_and_output_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("CIX_SECRET", "s3cret")
    result, _ = run(tmp_path, "import os,sys; print(sorted(os.environ)); sys.stderr.write('oops')")
    out = (tmp_path / "stdout.log").read_text()
    assert "HTTPS_PROXY" not in out and "CIX_SECRET" not in out and "'TERM'" in out
    assert result.returncode == 0 and result.stderr_tail == "oops" and not result.timed_out


def test_argv_is_not_a_shell(tmp_path):
    """Each argument reaches the program verbatim: a shell would split, expand or run them (and with
    ``shell=True`` a list's first item alone is the command: the program would see none of them)."""
    marker = tmp_path / "pwned"
    args = ["a b", f"$(touch {marker})", f"; touch {marker}", "*", "`id`"]
    result = run_process([PY, "-c", "import sys; print(repr(sys.argv[1:]))", *args], tmp_path, 10,
                         lambda: False, lambda: None, lambda pid: None)
    assert result.returncode == 0
    assert (tmp_path / "stdout.log").read_text().strip() == repr(args)
    assert not marker.exists()


def test_output_is_capped(tmp_path):
    run(tmp_path, "print('x' * 100000)", cap=1000)
    data = (tmp_path / "stdout.log").read_bytes()
    assert len(data) < 1100 and data.endswith(b"[output truncated]\n")


CHILD = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
         "time.sleep(60)")


def _group_gone(pgid):
    return live_group_members(pgid) == []


def test_timeout_kills_the_whole_group(tmp_path):
    started = time.monotonic()
    result, pgid = run(tmp_path, CHILD, timeout=1.0)
    assert result.timed_out and time.monotonic() - started < 10
    assert _group_gone(pgid)


def test_stop_flag_kills_the_whole_group_quickly(tmp_path):
    deadline = time.monotonic() + 1.0
    result, pgid = run(tmp_path, CHILD, stop=lambda: time.monotonic() > deadline)
    assert result.stopped and result.duration < 5
    assert _group_gone(pgid)


def test_sigterm_ignoring_process_gets_sigkill(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    result, pgid = run(tmp_path, code, timeout=0.5)
    assert result.timed_out and result.returncode == -9 and _group_gone(pgid)
