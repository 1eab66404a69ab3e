"""The appliance's signing keys: a hybrid pair, Ed25519 and ML-DSA-65 (FIPS 204), that sign reports,
detached signatures and audit checkpoints. A signature counts only when both algorithms verify, so a
break of either one alone forges nothing.

Layout of ``DATA_DIR/signing/`` (folder 0700, files 0600; never in the database, so a copy of the
database, or a backup of it, signs nothing):

- ``keys.json``: every public key ever used, current and retired, with its key id, algorithm, PEM
  and created/retired times: a report signed before a rotation still verifies.
- ``<keyId>.pem``: the private key (PKCS#8) of each current key. Rotation writes the new pair,
  then marks the old one retired in ``keys.json``, then deletes the old private keys.

A key id is the first 16 hex digits of SHA-256 over the raw public key bytes.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from appliance import clock

DIR_NAME = "signing"
REGISTRY = "keys.json"
ED25519 = "Ed25519"
MLDSA65 = "ML-DSA-65"
ALGORITHMS = (ED25519, MLDSA65)

PublicKey = ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey
PrivateKey = ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey


class SigningKeyError(Exception):
    """The key store is missing, unreadable or inconsistent; the message says which file."""


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ED25519
    if isinstance(key, (mldsa.MLDSA65PublicKey, mldsa.MLDSA65PrivateKey)):
        return MLDSA65
    raise TypeError(f"{type(key).__name__} is not a signing key of this appliance")


def key_id(public: PublicKey) -> str:
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def public_pem(public: PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(text: str | bytes) -> list[PublicKey]:
    """Every Ed25519 or ML-DSA-65 public key in ``text`` (one or more PEM blocks); ValueError if
    a block is not one."""
    data = text.encode() if isinstance(text, str) else text
    begin, end = b"-----BEGIN PUBLIC KEY-----", b"-----END PUBLIC KEY-----"
    keys: list[PublicKey] = []
    start = data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            raise ValueError("a PEM block has no END line")
        key = serialization.load_pem_public_key(data[start:stop + len(end)])
        if not isinstance(key, (ed25519.Ed25519PublicKey, mldsa.MLDSA65PublicKey)):
            raise ValueError(f"{type(key).__name__} is neither an Ed25519 nor an ML-DSA-65 public key")
        keys.append(key)
        start = data.find(begin, stop)
    if not keys:
        raise ValueError("no PEM public key found")
    return keys


def sign_with(private: PrivateKey, message: bytes) -> str:
    return base64.b64encode(private.sign(message)).decode()


def verify_with(public: PublicKey, signature_b64: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public.verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    algorithm: str
    pem: str
    created_at: float
    retired_at: float | None

    def key(self) -> PublicKey:
        return load_public_pem(self.pem)[0]

    def json(self) -> dict[str, Any]:
        return {"keyId": self.key_id, "algorithm": self.algorithm, "createdAt": clock.iso(self.created_at),
                "retiredAt": clock.iso(self.retired_at), "status": "retired" if self.retired_at else "current",
                "publicKey": self.pem}

    @classmethod
    def from_stored(cls, item: dict[str, Any]) -> PublicKeyInfo:
        return cls(item["keyId"], item["algorithm"], item["publicKey"], float(item["createdAt"]),
                   None if item.get("retiredAt") is None else float(item["retiredAt"]))

    def stored(self) -> dict[str, Any]:
        return {"keyId": self.key_id, "algorithm": self.algorithm, "publicKey": self.pem,
                "createdAt": self.created_at, "retiredAt": self.retired_at}


class KeyRing:
    """The key store of one data dir. The server reads ``keys.json`` again whenever it changed on
    disk, so a rotation from the CLI signs the very next report with the new pair."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / DIR_NAME
        self._registry = self.directory / REGISTRY
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[PublicKeyInfo] = []
        self._private: dict[str, PrivateKey] = {}

    # -- reading -----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self._registry.exists()

    def public_keys(self) -> list[PublicKeyInfo]:
        """Every key, current and retired, oldest first."""
        self._refresh()
        return list(self._keys)

    def current(self) -> list[PublicKeyInfo]:
        return [k for k in self.public_keys() if k.retired_at is None]

    def sign(self, message: bytes) -> list[dict[str, str]]:
        """One signature per algorithm with the current pair: ``[{algorithm, keyId, value}]``."""
        self._refresh()
        signatures = []
        for info in self._keys:
            if info.retired_at is None:
                signatures.append({"algorithm": info.algorithm, "keyId": info.key_id,
                                   "value": sign_with(self._private[info.key_id], message)})
        if sorted(s["algorithm"] for s in signatures) != sorted(ALGORITHMS):
            raise SigningKeyError(f"{self._registry}: the current keys are not one {ED25519} and one {MLDSA65} key")
        return signatures

    def _refresh(self) -> None:
        try:
            st = self._registry.stat()
        except FileNotFoundError:
            raise SigningKeyError(f"{self._registry} is missing: run 'cix-appliance signing-key show' "
                            "(or start the server) to create the signing keys") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            stored = json.loads(self._registry.read_text())
            keys = [PublicKeyInfo.from_stored(item) for item in stored["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SigningKeyError(f"{self._registry}: unreadable ({exc})") from None
        private: dict[str, PrivateKey] = {}
        for info in keys:
            if info.retired_at is None:
                private[info.key_id] = self._load_private(info)
        self._keys, self._private, self._stamp = keys, private, stamp

    def _load_private(self, info: PublicKeyInfo) -> PrivateKey:
        path = self.directory / f"{info.key_id}.pem"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"{path}: cannot load the private {info.algorithm} key {info.key_id} "
                                  f"({exc})") from None
        if not isinstance(key, (ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey)) \
                or key_id(key.public_key()) != info.key_id or algorithm_of(key) != info.algorithm:
            raise SigningKeyError(f"{path} does not hold the private {info.algorithm} key {info.key_id}")
        return key

    # -- writing -----------------------------------------------------------------------------------
    def ensure(self) -> bool:
        """Create the first pair if there is none (``init``, or the first start of an older data
        dir); returns whether it did."""
        with self._locked():
            if self._registry.exists():
                return False
            self._write([], self._new_pair())
            return True

    def rotate(self) -> tuple[list[PublicKeyInfo], list[PublicKeyInfo]]:
        """Retire the current pair (its public keys stay listed) and make a new one; returns (retired,
        new). The retired private keys are deleted: nothing signs with them again."""
        with self._locked():
            if not self._registry.exists():
                raise SigningKeyError(f"{self._registry} is missing: there is no key to rotate")
            self._stamp = None
            self._refresh()
            now = clock.now()
            retired = [PublicKeyInfo(k.key_id, k.algorithm, k.pem, k.created_at, now)
                       for k in self._keys if k.retired_at is None]
            kept = [k for k in self._keys if k.retired_at is not None] + retired
            new = self._write(kept, self._new_pair())
            for info in retired:
                (self.directory / f"{info.key_id}.pem").unlink(missing_ok=True)
            return retired, new

    def _new_pair(self) -> list[tuple[PrivateKey, float]]:
        now = clock.now()
        return [(ed25519.Ed25519PrivateKey.generate(), now), (mldsa.MLDSA65PrivateKey.generate(), now)]

    def _write(self, kept: list[PublicKeyInfo], pair: list[tuple[PrivateKey, float]]) -> list[PublicKeyInfo]:
        new: list[PublicKeyInfo] = []
        for private, created in pair:
            public = private.public_key()
            info = PublicKeyInfo(key_id(public), algorithm_of(private), public_pem(public), created, None)
            _write_file(self.directory / f"{info.key_id}.pem", private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            new.append(info)
        # The registry is replaced last: until then the old pair stays current and complete.
        _write_file(self._registry, json.dumps(
            {"version": 1, "keys": [k.stored() for k in [*kept, *new]]}, indent=2).encode())
        self._stamp = None
        return new

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (the server's first start and a CLI command)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        fd = os.open(self.directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Atomically, mode 0600 whatever the umask, durable before it replaces the old file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
