"""CLI: init's safety, tenants, targets, keys, backup and check (apsw, separate from the server)."""
import json
import os
import sqlite3
import stat

from click.testing import CliRunner

from appliance.cli import cli
from tests.conftest import run_cli


def test_init_creates_a_private_data_dir_and_prints_the_key_once(tmp_path):
    data = tmp_path / "d"
    out = run_cli("init", "--data-dir", str(data), "--hostname", "scanner.lab.test")
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("cix_sk_")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / "tls-key.pem").st_mode) == 0o600
    with sqlite3.connect(data / "appliance.db") as conn:
        dump = "\n".join(conn.iterdump())
        scopes = json.loads(conn.execute("SELECT scopes FROM api_keys").fetchone()[0])
    assert raw not in dump  # only the hash is stored
    assert "api-keys:write" in scopes and len(scopes) == 18
    listed = run_cli("keys", "list", "--data-dir", str(data))
    assert raw not in listed and raw[:12] in listed


def test_init_refuses_an_existing_data_dir_without_force(tmp_path):
    data = tmp_path / "d"
    run_cli("init", "--data-dir", str(data))
    again = CliRunner().invoke(cli, ["init", "--data-dir", str(data)])
    assert again.exit_code == 1 and "--force" in again.output and len(again.output.strip().splitlines()) == 1
    run_cli("init", "--data-dir", str(data), "--force")


def test_tenants_targets_and_keys(admin_key, data_dir):
    d = ["--data-dir", str(data_dir)]
    run_cli("tenants", "create", "blue", *d)
    dup = CliRunner().invoke(cli, ["tenants", "create", "blue", *d])
    assert dup.exit_code == 1 and "already exists" in dup.output
    assert {t["name"] for t in json.loads(run_cli("tenants", "list", "--json", *d))} == {"default", "blue"}
    run_cli("targets", "allow", "--tenant", "blue", "198.51.100.0/24", "*.lab.test", *d)
    run_cli("targets", "deny", "--tenant", "blue", "198.51.100.128/25", *d)
    listing = run_cli("targets", "list", "--tenant", "blue", *d)
    assert "allow  198.51.100.0/24" in listing and "allow  lab.test" in listing
    assert "deny  198.51.100.128/25" in listing and "fe80::/10  (global)" in listing
    bad = CliRunner().invoke(cli, ["targets", "allow", "--tenant", "blue", "not a target", *d])
    assert bad.exit_code == 1 and "neither" in bad.output
    key = json.loads(run_cli("keys", "create", "--tenant", "blue", "--name", "ci", "--scan-type", "nmap",
                             "--allow-ip", "203.0.113.0/24", "--rate-minute", "5", "--expires-in-days", "7",
                             "--json", *d))
    assert key["key"].startswith("cix_sk_") and key["allowedScanTypes"] == ["nmap"]
    assert key["rateLimitPerMinute"] == 5 and key["expiresAt"]
    bad_rate = CliRunner().invoke(cli, ["keys", "create", "--name", "x", "--rate-minute", "0", *d])
    assert bad_rate.exit_code == 1 and "rateLimitPerMinute" in bad_rate.output
    rotated = json.loads(run_cli("keys", "rotate", key["id"], "--grace-hours", "1", "--json", *d))
    assert rotated["rotatedFromId"] == key["id"]
    run_cli("keys", "suspend", rotated["id"], *d)
    run_cli("keys", "reactivate", rotated["id"], *d)
    assert json.loads(run_cli("keys", "list", "--json", *d))[-1]["status"] == "active"
    run_cli("keys", "revoke", rotated["id"], *d)
    again = CliRunner().invoke(cli, ["keys", "revoke", rotated["id"], *d])
    assert again.exit_code == 1 and "revoked" in again.output
    dead = CliRunner().invoke(cli, ["keys", "rotate", rotated["id"], *d])
    assert dead.exit_code == 1 and "only active keys rotate" in dead.output


def test_backup_and_check(admin_key, data_dir, tmp_path):
    d = ["--data-dir", str(data_dir)]
    dest = tmp_path / "backup.db"
    assert "backed up" in run_cli("backup", str(dest), *d)
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1
    exists = CliRunner().invoke(cli, ["backup", str(dest), *d])
    assert exists.exit_code == 1 and "--force" in exists.output
    assert "appliance.db: ok" in run_cli("check", *d)


def test_commands_refuse_an_uninitialized_data_dir(tmp_path):
    result = CliRunner().invoke(cli, ["keys", "list", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "cix-appliance init" in result.output


def test_every_command_has_help_with_an_example():
    for path in (["init"], ["serve"], ["config", "set"], ["config", "get"], ["tenants", "create"],
                 ["tenants", "list"], ["targets", "allow"], ["targets", "deny"], ["targets", "list"],
                 ["keys", "create"], ["keys", "list"], ["keys", "rotate"], ["keys", "revoke"],
                 ["keys", "suspend"], ["keys", "reactivate"], ["backup"], ["check"]):
        out = run_cli(*path, "--help")
        assert "Example" in out and "--data-dir" in out, path
