"""Artifact targets (trivy): parsing, ``path:`` containment after realpath, registries, and the API's use
of the engines' target kinds."""
from __future__ import annotations

import os

import pytest

from appliance.targets import Policy, TargetError, parse_target
from engines.registry import build_registry, target_types
from tests.conftest import run_cli, run_cli_async


@pytest.mark.parametrize("text, registry", [
    ("registry.lab.test/team/app:1.2", "registry.lab.test"),
    ("registry.lab.test:5000/app@sha256:" + "a" * 64, "registry.lab.test:5000"),
    ("localhost/app", "localhost"),
    ("alpine:3.19", "docker.io"),
    ("library/alpine", "docker.io"),
])
def test_image_references(text, registry):
    assert parse_target(text, "image").registry == registry


@pytest.mark.parametrize("text, kind", [
    ("/srv/builds/../../etc", "filesystem"), ("srv/builds", "filesystem"), ("/srv//builds", "repository"),
    ("/srv/./builds", "filesystem"), ("/srv/app.zip", "image"), ("Registry/App", "image"),
    ("http://registry/app", "image"), ("-rf", "filesystem"),
])
def test_bad_artifacts(text, kind):
    with pytest.raises(TargetError):
        parse_target(text, kind)


def test_paths_must_stay_inside_an_allowed_directory(tmp_path):
    allowed = tmp_path / "builds"
    (allowed / "app").mkdir(parents=True)
    outside = tmp_path / "secrets"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)  # a link inside the allowed dir pointing out of it
    (tmp_path / "builds-evil").mkdir()  # shares the prefix, is not below it
    policy = Policy.build([f"path:{allowed}"], [])
    assert policy.check(parse_target(str(allowed / "app"), "filesystem")) is None
    assert policy.check(parse_target(str(allowed), "repository")) is None
    problem = policy.check(parse_target(str(allowed / "escape"), "filesystem"))
    assert problem is not None and str(outside) in problem
    assert policy.check(parse_target(str(tmp_path / "builds-evil"), "filesystem")) is not None
    assert policy.check(parse_target(str(outside), "filesystem")) is not None


def test_allowed_directory_itself_is_resolved(tmp_path):
    real = tmp_path / "real"
    (real / "app").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    policy = Policy.build([f"path:{tmp_path / 'alias'}"], [])
    assert policy.check(parse_target(str(real / "app"), "filesystem")) is None


def test_denied_paths_and_registries_win(tmp_path):
    (tmp_path / "builds" / "private").mkdir(parents=True)
    policy = Policy.build([f"path:{tmp_path}", "registry:registry.lab.test"],
                          [f"path:{tmp_path / 'builds' / 'private'}", "registry:evil.lab.test"])
    assert policy.check(parse_target(str(tmp_path / "builds" / "private"), "filesystem")) is not None
    assert policy.check(parse_target(str(tmp_path / "builds" / "app.tar"), "image")) is None
    assert policy.check(parse_target("registry.lab.test/app:1", "image")) is None
    assert policy.check(parse_target("evil.lab.test/app:1", "image")) is not None
    assert policy.check(parse_target("other.lab.test/app:1", "image")) is not None
    # a registry entry allows no network target, a path entry no image reference
    assert Policy.build(["registry:registry.lab.test"], []).check(parse_target("registry.lab.test", "domain"),
                                                                    resolve=False) is not None


def test_target_kinds_come_from_the_engines():
    kinds = target_types(build_registry())
    for kind in ("image", "filesystem", "repository", "url", "domain", "ip", "network", "host"):
        assert kind in kinds


def test_cli_allows_paths_and_registries(tmp_path, data_dir, admin_key):
    out = run_cli("targets", "allow", "--data-dir", str(data_dir), f"path:{tmp_path}", "registry:registry.lab.test")
    assert "path:" in out
    listed = run_cli("targets", "list", "--data-dir", str(data_dir))
    assert f"allow  path:{tmp_path}" in listed and "allow  registry:registry.lab.test" in listed


@pytest.fixture
def fake_trivy(tmp_path, monkeypatch):
    """A trivy that reports a version, so that submit reaches the data check (nothing runs it)."""
    script = tmp_path / "trivy"
    script.write_text("#!/bin/sh\necho 'Version: 0.74.0'\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.anyio
async def test_submit_refuses_a_vuln_scan_without_the_db(tmp_path, data_dir, admin_key, fake_trivy):
    from tests.conftest import serve_in_process

    (tmp_path / "src").mkdir()
    await run_cli_async("targets", "allow", "--data-dir", str(data_dir), f"path:{tmp_path}")
    async with serve_in_process(data_dir, engines__paths={"trivy": fake_trivy}) as client:
        client.headers["X-API-Key"] = admin_key
        resp = await client.post("/api/v1/scans", json={"scanType": "trivy", "target": str(tmp_path / "src")})
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["code"] == "ENGINE_UNAVAILABLE" and "trivy-db" in body["error"]
        resp = await client.post("/api/v1/scans", json={"scanType": "trivy", "target": "/etc",
                                                        "options": {"scanners": "secret"}})
        assert resp.status_code == 403 and resp.json()["code"] == "TARGET_NOT_ALLOWED"
        resp = await client.post("/api/v1/scans", json={"scanType": "trivy", "target": "/etc/../etc",
                                                        "targetType": "filesystem", "options": {"scanners": "secret"}})
        assert resp.status_code == 400 and resp.json()["code"] == "INVALID_TARGET"
        resp = await client.get("/api/v1/engines")
        trivy = next(e for e in resp.json()["data"] if e["scanType"] == "trivy")
        assert trivy["available"] and trivy["offlineData"][0]["name"] == "trivy-db"
        assert "image" in trivy["targetTypes"]
    assert os.path.isdir(tmp_path / "src")
