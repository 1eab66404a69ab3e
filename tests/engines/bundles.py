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


def image_tarball(path: Path, files: dict[str, bytes], tag: str = "cix/lab:1") -> Path:
    """A one-layer image in ``docker save`` format (what ``trivy image --input`` reads), built by hand:
    no registry and no Docker daemon are needed."""
    import hashlib

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
                         "history": [{"created_by": "cix test layer"}]}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
