"""Issue 10, the repository itself: installs that do not repeat or warn (item 20), and API docs that
stand alone and cover every body field and error code the code can answer (item 21)."""
from __future__ import annotations

import hashlib
import re
import subprocess
import time
import tomllib
from pathlib import Path

from appliance import apikeys
from appliance.scanning import submit

ROOT = Path(__file__).parents[2]
API_DOC = (ROOT / "docs" / "api.md").read_text()


def test_license_is_an_spdx_string():
    """A ``project.license`` table makes setuptools print ~45 lines of deprecation warnings per install."""
    license_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert isinstance(license_, str) and license_.startswith("LicenseRef-")


def test_install_is_skipped_and_silent_when_nothing_changed():
    wanted = hashlib.sha256((ROOT / "constraints.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes())
    stamp = ROOT / ".venv" / ".cix-installed"
    assert stamp.exists() and stamp.read_text().strip() == wanted.hexdigest(), \
        "run ./scripts/install.sh: it records what it installed in .venv/.cix-installed"
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "install.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr
    assert time.monotonic() - started < 2


def test_api_docs_stand_alone():
    for doc in (ROOT / "docs").glob("*.md"):
        assert "../shared" not in doc.read_text() and "contract.md" not in doc.read_text(), doc.name


def test_api_docs_list_every_body_field():
    for field in (*apikeys.SPEC_FIELDS, *submit.FIELDS, "gracePeriodHours", *submit.CONFIG_KEYS):
        assert f"`{field}`" in API_DOC, field


def test_api_docs_list_every_error_code():
    """Every upper-case code literal in the appliance (error envelopes and scans' ``error.code``)."""
    not_codes = {"COMMIT", "ROLLBACK", "DELETE", "TMPDIR", "CIX_DATA_DIR"}
    codes = set()
    for source in (ROOT / "appliance").rglob("*.py"):
        found = set(re.findall(r'"([A-Z][A-Z_]{4,}[A-Z])"', source.read_text()))
        codes |= {c for c in found - not_codes if not c.startswith("CIX_")}  # CIX_*: environment variables
    assert {"INVALID_JSON", "REQUEST_HEADER_FIELDS_TOO_LARGE", "SERVICE_UNAVAILABLE", "KEY_REVOKED"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in API_DOC)
    assert missing == []
