"""Artifact targets (trivy's ``image``, ``filesystem`` and ``repository``) and the allowlist entries
that authorize them: ``path:/srv/builds`` (a directory and everything under it) and
``registry:registry.example.com`` (images pulled from that registry).

A path is checked where it will be read: resolved with ``realpath`` (every symlink followed) and then
required to lie inside an allowed directory, itself resolved the same way. ``..`` is refused outright,
so the text a client sends cannot even name a parent.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.targets import PolicyEntry, Target

ARTIFACT_TYPES = ("image", "filesystem", "repository")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# A container image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
_REGISTRY = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d{1,5})?)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"(?:{_REGISTRY}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                       r"(?:@sha256:[a-f0-9]{64})?")
_REGISTRY_RE = re.compile(_REGISTRY)
_PATH_MAX = 1024


class ArtifactError(ValueError):
    pass


def image_registry(reference: str) -> str:
    """The registry an image reference pulls from (Docker's rule: the first component is a registry
    when it has a dot or a port, or is ``localhost``; otherwise Docker Hub)."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_path(text: str, what: str) -> str:
    """An absolute, normalized path without ``..``; returned as given."""
    if not text.startswith("/"):
        raise ArtifactError(f"{what} must be an absolute path")
    if len(text) > _PATH_MAX:
        raise ArtifactError(f"{what} is longer than {_PATH_MAX} characters")
    parts = text.split("/")
    if "//" in text:
        raise ArtifactError(f"{what} must not contain '//'")
    if ".." in parts:
        raise ArtifactError(f"{what} must not contain '..'")
    if os.path.normpath(text) != text.rstrip("/") and text != "/":
        raise ArtifactError(f"{what} must be normalized (no '.', '//' or trailing '/')")
    return text


def parse_artifact(text: str, kind: str) -> Target:
    from appliance.targets import Target, TargetError

    try:
        if kind == "image" and not text.startswith("/"):
            if not _IMAGE_RE.fullmatch(text):
                raise ArtifactError(f"{text!r} is not an image reference (registry/name:tag) or an absolute "
                                    "path to an image tarball")
            return Target(text, kind, registry=image_registry(text))
        path = check_path(text, "an image tarball" if kind == "image" else f"a {kind} target")
        if kind == "image" and not path.endswith(TARBALL_SUFFIXES):
            raise ArtifactError(f"an image tarball must end in {', '.join(TARBALL_SUFFIXES)}")
        return Target(path, kind, path=path)
    except ArtifactError as exc:
        raise TargetError(str(exc)) from None


def parse_entry(text: str) -> PolicyEntry | None:
    """``path:/dir`` or ``registry:host[:port]``; None when ``text`` is neither kind."""
    from appliance.targets import PolicyEntry

    prefix, sep, rest = text.partition(":")
    if not sep or prefix not in ("path", "registry"):
        return None
    if prefix == "path":
        try:
            path = check_path(rest, "a path entry")
        except ArtifactError as exc:
            raise ValueError(str(exc)) from None
        path = path.rstrip("/") or "/"
        return PolicyEntry(f"path:{path}", path=path)
    registry = rest.lower()
    if not _REGISTRY_RE.fullmatch(registry):
        raise ValueError(f"{text!r}: registry entries are registry:host or registry:host:port")
    return PolicyEntry(f"registry:{registry}", registry=registry)


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def vet_artifact(target: Target, allow: tuple[PolicyEntry, ...], deny: tuple[PolicyEntry, ...]) -> str | None:
    """None when the artifact may be scanned, else why not."""
    if target.registry is not None:
        if any(e.registry == target.registry for e in deny):
            return f"registry {target.registry} is on the appliance's denylist"
        if not any(e.registry == target.registry for e in allow):
            return f"registry {target.registry} is not on this tenant's allowlist (registry:{target.registry})"
        return None
    real = os.path.realpath(target.path or target.value)
    for entry in deny:
        if entry.path is not None and inside(real, os.path.realpath(entry.path)):
            return f"{target.value} is under {entry.path}, on the appliance's denylist"
    if not any(e.path is not None and inside(real, os.path.realpath(e.path)) for e in allow):
        escaped = " (it resolves to " + real + ")" if real != target.value else ""
        return f"{target.value} is not inside a directory on this tenant's allowlist{escaped}"
    return None
