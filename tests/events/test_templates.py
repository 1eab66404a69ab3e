"""``/scan-templates``: options validated by the engine at creation and PATCH; launch merges over
the template and goes through the same checks as ``POST /scans``; the scan carries ``templateId``."""
from __future__ import annotations

import re

import pytest

from tests.conftest import make_key, run_cli_async
from tests.events.common import events_app

pytestmark = pytest.mark.anyio
T = "/api/v1/scan-templates"


@pytest.fixture
async def client(data_dir, admin_key):
    async with events_app(data_dir, admin_key, None) as c:
        yield c


async def test_template_crud_and_validation(client, data_dir, own_port):
    bad = [({"scanType": "nmap"}, 400, "VALIDATION_ERROR", "name"),
           ({"name": "x" * 256, "scanType": "nmap"}, 400, "VALIDATION_ERROR", "name"),
           ({"name": "x"}, 400, "VALIDATION_ERROR", "scanType"),
           ({"name": "x", "scanType": "nessus"}, 400, "INVALID_SCAN_TYPE", "scanType"),
           ({"name": "x", "scanType": "nmap", "options": {"ports": "80;id"}}, 400, "INVALID_OPTIONS", "options.ports"),
           ({"name": "x", "scanType": "nmap", "options": {"bogus": 1}}, 400, "INVALID_OPTIONS", "options.bogus"),
           ({"name": "x", "scanType": "nmap", "options": {"ports": "80", "topPorts": 5}}, 400, "INVALID_OPTIONS",
            "options.topPorts"),
           ({"name": "x", "scanType": "nmap", "config": {"env": {}}}, 400, "INVALID_OPTIONS", "config.env"),
           ({"name": "x", "scanType": "nmap", "targetType": "url"}, 400, "INVALID_TARGET", "targetType"),
           ({"name": "x", "scanType": "nmap", "timeout": 1}, 400, "VALIDATION_ERROR", "timeout"),
           ({"name": "x", "scanType": "nmap", "target": "127.0.0.1"}, 400, "VALIDATION_ERROR", "target")]
    for body, status, code, field in bad:
        response = await client.post(T, json=body)
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.json())
        assert response.json()["details"][0]["field"] == field, body
    created = await client.post(T, json={"name": "weekly", "description": "d", "scanType": "nmap",
                                         "priority": "high", "options": {"ports": f"{own_port}"}, "tags": ["ci"],
                                         "timeout": 600, "config": {"maxFindings": 10}})
    assert created.status_code == 201, created.text
    tmpl = created.json()["data"]
    assert re.fullmatch(r"tmpl-[0-9a-f-]{36}", tmpl["id"])
    assert (tmpl["name"], tmpl["scanType"], tmpl["priority"], tmpl["options"], tmpl["tags"], tmpl["timeout"],
            tmpl["config"]) == ("weekly", "nmap", "high", {"ports": f"{own_port}"}, ["ci"], 600, {"maxFindings": 10})
    assert (await client.get(f"{T}/{tmpl['id']}")).json()["data"] == tmpl
    assert (await client.get(T)).json()["pagination"]["total"] == 1
    bad_patch = await client.patch(f"{T}/{tmpl['id']}", json={"options": {"timing": "T9"}})
    assert bad_patch.status_code == 400 and bad_patch.json()["code"] == "INVALID_OPTIONS"
    patched = (await client.patch(f"{T}/{tmpl['id']}",
                                  json={"name": "nightly", "options": {"ports": f"{own_port}"}})).json()
    assert patched["data"]["name"] == "nightly" and patched["data"]["options"] == {"ports": f"{own_port}"}
    assert patched["data"]["priority"] == "high"
    await run_cli_async("tenants", "create", "other", "--data-dir", str(data_dir))
    other = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "templates:read",
                     "--scope", "templates:delete", "--scope", "scans:create")["key"]
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/launch")):
        response = await client.request(method, f"{T}/{tmpl['id']}{suffix}", headers={"X-API-Key": other},
                                        json={"target": "127.0.0.1"})
        assert response.status_code == 404 and response.json()["code"] == "TEMPLATE_NOT_FOUND", (method, suffix)
    assert (await client.get(T, headers={"X-API-Key": other})).json()["pagination"]["total"] == 0
    reader = make_key(data_dir, "--name", "r", "--scope", "templates:read")["key"]
    for method, scope in (("POST", "templates:create"), ("PATCH", "templates:update"), ("DELETE", "templates:delete")):
        path = T if method == "POST" else f"{T}/{tmpl['id']}"
        response = await client.request(method, path, headers={"X-API-Key": reader}, json={"name": "n"})
        assert response.status_code == 403 and scope in response.json()["error"], method
    launch = await client.post(f"{T}/{tmpl['id']}/launch", headers={"X-API-Key": reader},
                               json={"target": "127.0.0.1"})
    assert launch.status_code == 403 and "scans:create" in launch.json()["error"]
    assert (await client.delete(f"{T}/{tmpl['id']}")).status_code == 200
    assert (await client.get(f"{T}/{tmpl['id']}")).json()["code"] == "TEMPLATE_NOT_FOUND"
    audit = await run_cli_async("audit", "list", "--data-dir", str(data_dir))
    for action in ("template.created", "template.updated", "template.deleted"):
        assert action in audit


