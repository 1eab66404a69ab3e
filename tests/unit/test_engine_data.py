"""``engines import``: verification, versioned storage, the atomic swap, pruning, the CLI and the audit."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from appliance.engine_data import BundleError, import_bundle, prune
from engines.offline_data import current_bundle
from engines.trivy import TrivyEngine
from tests.conftest import run_cli
from tests.engines.bundles import TEMPLATES, bolt_bytes, trivy_db_tar, wordlist


def _tar(path: Path, members: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


# -- trivy-db -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix, compress", [("db/", True), ("./db/", False), ("", True)])
def test_trivy_db_layouts(tmp_path, prefix, compress):
    tar = trivy_db_tar(tmp_path / "db.tar", prefix=prefix, compress=compress)
    (result,) = import_bundle(tmp_path / "data", "trivy-db", tar)
    assert result.version == "v2-20261128T060000Z" and result.sha256 == hashlib.sha256(tar.read_bytes()).hexdigest()
    bundle = current_bundle(tmp_path / "data" / "trivy", "trivy-db")
    assert bundle is not None and (bundle.payload / "trivy.db").read_bytes()[16:20] == bolt_bytes()[16:20]
    assert bundle.summary["UpdatedAt"] == "2026-11-28T06:00:00.123456Z"


@pytest.mark.parametrize("members, message", [
    ({"db/metadata.json": b'{"Version": 2, "UpdatedAt": "x"}'}, "no db/trivy.db"),
    ({"db/trivy.db": bolt_bytes()}, "no db/metadata.json"),
    ({"db/trivy.db": b"SQLite format 3\x00" + bytes(64), "db/metadata.json": b'{"Version": 2, "UpdatedAt": "x"}'},
     "not a BoltDB"),
    ({"db/trivy.db": bolt_bytes(), "db/metadata.json": b"[1]"}, "lacks Version"),
    ({"db/trivy.db": bolt_bytes(), "db/metadata.json": b'{"Version": 1, "UpdatedAt": "x"}'}, "schema 1"),
    ({"../db/trivy.db": bolt_bytes()}, "parent-relative"),
    ({"/db/trivy.db": bolt_bytes()}, "absolute"),
])
def test_trivy_db_is_verified(tmp_path, members, message):
    with pytest.raises(BundleError, match=message):
        import_bundle(tmp_path / "data", "trivy-db", _tar(tmp_path / "bad.tgz", members))
    assert current_bundle(tmp_path / "data" / "trivy", "trivy-db") is None
    assert [p.name for p in (tmp_path / "data" / "trivy" / "trivy-db").iterdir()] == []  # staging removed


def test_links_in_a_tar_are_refused(tmp_path):
    link = tarfile.TarInfo("db/trivy.db")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/shadow"
    with pytest.raises(BundleError, match="only regular files"):
        import_bundle(tmp_path / "data", "trivy-db", _tar(tmp_path / "l.tgz", {}, (link,)))


def test_a_name_twice_is_refused(tmp_path):
    tar = tmp_path / "t.tgz"
    with tarfile.open(tar, "w:gz") as out:
        for _ in range(2):
            data = b"id: a\ninfo:\n  name: a\n"
            info = tarfile.TarInfo("t/a.yaml")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="twice"):
        import_bundle(tmp_path / "data", "nuclei-templates", tar)


def test_not_a_tar(tmp_path):
    (tmp_path / "x.tgz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(BundleError, match="not a readable tar"):
        import_bundle(tmp_path / "data", "trivy-db", tmp_path / "x.tgz")


def test_sha256_is_checked(tmp_path):
    tar = trivy_db_tar(tmp_path / "db.tgz")
    seen: list[int] = []
    import_bundle(tmp_path / "other", "trivy-db", tar, progress=seen.append)
    assert sum(seen) == tar.stat().st_size  # the progress bar sees every byte once
    with pytest.raises(BundleError, match="sha256 mismatch"):
        import_bundle(tmp_path / "data", "trivy-db", tar, sha256="0" * 64)
    good = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert import_bundle(tmp_path / "data", "trivy-db", tar, sha256=good.upper())[0].sha256 == good


# -- versions, swap, prune ----------------------------------------------------------------------
def test_current_is_swapped_and_two_versions_are_kept(tmp_path):
    root = tmp_path / "data"
    names = []
    for day in (25, 26, 27, 28):
        tar = trivy_db_tar(tmp_path / f"{day}.tgz", updated=f"2026-11-{day}T06:00:00Z")
        result = import_bundle(root, "trivy-db", tar)[0]
        names.append(result.path.name)
        assert os.readlink(root / "trivy" / "trivy-db" / "current") == result.path.name
    kind_dir = root / "trivy" / "trivy-db"
    assert sorted(p.name for p in kind_dir.iterdir()) == sorted(["current", *names[-2:]])
    # the same version again gets its own dir, and the previous one stays as the fallback
    again = import_bundle(root, "trivy-db", tmp_path / "28.tgz")[0]
    assert again.path.name == f"{names[-1]}.2" and again.pruned == (names[-2],)


def test_prune_never_removes_current(tmp_path):
    root = tmp_path / "data"
    first = import_bundle(root, "trivy-db", trivy_db_tar(tmp_path / "a.tgz", updated="2026-11-01T00:00:00Z"))[0]
    import_bundle(root, "trivy-db", trivy_db_tar(tmp_path / "b.tgz", updated="2026-11-02T00:00:00Z"))
    import_bundle(root, "trivy-db", trivy_db_tar(tmp_path / "c.tgz", updated="2026-11-03T00:00:00Z"))
    kind_dir = root / "trivy" / "trivy-db"
    os.replace(kind_dir / "current", kind_dir / "old")
    os.symlink(first.path.name, kind_dir / "current")  # an operator rolled back by hand
    (first.path).mkdir(exist_ok=True)
    prune(kind_dir, keep=1)
    assert (kind_dir / "current").resolve().name == first.path.name


# -- nuclei templates ---------------------------------------------------------------------------
def test_templates_from_a_directory_and_a_tar(tmp_path):
    (result,) = import_bundle(tmp_path / "data", "nuclei-templates", TEMPLATES)
    assert result.summary["templates"] >= 1 and "cix-lab-canary" in result.summary["ids"]
    assert "cix" in result.summary["tags"]
    tar = tmp_path / "t.tar.gz"
    with tarfile.open(tar, "w:gz") as out:
        out.add(TEMPLATES, arcname="templates")
    (again,) = import_bundle(tmp_path / "data", "nuclei-templates", tar, version="lab-1")
    assert again.version == "lab-1" and again.summary["ids"] == result.summary["ids"]


def test_templates_are_verified(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.yaml").write_text("id: ok\ninfo:\n  name: ok\n  severity: info\n")
    (bad / "notes.yaml").write_text("just: yaml\n")
    with pytest.raises(BundleError, match=r"notes\.yaml is not a nuclei template"):
        import_bundle(tmp_path / "data", "nuclei-templates", bad)
    (bad / "notes.yaml").unlink()
    (bad / "evil.yaml").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symlinks are not allowed"):
        import_bundle(tmp_path / "data", "nuclei-templates", bad)
    (bad / "evil.yaml").unlink()
    (bad / "dup.yaml").write_text("id: ok\ninfo:\n  name: again\n")
    with pytest.raises(BundleError, match="template id 'ok'"):
        import_bundle(tmp_path / "data", "nuclei-templates", bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="no nuclei template"):
        import_bundle(tmp_path / "data", "nuclei-templates", empty)


# -- wordlists ----------------------------------------------------------------------------------
def test_wordlist_serves_both_osint_engines(tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("www\nMail\n\nwww\napi\n")
    results = import_bundle(tmp_path / "data", "wordlist", words)
    assert [r.scan_type for r in results] == ["harvester", "sublist3r"]
    for scan_type in ("harvester", "sublist3r"):
        bundle = current_bundle(tmp_path / "data" / scan_type, "wordlist")
        assert bundle is not None and bundle.payload.read_text() == "www\nmail\napi\n"
    only = import_bundle(tmp_path / "data", "wordlist", words, scan_types=("sublist3r",))
    assert [r.scan_type for r in only] == ["sublist3r"]


@pytest.mark.parametrize("text, message", [("www\nbad label\n", "line 2"), ("a.b\n", "line 1"),
                                           ("-x\n", "line 1"), ("\n\n", "no words"), ("x" * 64, "line 1")])
def test_wordlist_is_verified(tmp_path, text, message):
    (tmp_path / "w.txt").write_text(text)
    with pytest.raises(BundleError, match=message):
        import_bundle(tmp_path / "data", "wordlist", tmp_path / "w.txt")


def test_wrong_scan_type_and_bad_options(tmp_path):
    words = wordlist(tmp_path / "w.txt")
    with pytest.raises(BundleError, match="not used by trivy"):
        import_bundle(tmp_path / "data", "wordlist", words, scan_types=("trivy",))
    with pytest.raises(BundleError, match="--sha256 must be"):
        import_bundle(tmp_path / "data", "wordlist", words, sha256="xyz")
    with pytest.raises(BundleError, match="--version"):
        import_bundle(tmp_path / "data", "wordlist", words, version="../x")
    with pytest.raises(BundleError, match="directory"):
        import_bundle(tmp_path / "data", "nuclei-templates", TEMPLATES, sha256="0" * 64)


# -- CLI, audit, listing ------------------------------------------------------------------------
def test_cli_import_list_and_audit(tmp_path, data_dir, admin_key):
    tar = trivy_db_tar(tmp_path / "db.tgz")
    out = run_cli("engines", "import", "--data-dir", str(data_dir), "trivy-db", str(tar),
                  "--sha256", hashlib.sha256(tar.read_bytes()).hexdigest())
    assert "trivy: trivy-db v2-20261128T060000Z is current" in out
    listed = {e["scanType"]: e for e in json.loads(run_cli("engines", "list", "--data-dir", str(data_dir), "--json"))}
    (db,) = listed["trivy"]["offlineData"]
    assert db["version"] == "v2-20261128T060000Z" and db["size"] > 4096 and db["ageSeconds"] <= 60
    assert listed["nuclei"]["offlineData"][0]["missing"].startswith("not imported")
    text = run_cli("engines", "list", "--data-dir", str(data_dir))
    assert "data: trivy-db v2-20261128T060000Z" in text
    conn = sqlite3.connect(data_dir / "appliance.db")
    rows = conn.execute("SELECT action, resource_id, details FROM audit_events WHERE action LIKE 'engine_data.%'"
                        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("engine_data.imported", "trivy/trivy-db")]
    assert json.loads(rows[0][2])["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()


def test_cli_refuses_a_bad_bundle(tmp_path, data_dir, admin_key):
    from click.testing import CliRunner

    from appliance.cli import cli

    (tmp_path / "w.txt").write_text("not a label\n")
    result = CliRunner().invoke(cli, ["engines", "import", "--data-dir", str(data_dir), "wordlist",
                                      str(tmp_path / "w.txt")])
    assert result.exit_code == 1 and "line 1" in result.output


def test_engine_data_in_the_api_listing(tmp_path):
    from appliance.api.engines import engine_json

    engine = TrivyEngine("/bin/true", tmp_path / "data" / "trivy")
    assert engine_json(engine)["offlineDataAge"] is None
    import_bundle(tmp_path / "data", "trivy-db", trivy_db_tar(tmp_path / "db.tgz"))
    data = engine_json(engine)
    assert data["offlineData"][0]["version"] == "v2-20261128T060000Z" and 0 <= data["offlineDataAge"] <= 60
    assert "path" not in data["offlineData"][0]  # the API does not show server paths
