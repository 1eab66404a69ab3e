"""``engines import``: offline data bundles verified, stored versioned and swapped in atomically.

Nothing downloads at scan time on an isolated network, so the operator brings the data: the trivy
vulnerability DB, nuclei templates, the DNS wordlist of the OSINT engines. Each import is read once
as a stream (hashed, counted for the progress bar and extracted in the same pass) into a staging dir
beside its final place, verified there, renamed into ``<version>/`` and made ``current`` with
``os.replace`` of a symlink, so a scan sees the old bundle or the new one, never half of one. The
two newest versions are kept (the one in use and the one before it), older ones are pruned.

Tar members are checked before they are written: regular files and directories only, no absolute
names, no ``..``, size and count limits (a tar bomb fails the import, not the disk).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from appliance.errors import ApiError
from engines.base import Engine
from engines.offline_data import CURRENT, MANIFEST, PAYLOAD

# kind → the scan types that read it (a wordlist serves both OSINT engines).
KINDS: dict[str, tuple[str, ...]] = {
    "trivy-db": ("trivy",),
    "nuclei-templates": ("nuclei",),
    "wordlist": ("harvester", "sublist3r"),
}
KEEP_VERSIONS = 2
MAX_TOTAL_BYTES = 8 << 30
MAX_FILES = 200_000
MAX_WORDS = 2_000_000
BOLT_MAGIC = 0xED0CDAED
_CHUNK = 1 << 20
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_TEMPLATE_ID = re.compile(rb"^id:[ \t]*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]*)['\"]?[ \t]*$", re.MULTILINE)
_TEMPLATE_INFO = re.compile(rb"^info:[ \t]*$", re.MULTILINE)
_TEMPLATE_TAGS = re.compile(rb"^[ \t]+tags:[ \t]*['\"]?([A-Za-z0-9_,. -]+?)['\"]?[ \t]*$", re.MULTILINE)
# Not templates: nuclei's scan profiles and repository housekeeping.
_NOT_TEMPLATE_DIRS = frozenset({"profiles", "helpers"})
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

Progress = Callable[[int], None]


class BundleError(ValueError):
    """The bundle is not what its kind must be; the message says what is wrong."""


@dataclass(frozen=True)
class Imported:
    scan_type: str
    kind: str
    version: str
    path: Path
    size: int
    sha256: str | None
    summary: dict[str, Any]
    pruned: tuple[str, ...]


class _Reader:
    """A file read once: hashed and counted as the consumer reads it."""

    def __init__(self, fh: IO[bytes], progress: Progress | None) -> None:
        self._fh = fh
        self._progress = progress
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.hash.update(data)
        self.count += len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def drain(self) -> None:
        """Read what the consumer left (tar padding), so the hash covers the whole file."""
        while self.read(_CHUNK):
            pass


def import_bundle(data_root: Path, kind: str, source: Path, sha256: str | None = None,
                  version: str | None = None, scan_types: tuple[str, ...] | None = None,
                  progress: Progress | None = None) -> list[Imported]:
    """Import ``source`` as ``kind`` for each of ``scan_types`` (default: every reader of the kind)."""
    if kind not in KINDS:
        raise BundleError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    targets = scan_types or KINDS[kind]
    for scan_type in targets:
        if scan_type not in KINDS[kind]:
            raise BundleError(f"{kind} is not used by {scan_type} (it is for: {', '.join(KINDS[kind])})")
    if version is not None and not _VERSION.fullmatch(version):
        raise BundleError("--version must be 1-64 letters, digits, '.', '_', '+' or '-'")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise BundleError("--sha256 must be 64 hex digits")
        if source.is_dir():
            raise BundleError("--sha256 checks a file; SOURCE is a directory")
    if not source.exists():
        raise BundleError(f"{source}: no such file or directory")

    first_dir = data_root / targets[0] / kind
    first_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=first_dir))
    stages = {targets[0]: staging}  # installed ones were renamed away; the rest are removed below
    try:
        digest, summary, bundle_version = _STAGERS[kind](source, staging, progress)
        if sha256 is not None and digest != sha256:
            raise BundleError(f"sha256 mismatch: the file is {digest}, --sha256 said {sha256}")
        size = _tree_size(staging)
        manifest = {"kind": kind, "version": version or bundle_version or _timestamp(),
                    "importedAt": time.time(), "size": size, "sha256": digest, "source": source.name,
                    "summary": summary}
        for scan_type in targets[1:]:  # same file system: hard links, no second copy of the data
            kind_dir = data_root / scan_type / kind
            kind_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            stages[scan_type] = Path(tempfile.mkdtemp(prefix=".staging-", dir=kind_dir))
            shutil.copytree(staging, stages[scan_type], copy_function=os.link, dirs_exist_ok=True)
        return [_install(data_root / scan_type / kind, stages[scan_type], scan_type, kind, manifest)
                for scan_type in targets]
    finally:
        for stage in stages.values():
            shutil.rmtree(stage, ignore_errors=True)


def _install(kind_dir: Path, stage: Path, scan_type: str, kind: str, manifest: dict[str, Any]) -> Imported:
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1))
    name = _free_name(kind_dir, str(manifest["version"]))
    final = kind_dir / name
    os.rename(stage, final)
    os.chmod(final, 0o755)  # scanners may run as another user than the importer
    link_tmp = kind_dir / f".current-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(name, link_tmp)
    os.replace(link_tmp, kind_dir / CURRENT)  # atomic: a reader sees the old or the new target
    _fsync_dir(kind_dir)
    pruned = prune(kind_dir)
    return Imported(scan_type, kind, str(manifest["version"]), final, int(manifest["size"]),
                    manifest["sha256"], manifest["summary"], pruned)


def prune(kind_dir: Path, keep: int = KEEP_VERSIONS) -> tuple[str, ...]:
    """Remove all but the ``keep`` newest versions; never the one ``current`` names."""
    current = os.readlink(kind_dir / CURRENT) if (kind_dir / CURRENT).is_symlink() else None
    versions = []
    for entry in kind_dir.iterdir():
        if entry.name.startswith(".staging-") and time.time() - entry.stat().st_mtime > 86400:
            shutil.rmtree(entry, ignore_errors=True)  # left by an import that was killed
        if entry.name.startswith(".") or entry.name == CURRENT or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            imported = float(json.loads((entry / MANIFEST).read_text())["importedAt"])
        except (OSError, ValueError, KeyError, TypeError):
            imported = entry.stat().st_mtime
        versions.append((imported, entry.name))
    versions.sort(reverse=True)
    kept = {name for _, name in versions[:keep]} | ({current} if current else set())
    removed = tuple(name for _, name in versions if name not in kept)
    for name in removed:
        shutil.rmtree(kind_dir / name, ignore_errors=True)
    return removed


def require_engine_data(engine: Engine, options: dict[str, Any]) -> None:
    """The offline data this scan reads (trivy-db for ``vuln``, nuclei templates, a wordlist for brute
    force) must have been imported: fail fast with 503 rather than a scan that fails later."""
    missing = engine.missing_data(options)
    if missing:
        raise ApiError(503, "ENGINE_UNAVAILABLE", f"{engine.name} cannot run this scan without its offline "
                       "data: " + "; ".join(missing))


# -- the kinds ------------------------------------------------------------------------------------
def _stage_trivy_db(source: Path, staging: Path, progress: Progress | None) -> tuple[str, dict[str, Any], str]:
    """A tar(.gz) with ``db/trivy.db`` and ``db/metadata.json`` (a trivy cache's ``db`` folder), or
    the two at the top (the layer of the registry's trivy-db artifact)."""
    if not source.is_file():
        raise BundleError("trivy-db must be a tar or tar.gz file")
    wanted = {"db/trivy.db": "trivy.db", "trivy.db": "trivy.db",
              "db/metadata.json": "metadata.json", "metadata.json": "metadata.json"}
    out = staging / PAYLOAD["trivy-db"]
    out.mkdir()
    found: set[str] = set()
    with open(source, "rb") as fh:
        reader = _Reader(fh, progress)
        for member, stream in _tar_members(reader, source):
            name = wanted.get(member)
            if name is None or stream is None:
                continue
            if name in found:
                raise BundleError(f"{source.name}: {name} appears twice")
            found.add(name)
            _copy_stream(stream, out / name)
        reader.drain()
    for name in ("trivy.db", "metadata.json"):
        if name not in found:
            raise BundleError(f"{source.name} has no db/{name}: not a trivy-db bundle "
                               "(a tar of a trivy cache's db/ folder)")
    with open(out / "trivy.db", "rb") as db:
        head = db.read(24)
    if len(head) < 24 or int.from_bytes(head[16:20], "little") != BOLT_MAGIC:
        raise BundleError("db/trivy.db is not a BoltDB file")
    try:
        meta = json.loads((out / "metadata.json").read_text())
    except (ValueError, UnicodeDecodeError):
        raise BundleError("db/metadata.json is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("Version"), int) or "UpdatedAt" not in meta:
        raise BundleError("db/metadata.json lacks Version or UpdatedAt")
    if meta["Version"] != 2:
        raise BundleError(f"trivy-db schema {meta['Version']}; this trivy reads schema 2")
    summary = {k: meta.get(k) for k in ("Version", "UpdatedAt", "NextUpdate", "DownloadedAt")}
    updated = re.sub(r"[^0-9TZ]", "", str(meta["UpdatedAt"]).split(".")[0])[:15]
    return reader.hash.hexdigest(), summary, f"v{meta['Version']}-{updated}Z" if updated else ""


def _stage_templates(source: Path, staging: Path, progress: Progress | None) -> tuple[str | None, dict[str, Any], str]:
    """A directory or a tar(.gz) of nuclei templates: YAML files with a top-level ``id:`` and ``info:``."""
    out = staging / PAYLOAD["nuclei-templates"]
    out.mkdir()
    digest = None
    if source.is_dir():
        for rel, path in _walk(source):
            with open(path, "rb") as fh:
                _copy_stream(_Reader(fh, progress), _safe_dest(out, rel))
    else:
        with open(source, "rb") as fh:
            reader = _Reader(fh, progress)
            for member, stream in _tar_members(reader, source):
                dest = _safe_dest(out, member)
                if stream is None:
                    dest.mkdir(parents=True, exist_ok=True)
                else:
                    _copy_stream(stream, dest)
            reader.drain()
            digest = reader.hash.hexdigest()
    ids: dict[str, str] = {}
    tags: set[str] = set()
    for rel, path in _walk(out):
        parts = PurePosixPath(rel).parts
        if not rel.endswith((".yaml", ".yml")) or any(p.startswith(".") or p in _NOT_TEMPLATE_DIRS
                                                       for p in parts[:-1]):
            continue
        text = path.read_bytes()
        match = _TEMPLATE_ID.search(text)
        if match is None or _TEMPLATE_INFO.search(text) is None:
            raise BundleError(f"{rel} is not a nuclei template (no top-level id: and info:)")
        template_id = match.group(1).decode()
        if template_id in ids:
            raise BundleError(f"template id {template_id!r} is in both {ids[template_id]} and {rel}")
        ids[template_id] = rel
        for tag_line in _TEMPLATE_TAGS.findall(text):
            tags.update(t.strip().lower() for t in tag_line.decode().split(",") if t.strip())
    if not ids:
        raise BundleError(f"{source.name} holds no nuclei template (*.yaml with id: and info:)")
    return digest, {"templates": len(ids), "ids": sorted(ids), "tags": sorted(tags)}, ""


def _stage_wordlist(source: Path, staging: Path, progress: Progress | None) -> tuple[str, dict[str, Any], str]:
    """Text, one DNS label per line (``www``, ``mail``); blank lines are skipped, duplicates dropped."""
    if not source.is_file():
        raise BundleError("a wordlist is a text file")
    words: dict[str, None] = {}
    with open(source, "rb") as fh:
        reader = _Reader(fh, progress)
        data = b"".join(iter(lambda: reader.read(_CHUNK), b""))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("the wordlist is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), 1):
        word = line.strip().lower()
        if not word:
            continue
        if not _LABEL.fullmatch(word):
            raise BundleError(f"line {number}: {line.strip()[:80]!r} is not a DNS label")
        words[word] = None
        if len(words) > MAX_WORDS:
            raise BundleError(f"more than {MAX_WORDS} words")
    if not words:
        raise BundleError("the wordlist has no words")
    (staging / PAYLOAD["wordlist"]).write_text("\n".join(words) + "\n")
    return reader.hash.hexdigest(), {"words": len(words)}, ""


_STAGERS: dict[str, Callable[[Path, Path, Progress | None], tuple[Any, dict[str, Any], str]]] = {
    "trivy-db": _stage_trivy_db, "nuclei-templates": _stage_templates, "wordlist": _stage_wordlist,
}


# -- helpers --------------------------------------------------------------------------------------
def _tar_members(reader: _Reader, source: Path) -> Iterator[tuple[str, IO[bytes] | None]]:
    """(normalized name, file stream or None for a directory) for each member, streamed; a member
    that is anything else, or whose name leaves the bundle, fails the import."""
    total = files = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                name = _member_name(member.name)
                if member.isdir():
                    if name:
                        yield name, None
                    continue
                if not member.isreg():
                    raise BundleError(f"{member.name}: only regular files and directories are allowed "
                                       "(no links or devices)")
                total += member.size
                files += 1
                if total > MAX_TOTAL_BYTES or files > MAX_FILES:
                    raise BundleError(f"more than {MAX_TOTAL_BYTES >> 30} GiB or {MAX_FILES} files")
                stream = tar.extractfile(member)
                if stream is not None:
                    yield name, stream
    except tarfile.TarError as exc:
        raise BundleError(f"{source.name} is not a readable tar archive: {exc}") from None


def _member_name(raw: str) -> str:
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts or "\\" in raw or "\x00" in raw:
        raise BundleError(f"{raw!r}: absolute or parent-relative names are not allowed")
    return "/".join(p for p in path.parts if p != ".")


def _safe_dest(root: Path, rel: str) -> Path:
    dest = root.joinpath(*PurePosixPath(_member_name(rel)).parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under ``root`` (relative POSIX name, path); a symlink fails the import."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise BundleError(f"{path.relative_to(root)}: symlinks are not allowed in a bundle")
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_file():
                raise BundleError(f"{path.relative_to(root)}: only regular files are allowed")
            count += 1
            if count > MAX_FILES:
                raise BundleError(f"more than {MAX_FILES} files")
            yield path.relative_to(root).as_posix(), path


def _copy_stream(stream: IO[bytes] | _Reader, dest: Path) -> None:
    try:
        out = open(dest, "xb")  # noqa: SIM115 (closed below; "x": a name twice in a tar is refused)
    except (FileExistsError, IsADirectoryError):
        raise BundleError(f"{dest.name} appears twice in the bundle") from None
    with out:
        while chunk := stream.read(_CHUNK):
            out.write(chunk)


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _free_name(kind_dir: Path, version: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._+-]", "-", version).strip(".-") or _timestamp()
    name, n = base, 1
    while (kind_dir / name).exists() or name == CURRENT:
        n += 1
        name = f"{base}.{n}"
    return name


def _timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
