import ipaddress

from appliance.api.auth import client_ip
from appliance.api.ratelimit import RateLimiter
from appliance.credentials import KEY_RE, generate_key, hash_key, key_prefix, looks_like_key
from appliance.store.db import connect, migrate
from appliance.store.ops import apply_sync


def test_key_format_and_hash():
    raw = generate_key()
    assert KEY_RE.match(raw) and len(raw) == 47 and looks_like_key(raw)
    assert hash_key(raw) == hash_key(raw) and len(hash_key(raw)) == 64 and raw not in hash_key(raw)
    assert key_prefix(raw) == raw[:12]
    assert generate_key() != raw
    assert not looks_like_key("cix_sk_" + "a" * 39) and not looks_like_key("cix_sk_" + "-" * 40)


def test_windows_count_and_reset():
    limiter = RateLimiter()
    limits = {"minute": 2, "hour": 100}
    first = limiter.hit("k", limits, now=120.0)
    assert first.allowed and first.headers["X-RateLimit-Remaining"] == "1"
    assert first.headers["X-RateLimit-Reset"] == "180"
    assert limiter.hit("k", limits, now=121.0).allowed
    blocked = limiter.hit("k", limits, now=150.0)
    assert not blocked.allowed and blocked.retry_after == 30
    assert limiter.hit("k", limits, now=180.0).allowed  # a new minute
    assert limiter.hit("other", limits, now=150.0).allowed  # per subject


def test_header_names_the_window_closest_to_exhaustion():
    limiter = RateLimiter()
    for second in range(5):
        decision = limiter.hit("k", {"minute": 60, "hour": 6}, now=float(second))
    assert decision.headers["X-RateLimit-Limit"] == "6"
    assert decision.headers["X-RateLimit-Remaining"] == "1"


def test_counters_are_drained_for_persistence_and_reloaded(tmp_path):
    limiter = RateLimiter()
    limiter.hit("k", {"day": 10}, now=100.0)
    conn = connect(tmp_path / "r.db")
    migrate(conn)
    apply_sync(conn, limiter.drain())
    limiter.hit("k", {"day": 10}, now=101.0)
    apply_sync(conn, limiter.drain())  # the stored counter is updated, not added again
    rows = [tuple(r) for r in conn.execute("SELECT subject, window, window_start, count FROM rate_counters")]
    assert rows == [("k", "day", 0, 2)] and limiter.drain() == []
    again = RateLimiter()
    again.load(rows)
    assert again.hit("k", {"day": 10}, now=200.0).headers["X-RateLimit-Remaining"] == "7"


def test_client_ip_trusts_only_configured_proxies():
    scope = {"client": ("198.51.100.5", 1), "headers": [(b"x-forwarded-for", b"203.0.113.7, 198.51.100.9")]}
    assert client_ip(scope, ()) == "198.51.100.5"
    assert client_ip(scope, ("198.51.100.0/24",)) == "203.0.113.7"
    scope = {"client": ("192.0.2.1", 1), "headers": [(b"x-forwarded-for", b"203.0.113.7")]}
    assert client_ip(scope, ("198.51.100.0/24",)) == "192.0.2.1"
    v6 = {"client": ("::1", 1), "headers": [(b"x-forwarded-for", b"2001:db8::1")]}
    assert ipaddress.ip_address(client_ip(v6, ("::1/128",))) == ipaddress.ip_address("2001:db8::1")
