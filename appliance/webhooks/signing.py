"""The contract's delivery headers (§6) and signature:
``X-CertIX-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``.

While a rotated secret is in its grace period, both signatures are sent, newest first:
``sha256=<new>,sha256=<old>``; a receiver accepts the request when any of them verifies.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from appliance import __version__

MAX_AGE = 300  # seconds; what receivers are told to accept


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def headers(event: str, delivery_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"cix-appliance/{__version__}",
        "X-CertIX-Event": event,
        "X-CertIX-Delivery": delivery_id,
        "X-CertIX-Timestamp": str(timestamp),
        "X-CertIX-Signature": ",".join(f"sha256={signature(s, timestamp, body)}" for s in secrets),
    }


def verify(secret: str, header: str, timestamp: str, body: bytes, now: float, max_age: int = MAX_AGE) -> bool:
    """What a receiver does (docs/webhooks.md has the standalone version)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > max_age:
        return False
    expected = signature(secret, int(timestamp), body)
    return any(hmac.compare_digest(part.strip().removeprefix("sha256="), expected)
               for part in header.split(",") if part.strip().startswith("sha256="))
