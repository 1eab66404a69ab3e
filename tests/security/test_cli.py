"""Issue 10, the CLI: failures are one clear line and exit status 1, never a traceback (items 15, 16),
and allowlists wider than intended need --force (item 17)."""
from __future__ import annotations

import socket
import subprocess

from click.testing import CliRunner

from appliance.cli import cli
from tests.e2e.server import APPLIANCE


def test_backup_into_a_missing_folder_is_one_line(admin_key, data_dir, tmp_path):
    result = CliRunner().invoke(cli, ["backup", str(tmp_path / "nowhere" / "b.db"), "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and not isinstance(result.exception, (AssertionError, KeyError, OSError)), result
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in result.output


def test_backup_into_an_unwritable_place_is_one_line(admin_key, data_dir):
    # the folder exists, but nothing can be created in it (even as root): SQLite cannot open the file
    result = CliRunner().invoke(cli, ["backup", "/proc/cix-backup.db", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and type(result.exception) is SystemExit, result.exception
    assert len(result.output.strip().splitlines()) == 1


def test_serve_on_a_port_in_use_fails_before_starting(admin_key, data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*APPLIANCE, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                               "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], done.stderr
    assert "startup complete" not in done.stderr + done.stdout


def test_wide_allowlists_need_force_and_denylisted_ranges_warn(admin_key, data_dir):
    d = ["--data-dir", str(data_dir)]
    for entry in ("0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31"):
        refused = CliRunner().invoke(cli, ["targets", "allow", entry, *d])
        assert refused.exit_code == 1 and "--force" in refused.output, (entry, refused.output)
    listing = CliRunner().invoke(cli, ["targets", "list", *d]).output
    assert "0.0.0.0/0" not in listing and "::/0" not in listing
    forced = CliRunner().invoke(cli, ["targets", "allow", "--force", "0.0.0.0/0", *d])
    assert forced.exit_code == 0 and "warning" in forced.stderr and "denylist" in forced.stderr
    covered = CliRunner().invoke(cli, ["targets", "allow", "169.254.169.0/24", *d])
    assert covered.exit_code == 0 and "169.254.0.0/16" in covered.stderr, covered.output
    plain = CliRunner().invoke(cli, ["targets", "allow", "10.0.0.0/8", "2001:db8::/32", "lab.test", *d])
    assert plain.exit_code == 0 and plain.stderr == ""
