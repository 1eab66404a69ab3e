"""Signed audit checkpoints: written periodically and at shutdown, checked by ``audit verify``, which
names the first bad row — also when the whole chain was rebuilt after an edit, which the hash chain
alone cannot see."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.signing.checkpoint import ACTION
from appliance.store import connect
from appliance.store.functions import GENESIS, audit_hash
from tests.conftest import run_cli, serve_in_process

pytestmark = pytest.mark.anyio


def verify(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def rebuild_chain(db: Path) -> None:
    """What someone able to write the database would do after an edit: recompute every hash."""
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        prev = GENESIS
        for row in conn.execute("SELECT * FROM audit_events ORDER BY id").fetchall():
            new = audit_hash(prev, row["id"], row["tenant_id"], row["actor"], row["action"], row["resource_type"],
                             row["resource_id"], row["details"], row["created_at"])
            conn.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?", (prev, new, row["id"]))
            prev, last = new, row["id"]
        conn.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (f"{last}:{prev}",))
        conn.execute("COMMIT")
    finally:
        conn.close()


def edit(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, params)
    conn.close()


def checkpoint_rows(db: Path) -> list[sqlite3.Row]:
    conn = connect(db)
    try:
        return conn.execute("SELECT * FROM audit_events WHERE action = ? ORDER BY id", (ACTION,)).fetchall()
    finally:
        conn.close()


async def test_the_server_signs_the_head_periodically_and_at_shutdown(data_dir, admin_key):
    async with serve_in_process(data_dir, audit__checkpoint_seconds=1, queue__workers=0) as client:
        client.headers["X-API-Key"] = admin_key
        await client.post("/api/v1/scan-templates", json={"name": "t", "scanType": "nmap"})
        reader = client.app.state.services.reader
        for _ in range(50):
            if reader.scalar("SELECT count(*) FROM audit_events WHERE action = ?", (ACTION,)):
                break
            await asyncio.sleep(0.1)
        assert reader.scalar("SELECT count(*) FROM audit_events WHERE action = ?", (ACTION,)) == 1
        await asyncio.sleep(1.5)  # nothing new: no second checkpoint
        assert reader.scalar("SELECT count(*) FROM audit_events WHERE action = ?", (ACTION,)) == 1
        await client.post("/api/v1/scan-templates", json={"name": "u", "scanType": "nmap"})
    rows = checkpoint_rows(data_dir / "appliance.db")
    last = json.loads(rows[-1]["details"])["statement"]
    conn = connect(data_dir / "appliance.db")
    head_before = conn.execute("SELECT max(id) FROM audit_events WHERE id < ?", (rows[-1]["id"],)).fetchone()[0]
    conn.close()
    assert last["headId"] == head_before  # the shutdown checkpoint covers the last template
    code, out, _ = verify(data_dir)
    assert code == 0 and f"last signed checkpoint: row {rows[-1]['id']} signs rows 1-{head_before}" in out, out
    assert "0 rows after it" in out


async def test_an_edit_hidden_by_a_rebuilt_chain_is_caught_by_the_checkpoint(data_dir, admin_key):
    for n in range(3):
        run_cli("targets", "allow", "--data-dir", str(data_dir), f"203.0.113.{n}/32")  # entries only: no scan
    run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    checkpoint_id = checkpoint_rows(data_dir / "appliance.db")[0]["id"]
    run_cli("targets", "allow", "--data-dir", str(data_dir), "203.0.113.9/32")
    assert verify(data_dir)[0] == 0
    db = data_dir / "appliance.db"

    # one byte of an audit row: the chain names the row
    edit(db, "UPDATE audit_events SET details = replace(details, '203.0.113.1/32', '203.0.113.1/31') WHERE "
             "details LIKE '%203.0.113.1/32%'")
    code, _, err = verify(data_dir)
    assert code == 1 and "content does not match its hash (edited)" in err, err

    # the same edit with every hash recomputed: the chain is consistent again, the checkpoint is not
    rebuild_chain(db)
    code, _, err = verify(data_dir)
    assert code == 1 and f"row {checkpoint_id} (audit checkpoint): signed hash" in err, err
    assert "were rewritten and the chain rebuilt" in err


async def test_a_forged_or_stripped_checkpoint_is_refused(data_dir, admin_key, tmp_path):
    run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    db = data_dir / "appliance.db"
    row = checkpoint_rows(db)[0]
    block = json.loads(row["details"])

    def replace_details(new: dict) -> None:
        edit(db, "UPDATE audit_events SET details = ? WHERE id = ?", json.dumps(new, sort_keys=True), row["id"])
        rebuild_chain(db)

    # ML-DSA-65 part stripped
    replace_details({**block, "signatures": [s for s in block["signatures"] if s["algorithm"] == "Ed25519"]})
    code, _, err = verify(data_dir)
    assert code == 1 and f"row {row['id']} (audit checkpoint)" in err and "ML-DSA-65" in err, err

    # a statement moved to another head: the signature no longer matches the statement
    replace_details({**block, "statement": {**block["statement"], "headId": 1}})
    code, _, err = verify(data_dir)
    assert code == 1 and "does not verify" in err, err

    # intact again, but checked against another appliance's pinned keys
    replace_details(block)
    assert verify(data_dir)[0] == 0
    other = tmp_path / "other"
    run_cli("init", "--data-dir", str(other), "--json")
    pem = tmp_path / "other.pem"
    pem.write_text(run_cli("signing-key", "show", "--pem", "--data-dir", str(other)))
    code, _, err = verify(data_dir, "--public-key", str(pem))
    assert code == 1 and "is not pinned" in err, err
    mine = tmp_path / "mine.pem"
    mine.write_text(run_cli("signing-key", "show", "--pem", "--data-dir", str(data_dir)))
    assert verify(data_dir, "--public-key", str(mine))[0] == 0


async def test_checkpoints_signed_before_a_rotation_still_verify(data_dir, admin_key):
    assert "signed the audit chain up to row" in run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    assert "nothing new to sign" in run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    run_cli("signing-key", "rotate", "--data-dir", str(data_dir))
    run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    rows = checkpoint_rows(data_dir / "appliance.db")
    assert len(rows) == 2
    ids = [json.loads(r["details"])["statement"]["keyIds"] for r in rows]
    assert not set(ids[0]) & set(ids[1])
    code, out, _ = verify(data_dir)
    assert code == 0 and f"row {rows[1]['id']}" in out, out
    # without the key store, a checkpoint cannot be believed
    for path in (data_dir / "signing").iterdir():
        path.unlink()
    (data_dir / "signing").rmdir()
    code, _, err = verify(data_dir)
    assert code == 1 and "is not in the key store" in err, err


def test_audit_list_shows_a_checkpoint_briefly(data_dir, admin_key):
    run_cli("audit", "checkpoint", "--data-dir", str(data_dir))
    line = next(x for x in run_cli("audit", "list", "--data-dir", str(data_dir)).splitlines() if ACTION in x)
    assert "keyIds" in line and len(line) < 400
