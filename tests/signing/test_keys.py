"""The signing key store: made by init (and by the first start of an older data dir), owner-only files,
never in the database; show and rotate."""
from __future__ import annotations

import json
import shutil
import stat

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from appliance.cli import cli
from appliance.signing.keys import KeyRing, SigningKeyError, key_id
from tests.conftest import run_cli, serve_in_process

pytestmark = pytest.mark.anyio


def test_init_makes_one_hybrid_pair_owner_only_and_outside_the_database(data_dir, admin_key):
    folder = data_dir / "signing"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(files) == 3 and "keys.json" in files
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    keys = json.loads(run_cli("signing-key", "show", "--json", "--data-dir", str(data_dir)))
    assert sorted(k["algorithm"] for k in keys) == ["Ed25519", "ML-DSA-65"]
    assert all(k["status"] == "current" and k["retiredAt"] is None for k in keys)
    database = (data_dir / "appliance.db").read_bytes()
    for path in folder.glob("*.pem"):
        private = serialization.load_pem_private_key(path.read_bytes(), None)
        assert key_id(private.public_key()) == path.stem  # type: ignore[arg-type]
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        assert raw not in database and path.read_bytes() not in database


async def test_the_first_start_of_an_older_data_dir_makes_the_keys(data_dir, admin_key):
    shutil.rmtree(data_dir / "signing")
    result = CliRunner().invoke(cli, ["signing-key", "show", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and "has no signing keys yet" in result.output
    async with serve_in_process(data_dir) as client:
        client.headers["X-API-Key"] = admin_key
        listed = (await client.get("/api/v1/signing-key")).json()["data"]
    assert len(listed) == 2 and (data_dir / "signing" / "keys.json").exists()


async def test_a_broken_key_store_stops_the_start_instead_of_serving_unsigned(data_dir, admin_key):
    for path in (data_dir / "signing").glob("*.pem"):
        path.write_text("not a key")
    with pytest.raises(SigningKeyError, match="cannot load the private"):
        async with serve_in_process(data_dir):
            pass


def test_rotation_keeps_public_keys_and_deletes_private_ones(data_dir, admin_key):
    ring = KeyRing(data_dir)
    first = {k.key_id for k in ring.current()}
    retired, new = ring.rotate()
    assert all(k.retired_at is None for k in new)
    assert {k.key_id for k in retired} == first and all(k.retired_at for k in retired)
    _, newer = ring.rotate()
    listed = ring.public_keys()
    assert len(listed) == 6 and {k.key_id for k in ring.current()} == {k.key_id for k in newer}
    on_disk = {p.stem for p in (data_dir / "signing").glob("*.pem")}
    assert on_disk == {k.key_id for k in newer}
    lines = run_cli("signing-key", "show", "--data-dir", str(data_dir)).splitlines()
    assert len(lines) == 6 and sum("retired" in line for line in lines) == 4
    pem = run_cli("signing-key", "show", "--pem", "--data-dir", str(data_dir))
    assert pem.count("BEGIN PUBLIC KEY") == 6


async def test_unreadable_keys_answer_503_before_any_report_byte(client, data_dir):
    from tests.signing.common import add_scan

    scan_id = await add_scan(client.app.state.services, 2)
    assert (await client.get(f"/api/v1/scans/{scan_id}/report")).status_code == 200
    (data_dir / "signing" / "keys.json").write_text("{broken")
    for path in (f"/api/v1/scans/{scan_id}/report", f"/api/v1/scans/{scan_id}/results/signature",
                 "/api/v1/signing-key"):
        answer = await client.get(path)
        assert answer.status_code == 503 and answer.json()["code"] == "SERVICE_UNAVAILABLE", path
        assert str(data_dir) not in answer.text  # no file path in the answer
