"""Issue 10, request input: each test reproduces a finding as it was reported (in-process API)."""
from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import time
from typing import Any

import httpx
import pytest

from appliance import clock
from appliance.api.middleware import RequestMiddleware
from appliance.scanning import batches, lifecycle
from appliance.store.writer import Writer
from engines.base import Finding
from tests.conftest import serve_in_process

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


# -- item 1: a lone UTF-16 surrogate must be refused before anything is stored --------------------
SURROGATE_SCANS = [
    (rb'{"scanType":"nmap","target":"127.0.0.1","tags":["ok","\ud800"]}', "tags[1]"),
    (rb'{"scanType":"nmap","target":"127.0.0.1","name":"a\udfffb"}', "name"),
    (rb'{"scanType":"nmap","target":"127.0.0.\ud8001"}', "target"),
    (rb'{"scanType":"nmap","target":"127.0.0.1","assetId":"\udc00"}', "assetId"),
    (rb'{"scanType":"nmap","target":"127.0.0.1","callbackUrl":"https://h/\ud800"}', "callbackUrl"),
    (rb'{"scanType":"nmap","target":"127.0.0.1","options":{"ports":"\ud800"}}', "options.ports"),
    (rb'{"scanType":"nmap","target":"127.0.0.1","options":{"\ud800":1}}', "options"),
]


async def test_lone_surrogates_are_400_and_store_nothing(client):
    for body, field in SURROGATE_SCANS:
        response = await client.post("/api/v1/scans", content=body, headers=JSON)
        assert error(response) == (400, "INVALID_JSON"), (body, response.text)
        assert response.json()["details"][0]["field"] == field, body
    for body, field in [(rb'{"name":"k\ud800"}', "name"), (rb'{"name":"k","description":"\udbff"}', "description")]:
        response = await client.post("/api/v1/api-keys", content=body, headers=JSON)
        assert error(response) == (400, "INVALID_JSON") and response.json()["details"][0]["field"] == field
    listed = await client.get("/api/v1/scans")
    assert listed.status_code == 200 and listed.json()["pagination"]["total"] == 0
    assert (await client.get("/api/v1/scans?tag=ok")).status_code == 200
    services = client.app.state.services
    assert services.reader.scalar("SELECT count(*) FROM scans") == 0
    assert services.queue.pending_ids("", "nmap") == set()
    assert len((await client.get("/api/v1/api-keys")).json()["data"]) == 1


async def test_a_row_stored_before_the_fix_still_serializes(client):
    """Defence in depth: an old poisoned row is served \\u-escaped, never as a permanent 500."""
    services = client.app.state.services
    tenant = services.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
    now = clock.now()
    scan_id = clock.new_id()
    await services.writer.write(lifecycle.submit({
        "id": scan_id, "tenant_id": tenant, "scan_type": "nmap", "target": "127.0.0.1", "target_type": "ip",
        "status": "failed", "priority": "normal", "tags": json.dumps(["ok", "\ud800"]), "timeout": 60,
        "created_at": now, "queued_at": now}))
    one = await client.get(f"/api/v1/scans/{scan_id}")
    assert one.status_code == 200 and one.json()["data"]["tags"] == ["ok", "\ud800"]
    assert (await client.get("/api/v1/scans?tag=ok")).json()["pagination"]["total"] == 1


