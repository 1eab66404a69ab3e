"""Where the live tests find the data engines (``build.sh engines`` installs them into /opt/cix-engines)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PREFIX = Path(os.environ.get("CIX_ENGINES", "/opt/cix-engines"))
ROOT = Path(__file__).resolve().parent.parent.parent


def binary(name: str) -> str | None:
    path = PREFIX / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def require(name: str) -> str:
    path = binary(name)
    if path is None:
        pytest.skip(f"{name} is not installed (run: bash build.sh engines)")
    return path


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], check=False, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_in_netns(args: dict, timeout: float = 300) -> dict:
    """:mod:`tests.engines.netns_osint` in a new user + network namespace (loopback only)."""
    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "tests.engines.netns_osint", json.dumps(args)],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    return result
