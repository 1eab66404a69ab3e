"""Authentication (§1, §3, §8): the key from ``X-API-Key``, looked up by hash in a memory cache,
then status, IP allowlist, rate limits. Every failure is an :class:`ApiError` with the contract code."""
from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from starlette.requests import Request

from appliance import apikeys
from appliance.api.middleware import PRINCIPAL, RATE_HEADERS
from appliance.api.ratelimit import RateLimiter
from appliance.apikeys import KeyGrant
from appliance.credentials import hash_key, looks_like_key
from appliance.errors import ApiError
from appliance.store import Reader
from appliance.store.ops import Op, rows_op

_STATUS_ERRORS = {
    "expired": ("KEY_EXPIRED", "API key has expired"),
    "revoked": ("KEY_REVOKED", "API key has been revoked"),
    "suspended": ("KEY_SUSPENDED", "API key is suspended"),
}


@lru_cache(maxsize=4096)
def _in_networks(ip: str, networks: tuple[str, ...]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr.version == n.version and addr in n for n in map(ipaddress.ip_network, networks))


def client_ip(scope: Mapping[str, Any], trusted_proxies: tuple[str, ...]) -> str:
    """The socket's peer, or the nearest untrusted hop of X-Forwarded-For when the peer is a
    configured proxy; a client cannot forge its address through a proxy we do not trust."""
    peer = (scope.get("client") or ("0.0.0.0", 0))[0]
    if not trusted_proxies or not _safe_in(peer, trusted_proxies):
        return peer
    forwarded = dict(scope["headers"]).get(b"x-forwarded-for", b"").decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _safe_in(hop, trusted_proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _api_key(scope: Mapping[str, Any]) -> str | None:
    """The first X-API-Key header, as Starlette's ``request.headers.get`` finds it, without building
    a Headers object per request."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return str(value.decode("latin-1"))
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _safe_in(ip: str, networks: tuple[str, ...]) -> bool:
    return _is_ip(ip) and _in_networks(ip, networks)


class Authenticator:
    def __init__(self, reader: Reader, limiter: RateLimiter, trusted_proxies: Iterable[str],
                 failed_per_minute: int) -> None:
        self._reader = reader
        self._limiter = limiter
        self._proxies = tuple(trusted_proxies)
        self._failed_limit = {"minute": failed_per_minute}
        # key hash -> (grant, its rate-limit subject, its limits): built once per key, not per request
        self._cache: dict[str, tuple[KeyGrant, str, dict[str, int]]] = {}
        self._last_used: dict[str, tuple[float, str]] = {}
        self.on_lockout: Callable[[str], None] | None = None  # an address just reached the failed-auth limit

    @property
    def proxies(self) -> tuple[str, ...]:
        return self._proxies

    @property
    def failed_limit(self) -> dict[str, int]:
        """Failed authentications allowed per source IP and window (worker tokens share it)."""
        return self._failed_limit

    def invalidate(self) -> None:
        """Forget every cached key: a key changed somewhere (API, CLI process)."""
        self._cache.clear()

    def authenticate(self, request: Request, scope_needed: str | None) -> KeyGrant:
        scope = request.scope
        ip = client_ip(scope, self._proxies)
        scope["cix.client_ip"] = ip
        ip_subject = f"ip:{ip}"
        retry = self._limiter.blocked(ip_subject, self._failed_limit)
        if retry:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "too many failed authentications from this address",
                           headers={"Retry-After": str(retry)})
        raw = _api_key(scope)
        if not raw:
            raise ApiError(401, "MISSING_API_KEY", "X-API-Key header is required")
        cached = self._lookup(raw) if looks_like_key(raw) else None
        if cached is None:
            self._limiter.hit(ip_subject, self._failed_limit)
            if self.on_lockout is not None and self._limiter.blocked(ip_subject, self._failed_limit):
                self.on_lockout(ip)  # once per window: the next request is refused before reaching here
            raise ApiError(401, "INVALID_API_KEY", "invalid API key")
        grant, subject, limits = cached
        now = time.time()
        status = apikeys.effective_status(grant, now)
        if status in _STATUS_ERRORS:
            code, message = _STATUS_ERRORS[status]
            raise ApiError(401, code, message)
        if grant.allowed_ips is not None and not _safe_in(ip, grant.allowed_ips):
            raise ApiError(403, "IP_NOT_ALLOWED", f"requests from {ip} are not allowed for this key")
        decision = self._limiter.hit(subject, limits, now)
        scope[RATE_HEADERS] = decision.headers
        scope[PRINCIPAL] = grant
        self._last_used[grant.id] = (now, ip)
        if not decision.allowed:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "rate limit exceeded",
                           headers={"Retry-After": str(decision.retry_after)})
        if scope_needed is not None and scope_needed not in grant.scopes:
            raise ApiError(403, "INSUFFICIENT_SCOPE", f"this API key lacks the '{scope_needed}' scope")
        return grant

    def _lookup(self, raw: str) -> tuple[KeyGrant, str, dict[str, int]] | None:
        digest = hash_key(raw)
        cached = self._cache.get(digest)
        if cached is None:
            # Unknown keys are not cached: guesses would fill memory, and they are rate-limited.
            row = self._reader.one("SELECT * FROM api_keys WHERE key_hash = ?", (digest,))
            if row is None:
                return None
            grant = KeyGrant.from_row(row)
            cached = self._cache[digest] = (grant, f"key:{grant.id}", {
                "minute": grant.rate_minute, "hour": grant.rate_hour, "day": grant.rate_day})
        return cached

    def drain(self) -> list[Op]:
        """lastUsedAt/lastUsedIp since the last call, coalesced per key."""
        if not self._last_used:
            return []
        rows = [(ts, ip, key_id) for key_id, (ts, ip) in self._last_used.items()]
        self._last_used.clear()
        return [rows_op("UPDATE api_keys SET last_used_at = ?, last_used_ip = ? WHERE id = ?",
                        "UPDATE api_keys SET last_used_at = j.value ->> 0, last_used_ip = j.value ->> 1"
                        " FROM json_each(?) AS j WHERE api_keys.id = j.value ->> 2", rows)]
