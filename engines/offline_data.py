"""Offline data bundles as engines see them: read-only, from ``<engine data dir>/<kind>/current``.

The appliance's ``engines import`` command writes them (``appliance/engine_data.py``); this module only
reads, so that engines stay pure. Layout, per scan type::

    DATA_DIR/engine-data/<scanType>/<kind>/
        current -> <version dir>          swapped atomically (a symlink replaced with os.replace)
        <version dir>/bundle.json         what was imported: kind, version, size, time, sha256, summary
        <version dir>/<payload>           PAYLOAD[kind]: db/ for trivy-db, templates/, wordlist.txt

A scan resolves ``current`` once when it builds its argv, so an import during the scan does not change
the data under it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.base import DataStatus

MANIFEST = "bundle.json"
CURRENT = "current"
# Where each kind's payload sits inside a version dir.
PAYLOAD = {"trivy-db": "db", "nuclei-templates": "templates", "wordlist": "wordlist.txt"}


@dataclass(frozen=True)
class Bundle:
    kind: str
    version: str
    root: Path  # the resolved version dir
    size: int
    imported_at: float
    sha256: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def payload(self) -> Path:
        return self.root / PAYLOAD[self.kind]


def current_bundle(data_dir: Path | None, kind: str) -> Bundle | None:
    """The bundle ``current`` points at, or None when nothing usable was imported."""
    if data_dir is None:
        return None
    link = data_dir / kind / CURRENT
    try:
        root = Path(os.path.realpath(link))
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        return None
    bundle = Bundle(kind, str(manifest.get("version", "")), root, int(manifest.get("size", 0)),
                    float(manifest.get("importedAt", 0)), manifest.get("sha256"),
                    dict(manifest.get("summary") or {}))
    return bundle if bundle.payload.exists() else None


def bundle_status(data_dir: Path | None, kind: str, required: bool, scan_type: str) -> DataStatus:
    """The :class:`DataStatus` of one kind of data, with the import command when it is missing."""
    bundle = current_bundle(data_dir, kind)
    if bundle is None:
        return DataStatus(kind, required, missing=f"not imported (cix-appliance engines import {kind} ...)"
                          + ("" if kind != "wordlist" else f" for {scan_type}"))
    return DataStatus(kind, required, bundle.version, str(bundle.root), bundle.size, bundle.imported_at)


def age_seconds(status: DataStatus, now: float | None = None) -> int | None:
    if status.updated_at is None:
        return None
    return max(0, int((now if now is not None else time.time()) - status.updated_at))
