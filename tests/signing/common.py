"""Helpers for signing tests: a finished scan with findings written straight through the lifecycle
ops (no scanner runs), and the report of a scan fetched through the API."""
from __future__ import annotations

from typing import Any

from appliance import clock
from appliance.scanning import batches, lifecycle
from engines.base import Finding


def findings(count: int, start: int = 0) -> list[Finding]:
    """Findings with what makes canonical JSON tricky: scores with and without a fraction, a tiny
    number, non-ASCII and astral text, control characters, nested raw data."""
    out = []
    for n in range(start, start + count):
        out.append(Finding(
            rule_id=f"rule-{n % 7}", title=f"Finding {n} — ünïcödé 😀", severity=("critical", "high", "info")[n % 3],
            host="127.0.0.1", ip="127.0.0.1", port=1 + n % 65535, protocol="tcp",
            cve=["CVE-2014-0160"] if n % 5 == 0 else [], cvss={"score": (7.0, 9.8, 0.00001)[n % 3],
                                                                  "vector": "CVSS:3.1/AV:N"},
            description="line\nbreak\ttab \"quoted\" \\ back", evidence="\x01\x1f", references=["https://example.invalid/"],
            raw={"z": 1, "a": [1.5, None, True], "\ue000": "private", "\U0001F600": "astral", "big": 2**60}))
    return out


async def add_scan(services: Any, count: int, status: str = "completed", scan_type: str = "nmap") -> str:
    tenant = services.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
    now = clock.now()
    scan_id = clock.new_id()
    ops = [lifecycle.submit({"id": scan_id, "tenant_id": tenant, "scan_type": scan_type, "target": "127.0.0.1",
                             "target_type": "ip", "status": status, "priority": "normal", "timeout": 60,
                             "created_at": now, "queued_at": now, "lease_id": "t", "options": '{"ratio": 0.5}'})]
    for start in range(0, count, 1000):
        ops.append(batches.findings_op(scan_id, "t", scan_type, findings(min(1000, count - start), start), start))
    ops.append(lifecycle.recount(scan_id, "t"))
    await services.writer.write(*ops)
    return scan_id
