"""Scanners installed as Python console scripts in their own venvs (theHarvester, Sublist3r): their
version from the installed distribution (neither has ``--version``) and their interpreter."""
from __future__ import annotations

import os
import re
from pathlib import Path

_DIST = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+?)-(?P<version>\d+(?:\.\d+)*[A-Za-z0-9.+-]*)\.dist-info$")


def _venv(script: str) -> Path:
    # bin/<script> → the venv (the script may be a symlink placed on PATH)
    return Path(os.path.realpath(script)).parent.parent


def dist_version(script: str, dist: str) -> str | None:
    """The version of distribution ``dist`` in the venv that holds ``script``."""
    wanted = dist.lower().replace("-", "_")
    for site in _venv(script).glob("lib/python3*/site-packages"):
        for entry in site.iterdir():
            match = _DIST.match(entry.name)
            if match and match.group("name").lower().replace("-", "_") == wanted:
                return match.group("version")
    return None


def interpreter(script: str) -> str | None:
    """The Python a console script runs with (its ``#!`` line), when it is an absolute executable path."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    path = first[2:].strip().split()[0] if first[2:].strip() else ""
    return path if path.startswith("/") and os.access(path, os.X_OK) else None
