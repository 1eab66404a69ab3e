"""Scans with findings written straight into the database (no scanner): what exports, the diff and
the CLI read."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance import clock
from appliance.scanning import batches, lifecycle, model
from appliance.store.ops import Op
from engines.base import Finding, fingerprint_of


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
        "started_at": now - 2, "completed_at": now if status in lifecycle.TERMINAL else None,
        "lease_id": "seed"})
    add = batches.findings_op(scan_id, "seed", engine or scan_type, findings, first_seq)
    count = Op([(f"UPDATE scans SET {lifecycle._COUNTS} WHERE id = :id", {"id": scan_id})])
    return scan_id, [insert, add, count]


async def add_scan(services: Any, findings: list[Finding], tenant: str = "default", **kwargs: Any) -> str:
    tenant_id = services.reader.scalar("SELECT id FROM tenants WHERE name = ?", (tenant,))
    scan_id, ops = scan_ops(tenant_id, findings, **kwargs)
    await services.writer.write(*ops)
    return scan_id


def contract_finding(finding: Finding | Mapping[str, Any], scan_id: str, engine: str, finding_id: str
                     ) -> dict[str, Any]:
    """The contract's finding object for ``finding``, written out field by field: what its stored body
    must be."""
    f = dict(zip(model.FINDING_FIELDS, model.finding_values(finding), strict=True))
    return {
        "id": finding_id, "scanId": scan_id, "engine": engine, "ruleId": f["rule_id"], "title": f["title"],
        "severity": f["severity"], "confidence": f["confidence"], "host": f["host"], "ip": f["ip"],
        "port": f["port"], "protocol": f["protocol"], "url": f["url"], "parameter": f["parameter"],
        "cve": f["cve"], "cwe": f["cwe"], "cvss": f["cvss"], "description": f["description"],
        "evidence": f["evidence"], "remediation": f["remediation"], "references": f["references"],
        "fingerprint": fingerprint_of(engine, f["rule_id"], f["host"], f["ip"], f["port"], f["protocol"],
                                      f["url"], f["parameter"]),
        "detectedBy": [engine], "raw": f["raw"],
    }
