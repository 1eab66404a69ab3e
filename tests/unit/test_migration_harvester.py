"""Migration 6: `theharvester` (never a contract name) becomes `harvester` in scans and key restrictions."""
from __future__ import annotations

import json

from appliance.store import migrate
from appliance.store.db import _statements, connect
from appliance.store.schema import MIGRATIONS


def test_theharvester_is_renamed(tmp_path):
    conn = connect(tmp_path / "a.db")  # with the SQL functions earlier migrations use
    for number, script in enumerate(MIGRATIONS[:5], start=1):  # the schema as it was before
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'default', 0)")
    key = ("INSERT INTO api_keys (id, tenant_id, key_hash, prefix, name, scopes, allowed_scan_types, rate_minute,"
           " rate_hour, rate_day, status, created_at) VALUES (?, 't1', ?, 'p', 'k', '[]', ?, 1, 1, 1, 'active', 0)")
    for key_id, types in (("k1", '["nmap","theharvester","trivy"]'), ("k2", '["theharvester","harvester"]'),
                          ("k3", '["nmap"]'), ("k4", None)):
        conn.execute(key, (key_id, f"h-{key_id}", types))
    scan = ("INSERT INTO scans (id, tenant_id, scan_type, target, target_type, status, priority, timeout,"
            " created_at, queued_at) VALUES (?, 't1', ?, 'lab.test', 'domain', 'completed', 'normal', 60, 0, 0)")
    conn.execute(scan, ("s1", "theharvester"))
    conn.execute(scan, ("s2", "nmap"))

    migrate(conn)

    kinds = {r["id"]: r["allowed_scan_types"] for r in conn.execute("SELECT id, allowed_scan_types FROM api_keys")}
    assert json.loads(kinds["k1"]) == ["nmap", "harvester", "trivy"]
    assert json.loads(kinds["k2"]) == ["harvester"]
    assert kinds["k3"] == '["nmap"]' and kinds["k4"] is None
    assert dict(conn.execute("SELECT id, scan_type FROM scans").fetchall()) == {"s1": "harvester", "s2": "nmap"}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
