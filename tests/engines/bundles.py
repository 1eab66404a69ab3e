"""Offline data bundles for tests: trivy-db tarballs, nuclei template folders, wordlists.

The trivy DB is a stand-in with the BoltDB header the importer checks (no registry serves the real
one); the nuclei templates and wordlists are real ones.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from appliance.engine_data import BOLT_MAGIC, Imported, import_bundle

TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "nuclei-templates"
LAB_WORDS = ("www", "mail", "admin", "dev", "api", "vpn", "blog", "shop", "staging", "ftp", "portal", "test")


def bolt_bytes(size: int = 4096) -> bytes:
    """A file that starts like a BoltDB (page header, then the meta magic and version 2)."""
    head = bytes(16) + BOLT_MAGIC.to_bytes(4, "little") + (2).to_bytes(4, "little")
    return head + os.urandom(max(0, size - len(head)))


def trivy_db_tar(path: Path, updated: str = "2026-11-28T06:00:00.123456Z", prefix: str = "db/",
                 db_size: int = 4096, compress: bool = True, metadata: dict | None = None) -> Path:
    meta = metadata if metadata is not None else {"Version": 2, "NextUpdate": "2026-11-29T06:00:00Z",
                                                  "UpdatedAt": updated, "DownloadedAt": updated}
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in ((f"{prefix}metadata.json", json.dumps(meta).encode()),
                           (f"{prefix}trivy.db", bolt_bytes(db_size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def import_fake_trivy_db(data_root: Path, scratch: Path, **kwargs: object) -> Imported:
    tar = trivy_db_tar(scratch / "trivy-db.tar.gz", **kwargs)  # type: ignore[arg-type]
    return import_bundle(data_root, "trivy-db", tar)[0]


def wordlist(path: Path, words: tuple[str, ...] = LAB_WORDS) -> Path:
    path.write_text("\n".join(words) + "\n")
    return path
