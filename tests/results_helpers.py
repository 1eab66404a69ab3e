"""Scans with findings written straight into the database (no scanner): what exports, the diff and
the CLI read."""
from __future__ import annotations

import json
from typing import Any

from appliance import clock
from appliance.scanning import lifecycle, model
from appliance.store.ops import Op
from engines.base import Finding


def finding(rule: str, severity: str = "info", port: int | None = 80, **extra: Any) -> Finding:
    return Finding(rule_id=rule, title=extra.pop("title", f"{rule} title"), severity=severity, host="127.0.0.1",
                   ip="127.0.0.1", port=port, protocol="tcp", **extra)


def scan_ops(tenant_id: str, findings: list[Finding], scan_type: str = "nmap", status: str = "completed",
             engine: str | None = None, scan_id: str | None = None, first_seq: int = 0) -> tuple[str, list[Op]]:
    scan_id = scan_id or clock.new_id()
    now = clock.now()
    insert = lifecycle.submit({
        "id": scan_id, "tenant_id": tenant_id, "scan_type": scan_type, "target": "127.0.0.1", "target_type": "ip",
        "status": status, "priority": "normal", "timeout": 60, "created_at": now, "queued_at": now,
        "started_at": now - 2, "completed_at": now if status in lifecycle.TERMINAL else None})
    rows = []
    for seq, f in enumerate(findings, first_seq):
        finding_id = clock.new_id()
        body = model.finding_json(f, scan_id, engine or scan_type, finding_id)
        rows.append((finding_id, scan_id, seq, model.SEVERITY_RANK[f.severity], f.severity, body["fingerprint"],
                     json.dumps(body)))
    add = Op([("INSERT OR IGNORE INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint, body)"
               " VALUES (?,?,?,?,?,?,?)", ())], many={0: rows})
    count = Op([(f"UPDATE scans SET {lifecycle._COUNTS} WHERE id = :id", {"id": scan_id})])
    return scan_id, [insert, add, count]


async def add_scan(services: Any, findings: list[Finding], tenant: str = "default", **kwargs: Any) -> str:
    tenant_id = services.reader.scalar("SELECT id FROM tenants WHERE name = ?", (tenant,))
    scan_id, ops = scan_ops(tenant_id, findings, **kwargs)
    await services.writer.write(*ops)
    return scan_id