# -- item 9: deep nesting ------------------------------------------------------------------------
async def test_deeply_nested_json_is_invalid_json_not_500(client):
    for body in (b"[" * 100000, b'{"name": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                 b'{"name": "x", "description": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}"):
        response = await client.post("/api/v1/api-keys", content=body, headers=JSON)
        assert error(response) == (400, "INVALID_JSON"), body[:40]


def test_the_depth_limit_is_the_same_with_and_without_the_text_check():
    """Bodies orjson accepted get the depth-only walk; the others the full one: one limit for both."""
    from appliance.api.envelope import MAX_JSON_DEPTH, _check_depth, _check_tree
    from appliance.errors import ApiError

    def nested(containers: int) -> Any:
        """Lists and objects in turn, the outermost at depth 0."""
        value: Any = []
        for level in range(containers - 1):
            value = [value] if level % 2 else {"k": value}
        return value
    for check in (_check_depth, _check_tree):
        check(nested(MAX_JSON_DEPTH + 1))  # the innermost container at depth 32
        check({"a": [1, "x", {"b": None}]})
        with pytest.raises(ApiError, match="nested deeper"):
            check(nested(MAX_JSON_DEPTH + 2))
        with pytest.raises(ApiError, match="nested deeper"):  # the outer levels count
            check({"findings": [{"raw": nested(MAX_JSON_DEPTH - 1)}]})


# -- item 10: digits that are not ASCII decimals, and numbers int() refuses -----------------------
@pytest.mark.parametrize("query, field", [
    ("page=²", "page"), ("limit=" + "9" * 5000, "limit"), ("page=" + "9" * 5000, "page"),
    ("limit=٣", "limit"), ("page=-1", "page"), ("limit=1e3", "limit"),
])
async def test_bad_page_and_limit_are_400_naming_the_field(client, query, field):
    for path in ("/api/v1/scans", "/api/v1/api-keys"):
        response = await client.get(f"{path}?{query}")
        assert error(response) == (400, "VALIDATION_ERROR"), (path, query)
        assert response.json()["details"][0]["field"] == field


async def _raw_request(headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Drive the middleware directly: httpx recomputes content-length, a raw client need not."""
    answer: dict[str, object] = {}

    async def app(scope, receive, send):  # pragma: no cover - the middleware must answer first
        raise AssertionError("request reached the app")

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        answer.setdefault("status", message.get("status"))
        answer["body"] = message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/api/v1/api-keys", "headers": headers}
    await RequestMiddleware(app)(scope, receive, send)
    status, body = answer["status"], answer["body"]
    assert isinstance(status, int) and isinstance(body, bytes)
    return status, body


async def test_content_length_that_is_not_an_ascii_decimal():
    status, body = await _raw_request([(b"content-length", "²".encode())])
    assert status == 400 and json.loads(body)["code"] == "VALIDATION_ERROR"
    status, body = await _raw_request([(b"content-length", b"9" * 5000)])
    assert status == 413 and json.loads(body)["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_stalled_body_is_400_and_closes_the_connection():
    """The HTTP server bounds the headers; the body's idle deadline is the middleware's."""
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"scanType":', "more_body": True}]

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the body never ended, yet the app read it all")

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.Event().wait()  # the client stopped sending
        raise AssertionError("unreachable")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/scans", "headers": [(b"content-length", b"100")]}
    started = time.monotonic()
    await asyncio.wait_for(RequestMiddleware(app, body_timeout=0.2)(scope, receive, send), 5)
    assert time.monotonic() - started < 3  # the deadline's answer, not the test's own timeout
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["code"] == "INVALID_JSON"


# -- item 13: 500s keep the rate-limit headers; a full disk is 503, and /health says so -----------
async def test_500_to_an_authenticated_request_carries_rate_limit_headers(client, monkeypatch):
    from appliance.api import engines

    def boom(_scanner):
        raise RuntimeError("bug")

    monkeypatch.setattr(engines, "engine_json", boom)
    response = await client.get("/api/v1/engines")
    assert error(response) == (500, "INTERNAL_ERROR")
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(response.headers)


@pytest.mark.parametrize("failure", [sqlite3.OperationalError("database or disk is full"),
                                     OSError(errno.ENOSPC, "No space left on device")])
async def test_full_disk_is_503_with_retry_after_and_health_degraded(client, monkeypatch, failure):
    real = Writer._apply_one

    def full(conn, op, memo=None):
        raise failure

    assert (await client.get("/health")).json() == {"status": "ok"}
    monkeypatch.setattr(Writer, "_apply_one", staticmethod(full))
    for response in (await client.post("/api/v1/api-keys", json={"name": "k"}),
                     await client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1"})):
        assert error(response) == (503, "SERVICE_UNAVAILABLE"), response.text
        assert int(response.headers["retry-after"]) > 0 and "x-ratelimit-remaining" in response.headers
    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert "full" in health.json()["reason"] and int(health.headers["retry-after"]) > 0
    monkeypatch.setattr(Writer, "_apply_one", real)  # space freed: the next health check writes again
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_no_500_after_the_scan_was_committed(client, monkeypatch):
    services = client.app.state.services

    def enqueue(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(services.queue, "enqueue", enqueue)
    response = await client.post("/api/v1/scans", json={"scanType": "nmap", "target": "127.0.0.1"})
    assert response.status_code == 201, response.text  # stored: the reconciler enqueues it later
    assert services.reader.scalar("SELECT status FROM scans WHERE id = ?", (response.json()["data"]["id"],)) \
        == "queued"


# -- item 18: unknown query parameters, and the results filters users reach for ------------------
async def test_unknown_query_parameters_are_400_naming_them(client):
    for path, name in (("/api/v1/scans?bogus=1", "bogus"), ("/api/v1/api-keys?sort=name", "sort"),
                       ("/api/v1/scans?page=1&Status=queued", "Status")):
        response = await client.get(path)
        assert error(response) == (400, "VALIDATION_ERROR"), path
        assert response.json()["details"][0]["field"] == name


def _finding(rule: str, ip: str, port: int, cve: list[str]) -> Finding:
    return Finding(rule_id=rule, title=rule, host=ip, ip=ip, port=port, protocol="tcp", cve=cve)


async def test_results_filters(data_dir, admin_key):
    async with serve_in_process(data_dir) as c:
        c.headers["X-API-Key"] = admin_key
        services = c.app.state.services
        tenant = services.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
        now = clock.now()
        scan_id = clock.new_id()
        findings = [_finding("nmap.open-port", "127.0.0.1", 22, []),
                    _finding("nmap.open-port", "127.0.0.2", 80, []),
                    _finding("nmap.vuln", "127.0.0.2", 443, ["CVE-2014-0160"])]
        await services.writer.write(
            lifecycle.submit({"id": scan_id, "tenant_id": tenant, "scan_type": "nmap", "target": "127.0.0.0/24",
                              "target_type": "network", "status": "completed", "priority": "normal",
                              "timeout": 60, "created_at": now, "queued_at": now, "lease_id": "t"}),
            batches.findings_op(scan_id, "t", "nmap", findings, 0),
            lifecycle.recount(scan_id, "t"))
        base = f"/api/v1/scans/{scan_id}/results"

        async def ports(query: str) -> list[int]:
            response = await c.get(f"{base}?{query}")
            assert response.status_code == 200, (query, response.text)
            return sorted(f["port"] for f in response.json()["data"]["findings"])

        assert await ports("ruleId=nmap.open-port") == [22, 80]
        assert await ports("host=127.0.0.2") == [80, 443]
        assert await ports("port=80") == [80]
        assert await ports("port=22&port=443") == [22, 443]
        assert await ports("cve=cve-2014-0160") == [443]
        assert await ports("ruleId=nmap.open-port&host=127.0.0.2") == [80]
        fingerprint = findings[0].fingerprint("nmap")
        assert await ports(f"fingerprint={fingerprint}") == [22]
        assert await ports("ruleId=nothing") == []
        assert await ports("format=json&scanType=nmap&severity=info&page=1&limit=10") == [22, 80, 443]
        for query, field in (("rule=x", "rule"), ("port=http", "port"), ("port=70000", "port"),
                             ("port=²", "port")):
            response = await c.get(f"{base}?{query}")
            assert error(response) == (400, "VALIDATION_ERROR") and response.json()["details"][0]["field"] == field
