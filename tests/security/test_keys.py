"""Issue 10, API keys: minting never escapes the minting key's expiry and rate limits (item 4), and a
rotated key cannot be rotated again (item 8). Each test reproduces the finding as reported."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import clock
from appliance.cli import cli
from tests.conftest import run_cli

pytestmark = pytest.mark.anyio
PARENT = {"name": "parent", "scopes": ["api-keys:write", "api-keys:read", "engines:read"], "expiresInDays": 1,
          "rateLimitPerMinute": 60, "rateLimitPerHour": 500, "rateLimitPerDay": 2000}


async def _parent(client, **overrides):
    created = await client.post("/api/v1/api-keys", json={**PARENT, **overrides})
    assert created.status_code == 201, created.text
    return created.json()["data"]


async def test_a_child_key_never_outlives_or_outruns_its_parent(client):
    parent = await _parent(client)
    h = {"X-API-Key": parent["key"]}
    # as reported: defaults gave the child no expiry and the contract's (higher) default limits
    child = await client.post("/api/v1/api-keys", json={"name": "child", "scopes": ["engines:read"]}, headers=h)
    assert child.status_code == 201, child.text
    data = child.json()["data"]
    assert data["expiresAt"] is not None
    assert clock.parse_iso(data["expiresAt"]) <= clock.parse_iso(parent["expiresAt"])
    assert (data["rateLimitPerMinute"], data["rateLimitPerHour"], data["rateLimitPerDay"]) == (60, 500, 2000)
    # explicit excess: 400 naming the field, and nothing created
    for field, value in (("rateLimitPerMinute", 1000), ("rateLimitPerHour", 50000), ("rateLimitPerDay", 500000),
                         ("expiresInDays", 2)):
        response = await client.post("/api/v1/api-keys", json={"name": "greedy", "scopes": ["engines:read"],
                                                               field: value}, headers=h)
        assert response.status_code == 400 and response.json()["code"] == "VALIDATION_ERROR", field
        assert response.json()["details"][0]["field"] == field
    # within the parent's limits is fine, and lower defaults stay lower
    small = await client.post("/api/v1/api-keys", json={"name": "small", "scopes": ["engines:read"],
                                                        "rateLimitPerMinute": 5}, headers=h)
    assert small.status_code == 201 and small.json()["data"]["rateLimitPerMinute"] == 5
    names = {k["name"] for k in (await client.get("/api/v1/api-keys")).json()["data"]}
    assert "greedy" not in names


async def test_a_key_in_its_grace_period_mints_nothing_that_outlives_the_grace(client):
    parent = await _parent(client, expiresInDays=None)
    rotated = await client.post(f"/api/v1/api-keys/{parent['id']}/rotate", json={"gracePeriodHours": 1})
    assert rotated.status_code == 201
    child = await client.post("/api/v1/api-keys", json={"name": "c", "scopes": ["engines:read"]},
                              headers={"X-API-Key": parent["key"]})
    assert child.status_code == 201
    assert clock.parse_iso(child.json()["data"]["expiresAt"]) <= clock.now() + 3600 + 5


async def test_rotating_a_stronger_key_is_refused(client):
    """The rotate path's checks: a weaker key rotating a stronger one would mint its equal."""
    admin_id = (await client.get("/api/v1/api-keys")).json()["data"][0]["id"]
    weak = await _parent(client)
    h = {"X-API-Key": weak["key"]}
    scope = await client.post(f"/api/v1/api-keys/{admin_id}/rotate", json={}, headers=h)
    assert scope.status_code == 403 and scope.json()["code"] == "INSUFFICIENT_SCOPE"
    same_scopes = await client.post("/api/v1/api-keys", json={**PARENT, "name": "fast", "expiresInDays": None,
                                                              "rateLimitPerMinute": 1000})
    faster = same_scopes.json()["data"]
    response = await client.post(f"/api/v1/api-keys/{faster['id']}/rotate", json={}, headers=h)
    assert response.status_code == 400 and response.json()["details"][0]["field"] == "rateLimitPerMinute"
    slower = await client.post("/api/v1/api-keys", json={**PARENT, "name": "forever", "expiresInDays": None})
    response = await client.post(f"/api/v1/api-keys/{slower.json()['data']['id']}/rotate", json={}, headers=h)
    assert response.status_code == 400 and response.json()["details"][0]["field"] == "expiresAt"
    keys = (await client.get("/api/v1/api-keys")).json()["data"]
    assert not any(k["rotatedFromId"] for k in keys)  # nothing was minted
    itself = await client.post(f"/api/v1/api-keys/{weak['id']}/rotate", json={}, headers=h)
    assert itself.status_code == 201  # a key may always rotate itself
    assert itself.json()["data"]["expiresAt"] == weak["expiresAt"]


async def test_a_rotated_key_cannot_be_rotated_again(client):
    key = (await client.post("/api/v1/api-keys", json={"name": "r", "scopes": ["engines:read"]})).json()["data"]
    first = await client.post(f"/api/v1/api-keys/{key['id']}/rotate", json={"gracePeriodHours": 24})
    assert first.status_code == 201
    for _ in range(3):  # as reported: again and again, each successor-of-nothing working
        again = await client.post(f"/api/v1/api-keys/{key['id']}/rotate", json={"gracePeriodHours": 24})
        assert again.status_code == 409 and again.json()["code"] == "CONFLICT"
        assert "successor" in again.json()["error"]
    keys = (await client.get("/api/v1/api-keys")).json()["data"]
    assert [k["rotatedFromId"] for k in keys].count(key["id"]) == 1
    successor = first.json()["data"]
    assert (await client.post(f"/api/v1/api-keys/{successor['id']}/rotate", json={})).status_code == 201


def test_cli_refuses_rotating_a_rotated_key_and_lists_it_as_rotating(admin_key, data_dir):
    d = ["--data-dir", str(data_dir)]
    key = json.loads(run_cli("keys", "create", "--name", "ci", "--json", *d))
    run_cli("keys", "rotate", key["id"], "--grace-hours", "2", *d)
    again = CliRunner().invoke(cli, ["keys", "rotate", key["id"], *d])
    assert again.exit_code == 1 and "rotate the successor instead" in again.output
    assert len(json.loads(run_cli("keys", "list", "--json", *d))) == 3
    line = next(x for x in run_cli("keys", "list", *d).splitlines() if x.startswith(key["id"]))
    assert "rotating (until 20" in line
