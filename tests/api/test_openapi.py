"""The OpenAPI 3.1 document: valid, served without a key under both prefixes, complete, and true to
what the server does (routes, scopes, engine options)."""
from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from tests.conftest import run_cli_async

pytestmark = pytest.mark.anyio


async def test_served_without_a_key_under_both_prefixes_and_valid(client):
    first = await client.get("/api/v1/openapi.json", headers={"X-API-Key": ""})
    second = await client.get("/scan-api/api/v1/openapi.json", headers={"X-API-Key": ""})
    assert first.status_code == second.status_code == 200 and first.content == second.content
    document = first.json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")


def _app_routes(app) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/api/v1":
            for inner in route.routes:
                assert isinstance(inner, Route)
                found |= {(m, f"/api/v1{inner.path}") for m in inner.methods - {"HEAD"}}
        elif isinstance(route, Route) and not route.path.startswith("/internal"):
            found |= {(m, route.path) for m in route.methods - {"HEAD"}}
    return found


async def test_every_route_is_documented_and_nothing_else(client):
    document = (await client.get("/api/v1/openapi.json")).json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == _app_routes(client.app)
    assert not any(path.startswith("/internal") for path in document["paths"])
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["operationId"] and op["responses"], (method, path)
            for status, answer in op["responses"].items():
                assert "X-Request-Id" in answer["headers"], (method, path, status)
                if op.get("x-scopes"):
                    assert "X-RateLimit-Remaining" in answer["headers"]
            if op.get("x-scopes"):
                assert op["security"] == [{"ApiKey": []}] and op["x-scopes"][0] in op["description"]
                assert {"401", "403", "429"} <= set(op["responses"])
                assert "INSUFFICIENT_SCOPE" in op["x-error-codes"]["403"]


async def test_every_scope_is_the_one_the_server_checks(client, data_dir):
    """A key holding only ``engines:read`` is refused each other operation with the scope it names."""
    document = (await client.get("/api/v1/openapi.json")).json()
    key = json.loads(await run_cli_async("keys", "create", "--data-dir", str(data_dir), "--json", "--name", "narrow",
                                         "--scope", "engines:read"))["key"]
    checked = 0
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            scope = (op.get("x-scopes") or [None])[0]
            if scope is None or scope == "engines:read":
                continue
            url = path.replace("{scan_id}", "00000000-0000-4000-8000-000000000000").replace("{", "").replace("}", "")
            response = await client.request(method.upper(), url, headers={"X-API-Key": key}, json={})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["code"] == "INSUFFICIENT_SCOPE" and f"'{scope}'" in response.json()["error"]
            checked += 1
    assert checked >= 30


async def test_each_engine_options_are_a_one_of_keyed_by_scan_type(client):
    document = (await client.get("/api/v1/openapi.json")).json()
    engines = {e["scanType"]: e for e in (await client.get("/api/v1/engines")).json()["data"]}
    schemas = document["components"]["schemas"]
    for path in ("/api/v1/scans", "/api/v1/scan-templates"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        mapping = body["discriminator"]["mapping"]
        assert body["discriminator"]["propertyName"] == "scanType" and set(mapping) == set(engines)
        assert [v["$ref"] for v in body["oneOf"]] == [mapping[name] for name in engines]
        for name, ref in mapping.items():
            variant = schemas[ref.rsplit("/", 1)[1]]
            assert variant["properties"]["scanType"]["enum"] == [name] and "scanType" in variant["required"]
            assert variant.get("additionalProperties") is False
    nmap = schemas[mapping["nmap"].rsplit("/", 1)[1]]["properties"]["options"]
    options_ref = next(s["$ref"] for s in nmap["anyOf"] if "$ref" in s)
    assert schemas[options_ref.rsplit("/", 1)[1]] == engines["nmap"]["options"]  # one type, two views
    assert set(engines["nmap"]["options"]["properties"]) >= {"ports", "topPorts", "timing", "scripts"}
