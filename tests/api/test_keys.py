"""In-process API tests of authentication, scopes, IP allowlists, rate limits and /api-keys."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import make_key, run_cli_async, serve_in_process
from tests.helpers import await_for

pytestmark = pytest.mark.anyio


def code(response) -> str:
    return response.json()["code"]


async def test_health_needs_no_key(client):
    response = await client.get("/health", headers={"X-API-Key": ""})
    assert response.json() == {"status": "ok"}


async def test_missing_and_invalid_keys(client):
    assert code(await client.get("/api/v1/api-keys", headers={"X-API-Key": ""})) == "MISSING_API_KEY"
    bad = await client.get("/api/v1/api-keys", headers={"X-API-Key": "cix_sk_" + "a" * 40})
    assert bad.status_code == 401 and code(bad) == "INVALID_API_KEY"
    assert code(await client.get("/api/v1/api-keys", headers={"X-API-Key": "nonsense"})) == "INVALID_API_KEY"


async def test_key_in_query_string_is_not_accepted(client, admin_key):
    response = await client.get(f"/api/v1/api-keys?apiKey={admin_key}", headers={"X-API-Key": ""})
    assert response.status_code == 401 and code(response) == "MISSING_API_KEY"


async def test_envelope_request_id_and_both_prefixes(client):
    for prefix in ("/api/v1", "/scan-api/api/v1"):
        response = await client.get(f"{prefix}/api-keys", headers={"X-Request-Id": "abc-123"})
        body = response.json()
        assert response.status_code == 200 and body["success"] is True
        assert body["pagination"]["total"] == 1
        assert response.headers["x-request-id"] == "abc-123"
    assert (await client.get("/health")).headers["x-request-id"]


async def test_unknown_route_method_and_oversize_body(client):
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and code(missing) == "NOT_FOUND"
    wrong = await client.put("/api/v1/api-keys")
    assert wrong.status_code == 405 and code(wrong) == "METHOD_NOT_ALLOWED"
    big = await client.post("/api/v1/api-keys", content=b"{" + b" " * (1 << 20) + b"}",
                            headers={"content-type": "application/json"})
    assert big.status_code == 413 and code(big) == "PAYLOAD_TOO_LARGE"


async def test_chunked_body_over_the_cap_is_413(client):
    async def chunks():
        for _ in range(20):
            yield b" " * 65536

    response = await client.post("/api/v1/api-keys", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and code(response) == "PAYLOAD_TOO_LARGE"


async def test_bad_bodies_name_the_field(client):
    cases = [
        (b"{not json", "INVALID_JSON", None),
        (b'{"name": 5}', "VALIDATION_ERROR", "name"),
        (b'{"name": "x", "bogus": 1}', "VALIDATION_ERROR", "bogus"),
        (b'{"name": "x", "scopes": ["scans:fly"]}', "VALIDATION_ERROR", "scopes[0]"),
        (b'{"name": "x", "allowedIpAddresses": ["192.0.2.0/33"]}', "VALIDATION_ERROR", "allowedIpAddresses[0]"),
        (b'{"name": "x", "rateLimitPerMinute": 0}', "VALIDATION_ERROR", "rateLimitPerMinute"),
        (b'{"name": "x", "rateLimitPerDay": 500001}', "VALIDATION_ERROR", "rateLimitPerDay"),
        (b'{"name": "x", "expiresInDays": true}', "VALIDATION_ERROR", "expiresInDays"),
        (b'[]', "VALIDATION_ERROR", "body"),
    ]
    for body, expected, field in cases:
        response = await client.post("/api/v1/api-keys", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        assert code(response) == expected, body
        if field:
            assert response.json()["details"][0]["field"] == field


async def test_create_get_rotate_suspend_revoke(client):
    created = await client.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["scans:read"],
                                                           "expiresInDays": 30})
    assert created.status_code == 201
    key = created.json()["data"]
    assert key["key"].startswith("cix_sk_") and key["prefix"] == key["key"][:12]
    assert key["status"] == "active" and key["expiresAt"].endswith("Z")
    headers = {"X-API-Key": key["key"]}
    # the new key lacks api-keys:read: 403 naming the scope
    denied = await client.get("/api/v1/api-keys", headers=headers)
    assert denied.status_code == 403 and "api-keys:read" in denied.json()["error"]
    got = await client.get(f"/api/v1/api-keys/{key['id']}")
    assert got.json()["data"]["name"] == "ci" and "key" not in got.json()["data"]

    rotated = await client.post(f"/api/v1/api-keys/{key['id']}/rotate", json={"gracePeriodHours": 0})
    assert rotated.status_code == 201
    new = rotated.json()["data"]
    assert new["rotatedFromId"] == key["id"] and new["scopes"] == ["scans:read"]
    assert code(await client.get("/api/v1/scans", headers=headers)) == "KEY_REVOKED"

    new_headers = {"X-API-Key": new["key"]}
    assert (await client.post(f"/api/v1/api-keys/{new['id']}/suspend")).json()["data"]["status"] == "suspended"
    assert code(await client.get("/api/v1/scans", headers=new_headers)) == "KEY_SUSPENDED"
    assert (await client.post(f"/api/v1/api-keys/{new['id']}/reactivate")).status_code == 200
    assert (await client.get("/api/v1/scans/00000000-0000-0000-0000-000000000000",
                             headers=new_headers)).status_code == 404
    assert (await client.delete(f"/api/v1/api-keys/{new['id']}")).json()["data"]["status"] == "revoked"
    assert code(await client.get("/api/v1/scans", headers=new_headers)) == "KEY_REVOKED"
    again = await client.delete(f"/api/v1/api-keys/{new['id']}")
    assert again.status_code == 409
    dead = await client.post(f"/api/v1/api-keys/{new['id']}/rotate", json={})
    assert dead.status_code == 409 and code(dead) == "CONFLICT" and "revoked" in dead.json()["error"]


async def test_rotation_grace_keeps_old_key_working(client):
    key = (await client.post("/api/v1/api-keys", json={"name": "g", "scopes": ["engines:read"]})).json()["data"]
    rotated = (await client.post(f"/api/v1/api-keys/{key['id']}/rotate", json={})).json()["data"]
    old = await client.get(f"/api/v1/api-keys/{key['id']}")
    assert old.json()["data"]["graceExpiresAt"] is not None
    assert (await client.get("/api/v1/engines", headers={"X-API-Key": key["key"]})).status_code == 200
    assert (await client.get("/api/v1/engines", headers={"X-API-Key": rotated["key"]})).status_code == 200


async def test_a_key_cannot_grant_more_than_it_holds(client):
    limited = (await client.post("/api/v1/api-keys", json={
        "name": "lim", "scopes": ["api-keys:write", "scans:read"], "allowedScanTypes": ["nmap"],
        "allowedIpAddresses": ["127.0.0.0/8"]})).json()["data"]
    h = {"X-API-Key": limited["key"]}
    scope = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["audit:read"]}, headers=h)
    assert scope.status_code == 403 and code(scope) == "INSUFFICIENT_SCOPE" and "audit:read" in scope.json()["error"]
    types = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["scans:read"],
                                                        "allowedScanTypes": ["zap"]}, headers=h)
    assert code(types) == "SCAN_TYPE_NOT_ALLOWED"
    ips = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["scans:read"],
                                                      "allowedIpAddresses": ["198.51.100.0/24"]}, headers=h)
    assert code(ips) == "IP_NOT_ALLOWED"
    ok = await client.post("/api/v1/api-keys", json={"name": "x", "scopes": ["scans:read"]}, headers=h)
    assert ok.status_code == 201
    assert ok.json()["data"]["allowedIpAddresses"] == ["127.0.0.0/8"]  # inherited, never widened
    assert ok.json()["data"]["allowedScanTypes"] == ["nmap"]
    admin_id = next(k for k in (await client.get("/api/v1/api-keys")).json()["data"] if k["name"] == "admin")["id"]
    takeover = await client.post(f"/api/v1/api-keys/{admin_id}/suspend", headers=h)
    assert takeover.status_code == 403  # a weaker key cannot switch off a stronger one
    assert (await client.post(f"/api/v1/api-keys/{limited['id']}/suspend", headers=h)).status_code == 200


async def test_ip_allowlist_v4_and_v6(client):
    v6 = (await client.post("/api/v1/api-keys", json={"name": "v6", "scopes": ["engines:read"],
                                                      "allowedIpAddresses": ["2001:db8::/32"]})).json()["data"]
    denied = await client.get("/api/v1/engines", headers={"X-API-Key": v6["key"]})
    assert denied.status_code == 403 and code(denied) == "IP_NOT_ALLOWED"
    v4 = (await client.post("/api/v1/api-keys", json={"name": "v4", "scopes": ["engines:read"],
                                                      "allowedIpAddresses": ["127.0.0.1"]})).json()["data"]
    assert (await client.get("/api/v1/engines", headers={"X-API-Key": v4["key"]})).status_code == 200


async def test_other_tenant_gets_404(client, data_dir):
    await run_cli_async("tenants", "create", "other", "--data-dir", str(data_dir))
    other = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "api-keys:read")
    mine = (await client.get("/api/v1/api-keys")).json()["data"][0]["id"]

    async def answered():  # the server notices CLI changes within a second
        response = await client.get(f"/api/v1/api-keys/{mine}", headers={"X-API-Key": other["key"]})
        return response if response.status_code != 401 else None

    response = await await_for(answered, 5, what="the CLI-made key to be known")
    assert response.status_code == 404 and code(response) == "API_KEY_NOT_FOUND"


async def test_cli_revocation_reaches_running_server(client, data_dir):
    key = make_key(data_dir, "--name", "c", "--scope", "engines:read")
    h = {"X-API-Key": key["key"]}
    assert (await client.get("/api/v1/engines", headers=h)).status_code == 200
    await run_cli_async("keys", "revoke", key["id"], "--data-dir", str(data_dir))

    async def revoked():
        return (await client.get("/api/v1/engines", headers=h)).json().get("code") == "KEY_REVOKED"

    await await_for(revoked, 5, what="the CLI revocation to reach the server")


async def test_rate_limit_headers_429_and_persistence(data_dir, admin_key):
    key = make_key(data_dir, "--name", "r", "--scope", "engines:read", "--rate-minute", "3")
    h = {"X-API-Key": key["key"]}
    left = 60 - time.time() % 60
    if left < 25:  # both runs must fall in one minute window: a new window would start from zero
        await asyncio.sleep(left + 0.5)
    async with serve_in_process(data_dir) as c:
        first = await c.get("/api/v1/api-keys", headers=h)  # 403, still counted and headed
        assert first.status_code == 403
        assert first.headers["x-ratelimit-limit"] == "3" and first.headers["x-ratelimit-remaining"] == "2"
        assert int(first.headers["x-ratelimit-reset"]) % 60 == 0
        await c.get("/api/v1/engines", headers=h)
    async with serve_in_process(data_dir) as c:  # counters survived the restart
        third = await c.get("/api/v1/engines", headers=h)
        assert third.headers["x-ratelimit-remaining"] == "0"
        over = await c.get("/api/v1/engines", headers=h)
        assert over.status_code == 429 and code(over) == "RATE_LIMIT_EXCEEDED"
        assert 1 <= int(over.headers["retry-after"]) <= 60


async def test_failed_authentications_are_limited_per_ip(data_dir, admin_key):
    async with serve_in_process(data_dir, ratelimit__failed_auth_per_minute=3) as c:
        for _ in range(3):
            assert (await c.get("/api/v1/engines", headers={"X-API-Key": "cix_sk_" + "b" * 40})).status_code == 401
        blocked = await c.get("/api/v1/engines", headers={"X-API-Key": admin_key})
        assert blocked.status_code == 429 and "retry-after" in blocked.headers


async def test_bookkeeping_is_flushed(client, data_dir):
    await client.get("/api/v1/engines")
    services = client.app.state.services
    await await_for(lambda: services.reader.scalar(
        "SELECT count(*) FROM api_calls WHERE path = '/api/v1/engines'"), 5, what="the call log flush")
    key = (await client.get("/api/v1/api-keys")).json()["data"][0]
    assert key["lastUsedAt"] is not None and key["lastUsedIp"] == "127.0.0.1"
    actions = {r[0] for r in services.reader.all("SELECT action FROM audit_events")}
    assert {"tenant.created", "api_key.created"} <= actions


async def test_unhandled_error_is_a_500_envelope_without_trace(client, monkeypatch):
    from appliance.api import engines

    def boom(_scanner):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(engines, "engine_json", boom)
    response = await client.get("/api/v1/engines", headers={"X-Request-Id": "r-500"})
    assert response.status_code == 500
    assert response.json() == {"success": False, "error": "internal error", "code": "INTERNAL_ERROR"}
    assert response.headers["x-request-id"] == "r-500"
