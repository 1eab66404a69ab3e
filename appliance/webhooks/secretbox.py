"""Webhook and callback secrets: generated with :mod:`secrets`, stored AES-256-GCM encrypted with a
key kept in the data dir (``webhook-secrets.key``, mode 0600), so a copy of the database alone
reveals no secret. The row id is the associated data: an encrypted secret cannot be moved to
another webhook or tenant."""
from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_NAME = "webhook-secrets.key"
SECRET_PREFIX = "whsec_"
_VERSION = "v1:"


def new_secret() -> str:
    """``whsec_`` + 64 hex characters (256 bits)."""
    return SECRET_PREFIX + secrets.token_hex(32)


def ensure_key(data_dir: Path) -> Path:
    """Create the key file if it is missing (``init``, or the first start of an older data dir).
    Written to a temporary file and hard-linked into place, so a concurrent reader never sees half
    a key and two processes racing keep the same one."""
    path = data_dir / KEY_NAME
    if path.exists():
        return path
    tmp = data_dir / f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, AESGCM.generate_key(bit_length=256))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"{KEY_NAME} must hold 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def open(cls, data_dir: Path) -> SecretBox:
        return cls(ensure_key(data_dir).read_bytes())

    def seal(self, secret: str, owner: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), owner.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def unseal(self, blob: str, owner: str) -> str:
        if not blob.startswith(_VERSION):
            raise ValueError("unknown secret encoding")
        raw = base64.b64decode(blob[len(_VERSION):])
        return self._aead.decrypt(raw[:12], raw[12:], owner.encode()).decode()
