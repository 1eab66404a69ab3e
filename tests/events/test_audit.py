"""The audit trail: rows from the server's writer and CLI processes form one hash chain;
``audit verify`` names the first row an edit or deletion broke; ``GET /audit``."""
from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.audit import audit_op
from appliance.cli import cli
from appliance.store import apply_sync, connect, migrate
from appliance.store.schema import MIGRATIONS
from tests.conftest import make_key, run_cli, run_cli_async
from tests.events.common import events_app, services
from tests.events.receiver import Receiver

pytestmark = pytest.mark.anyio


def verify(data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(data_dir)])
    return result.exit_code, result.output


async def test_server_and_cli_append_to_one_chain_and_tampering_is_found(data_dir, admin_key, tmp_path):
    with Receiver(tmp_path / "rx") as receiver:
        async with events_app(data_dir, admin_key, receiver) as client:
            async def api_changes() -> None:
                for n in range(8):
                    assert (await client.post("/api/v1/scan-templates",
                                              json={"name": f"t{n}", "scanType": "nmap"})).status_code == 201
                hook = (await client.post("/api/v1/webhooks", json={"name": "h", "url": receiver.url()})).json()
                await client.post(f"/api/v1/webhooks/{hook['data']['id']}/rotate-secret")
                await client.delete(f"/api/v1/webhooks/{hook['data']['id']}")

            def cli_changes() -> None:
                for n in range(6):
                    run_cli("targets", "allow", "--data-dir", str(data_dir), f"10.{n}.0.0/16")
                run_cli("config", "set", "--data-dir", str(data_dir), "queue.workers", "3")
                make_key(data_dir, "--name", "auditor", "--scope", "audit:read")

            await asyncio.gather(api_changes(), asyncio.to_thread(cli_changes))
            for _ in range(31):  # one failed-authentication lockout
                await client.get("/api/v1/scans", headers={"X-API-Key": "cix_sk_" + "y" * 40})
            services(client).writer.flush()
            await services(client).writer.write()
    code, out = verify(data_dir)
    assert code == 0 and "audit chain ok" in out, out
    rows = json.loads(run_cli("audit", "list", "--json", "--limit", "1000", "--data-dir", str(data_dir)))
    actions = [r["action"] for r in rows]
    for action in ("template.created", "webhook.created", "webhook.secret_rotated", "webhook.deleted",
                   "targets.allow.added", "config.changed", "api_key.created", "tenant.created", "auth.lockout"):
        assert action in actions, action
    assert actions.count("auth.lockout") == 1
    assert [r["id"] for r in rows] == list(range(len(rows), 0, -1))
    for newer, older in itertools.pairwise(rows):
        assert newer["prevHash"] == older["hash"]

    db = data_dir / "appliance.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    pristine = tmp_path / "pristine.db"
    shutil.copy(db, pristine)

    def restore() -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copy(pristine, db)

    def tampered(sql: str, *params: object) -> tuple[int, str]:
        restore()
        raw = sqlite3.connect(db)
        raw.execute(sql, params)
        raw.commit()
        raw.close()
        return verify(data_dir)

    code, out = tampered("UPDATE audit_events SET details = '{\"entries\": [\"0.0.0.0/0\"]}' WHERE id = 5")
    assert code == 1 and "row 5" in out and "edited" in out, out
    code, out = tampered("UPDATE audit_events SET actor = 'cli:nobody' WHERE id = 2")
    assert code == 1 and "row 2" in out, out
    code, out = tampered("DELETE FROM audit_events WHERE id = 7")
    assert code == 1 and "row 8" in out and "deleted" in out, out
    last = len(rows)
    code, out = tampered("DELETE FROM audit_events WHERE id = ?", last)
    assert code == 1 and "head" in out, out
    # Re-hashing an edited row only moves the break to the next row.
    from appliance.store.functions import audit_hash
    with sqlite3.connect(pristine) as raw:
        raw.row_factory = sqlite3.Row
        row = raw.execute("SELECT * FROM audit_events WHERE id = 4").fetchone()
    forged = audit_hash(row["prev_hash"], 4, row["tenant_id"], "cli:nobody", row["action"], row["resource_type"],
                        row["resource_id"], row["details"], row["created_at"])
    code, out = tampered("UPDATE audit_events SET actor = 'cli:nobody', hash = ? WHERE id = 4", forged)
    assert code == 1 and "row 5" in out, out
    restore()
    assert verify(data_dir)[0] == 0


async def test_audit_api_is_tenant_scoped_paged_and_filtered(data_dir, admin_key):
    await run_cli_async("tenants", "create", "other", "--data-dir", str(data_dir))
    other = make_key(data_dir, "--tenant", "other", "--name", "o", "--scope", "audit:read")
    async with events_app(data_dir, admin_key, None) as client:
        for n in range(3):
            await client.post("/api/v1/scan-templates", json={"name": f"t{n}", "scanType": "nmap"})
        await run_cli_async("config", "set", "--data-dir", str(data_dir), "queue.workers", "3")
        page = (await client.get("/api/v1/audit?limit=2")).json()
        assert page["pagination"]["total"] == 6  # tenant, admin key, auditor key... of this tenant only
        newest = page["data"][0]
        assert newest["action"] == "template.created" and newest["resourceType"] == "template"
        assert newest["actor"].startswith("key:key-") and newest["details"]["scanType"] == "nmap"
        assert set(newest) == {"id", "tenantId", "actor", "action", "resourceType", "resourceId", "details",
                               "createdAt", "prevHash", "hash"}
        filtered = (await client.get("/api/v1/audit?action=template.created")).json()
        assert filtered["pagination"]["total"] == 3
        by_actor = (await client.get(f"/api/v1/audit?actor={newest['actor']}")).json()
        assert by_actor["pagination"]["total"] == 3
        assert (await client.get("/api/v1/audit?from=2999-01-01")).json()["pagination"]["total"] == 0
        assert (await client.get("/api/v1/audit?to=2999-01-01")).json()["pagination"]["total"] == 6
        everything = (await client.get("/api/v1/audit?limit=100")).json()["data"]
        assert all(r["action"] != "config.changed" for r in everything)
        theirs = (await client.get("/api/v1/audit", headers={"X-API-Key": other["key"]})).json()
        assert {r["action"] for r in theirs["data"]} == {"tenant.created", "api_key.created"}
        scans_key = make_key(data_dir, "--name", "s")["key"]
        denied = await client.get("/api/v1/audit", headers={"X-API-Key": scans_key})
        assert denied.status_code == 403 and "audit:read" in denied.json()["error"]


def test_rows_written_before_the_chain_existed_are_chained_by_the_migration(tmp_path):
    db = tmp_path / "old.db"
    conn = connect(db)
    conn.execute("BEGIN")
    for script in MIGRATIONS[:2]:
        for statement in [s for s in script.split(";") if s.strip()]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    for n in range(3):
        conn.execute("INSERT INTO audit_events (tenant_id, actor, action, resource_type, resource_id, details,"
                     " created_at) VALUES (NULL, 'cli:old', ?, 'config', NULL, '{}', ?)", (f"old.{n}", 1000.5 + n))
    migrate(conn)
    apply_sync(conn, [audit_op(None, "cli:new", "new.0", "config", None, {"a": 1})])
    from appliance.audit import verify_conn
    verdict = verify_conn(conn)
    assert verdict.ok and verdict.rows == 4, verdict
    conn.execute("UPDATE audit_events SET action = 'old.x' WHERE id = 2")
    assert verify_conn(conn).broken_id == 2
