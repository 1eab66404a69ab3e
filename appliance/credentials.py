"""API key material and scopes: ``cix_sk_`` + 40 alphanumerics, stored only as SHA-256."""
from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_PREFIX = "cix_sk_"
KEY_RE = re.compile(r"^cix_sk_[A-Za-z0-9]{40}$")
_ALPHABET = string.ascii_letters + string.digits

SCOPES = (
    "scans:create", "scans:read", "scans:list", "scans:cancel", "results:read",
    "templates:create", "templates:read", "templates:update", "templates:delete",
    "webhooks:create", "webhooks:read", "webhooks:update", "webhooks:delete",
    "usage:read", "engines:read", "audit:read", "api-keys:read", "api-keys:write",
)
# Limits of the contract (§8): name -> (minimum, maximum, default).
RATE_LIMITS = {
    "rateLimitPerMinute": (1, 1_000, 60),
    "rateLimitPerHour": (1, 50_000, 1_000),
    "rateLimitPerDay": (1, 500_000, 10_000),
}


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def hash_key(raw: str) -> str:
    # hashlib, not cryptography's Hash: the same SHA-256 without an object per call (every request).
    return hashlib.sha256(raw.encode()).hexdigest()


def key_prefix(raw: str) -> str:
    """The first 12 characters, shown in listings so an operator can tell keys apart."""
    return raw[:12]


def looks_like_key(raw: str) -> bool:
    return bool(KEY_RE.match(raw))