async def test_launch_merges_overrides_and_checks_like_post_scans(client, data_dir, own_port):
    port = str(own_port)
    tmpl = (await client.post(T, json={"name": "web", "scanType": "nmap", "priority": "low", "tags": ["t"],
                                       "options": {"ports": port, "timing": "T3"}, "timeout": 900})).json()["data"]
    launched = await client.post(f"{T}/{tmpl['id']}/launch", json={
        "target": "127.0.0.1", "options": {"timing": "T4", "serviceDetection": False}, "name": "adhoc",
        "priority": "critical"})
    assert launched.status_code == 201, launched.text
    scan = launched.json()["data"]
    assert scan["templateId"] == tmpl["id"] and scan["status"] == "queued"
    assert scan["options"] == {"ports": port, "timing": "T4", "serviceDetection": False}
    assert (scan["name"], scan["priority"], scan["tags"], scan["timeout"]) == ("adhoc", "critical", ["t"], 900)
    plain = (await client.post(f"{T}/{tmpl['id']}/launch", json={"target": "127.0.0.1"})).json()["data"]
    assert (plain["name"], plain["priority"], plain["options"]) == ("web", "low", {"ports": port, "timing": "T3"})
    refusals = [({"target": "127.0.0.1", "options": {"topPorts": 10}}, 400, "INVALID_OPTIONS"),  # merged: both
                ({"target": "127.0.0.1", "options": {"ports": "1;id"}}, 400, "INVALID_OPTIONS"),
                ({"target": "10.1.2.3"}, 403, "TARGET_NOT_ALLOWED"),
                ({"target": "127.0.0.1 -oX x"}, 400, "INVALID_TARGET"),
                ({}, 400, "VALIDATION_ERROR"),
                ({"target": "127.0.0.1", "scanType": "zap"}, 400, "VALIDATION_ERROR"),
                ({"target": "127.0.0.1", "callbackUrl": "http://x/"}, 400, "VALIDATION_ERROR")]
    for body, status, code in refusals:
        response = await client.post(f"{T}/{tmpl['id']}/launch", json=body)
        assert (response.status_code, response.json()["code"]) == (status, code), (body, response.json())
    limited = make_key(data_dir, "--name", "l", "--scan-type", "nikto", "--scope", "scans:create")["key"]
    response = await client.post(f"{T}/{tmpl['id']}/launch", json={"target": "127.0.0.1"},
                                 headers={"X-API-Key": limited})
    assert response.status_code == 403 and response.json()["code"] == "SCAN_TYPE_NOT_ALLOWED"
    # Deleting the template leaves its scans alone.
    await client.delete(f"{T}/{tmpl['id']}")
    kept = (await client.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
    assert kept["templateId"] == tmpl["id"]
    assert (await client.get("/api/v1/scans")).json()["pagination"]["total"] == 2
