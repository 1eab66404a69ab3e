"""Findings batches (appliance.scanning.batches): what one insert stores, and the writer's memory of
each scan's fingerprints, which must never drop a finding the table does not hold."""
from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.scanning import batches
from appliance.store import schema
from appliance.store.db import connect, migrate
from appliance.store.ops import Op, apply_sync
from appliance.store.writer import Writer
from engines.base import SEVERITIES, Finding
from tests.results_helpers import contract_finding

pytestmark = pytest.mark.anyio


def _db(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    migrate(conn)
    conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t', 'default', 0)")
    conn.execute("INSERT INTO scans (id, tenant_id, scan_type, target, target_type, status, priority, timeout,"
                 " created_at, queued_at, lease_id) VALUES ('s', 't', 'nmap', '127.0.0.1', 'ip', 'running',"
                 " 'normal', 60, 0, 0, 'lease')")
    return conn


def _findings(count: int, start: int = 0) -> list[Finding]:
    return [Finding(rule_id=f"rule-{i % 7}", title=f"Fünf \u2603 {i} \"quoted\" \\ \U0001f600",
                    severity=SEVERITIES[i % 5], host="127.0.0.1" if i % 3 else None, ip="192.0.2.1",
                    port=i % 4 or None, url=f"https://x/{i}", description="\x00\x1f control " * (i % 3),
                    cve=[f"CVE-2024-{1000 + i}"], cvss={"score": 7.5} if i % 2 else None,
                    raw={"i": i, "nested": {"list": [1, 2.5, None, True]}, "big": 2**63 - 1, "huge": 2**70})
            for i in range(start, start + count)]


def _stored(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT *, typeof(body) AS kind FROM findings ORDER BY seq").fetchall()


def test_a_batch_stores_the_contract_object_its_columns_and_distinct_version_7_ids(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite")
    findings = _findings(250)
    assert apply_sync(conn, [batches.findings_op("s", "lease", "nmap", findings, 10)]) == [1]
    rows = _stored(conn)
    assert [r["seq"] for r in rows] == list(range(10, 260))
    ids = set()
    for row, finding in zip(rows, findings, strict=True):
        body = json.loads(row["body"])
        assert row["kind"] == "text"
        assert body == contract_finding(finding, "s", "nmap", body["id"])
        assert (row["severity"], row["severity_rank"]) == (finding.severity, SEVERITIES.index(finding.severity))
        assert row["fingerprint"] == body["fingerprint"]
        assert (row["rule_id"], row["host"], row["ip"], row["port"]) == \
            (finding.rule_id, finding.host, finding.ip, finding.port)
        parsed = uuid.UUID(body["id"])
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == body["id"]
        ids.add(body["id"])
    assert len(ids) == len(rows)


def test_text_that_is_not_valid_unicode_and_nan_are_stored_as_valid_json(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite")
    odd = [Finding(rule_id="r", title="lone \udc80 surrogate"),
           Finding(rule_id="n", title="t", cvss={"score": math.nan})]
    apply_sync(conn, [batches.findings_op("s", "lease", "nmap", odd, 0)])
    bodies = [json.loads(r["body"]) for r in _stored(conn)]
    assert bodies[0]["title"] == "lone \udc80 surrogate"
    assert bodies[1]["cvss"] == {"score": None}


def test_the_lowest_seq_of_a_fingerprint_is_kept_whatever_order_batches_come_in(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite")
    later = _findings(40, 0) + _findings(5, 0)  # repeats within the batch too
    apply_sync(conn, [batches.findings_op("s", "lease", "nmap", later, 100)])
    apply_sync(conn, [batches.findings_op("s", "lease", "nmap", _findings(20, 0), 0)])
    rows = _stored(conn)
    assert [r["seq"] for r in rows] == [*range(20), *range(120, 140)]
    assert len({r["fingerprint"] for r in rows}) == len(rows) == 40
    apply_sync(conn, [batches.findings_op("s", "lease", "nmap", _findings(40, 0), 100)])  # a resent batch
    assert len(_stored(conn)) == 40


def test_a_lost_lease_stores_nothing_and_seqs_beyond_sqlite_are_refused(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite")
    assert apply_sync(conn, [batches.findings_op("s", "other", "nmap", _findings(5), 0)]) == [0]
    assert _stored(conn) == []
    with pytest.raises(ValueError):
        batches.findings_op("s", "lease", "nmap", _findings(3), batches.MAX_SEQ - 1)
    with pytest.raises(ValueError):
        batches.findings_op("s", "lease", "nmap", _findings(3), -1)


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[Writer]:
    _db(tmp_path / "db.sqlite").close()
    started = Writer(tmp_path / "db.sqlite")
    await started.start()
    yield started
    await started.stop()


def _count(path: Path) -> int:
    conn = connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM findings").fetchone()[0])
    finally:
        conn.close()


async def test_the_writer_remembers_fingerprints_between_batches(tmp_path: Path, writer: Writer) -> None:
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30), 0))
    reads: list[str] = []
    writer._conn._conn.set_trace_callback(reads.append)
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30, 15), 30))
    writer._conn._conn.set_trace_callback(None)
    assert not [sql for sql in reads if sql.startswith("SELECT fingerprint")]
    assert _count(tmp_path / "db.sqlite") == 45


async def test_a_finished_run_is_forgotten_and_late_findings_still_deduplicated(tmp_path: Path, writer: Writer) -> None:
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30), 0))
    assert ("fingerprints", "s") in writer._memo
    await writer.write(batches.forget("s"))
    assert ("fingerprints", "s") not in writer._memo
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30, 20), 30))  # read again
    assert _count(tmp_path / "db.sqlite") == 50


async def test_findings_deleted_on_the_writers_connection_are_stored_again(tmp_path: Path, writer: Writer) -> None:
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30), 0))
    await writer.write(Op([("DELETE FROM findings WHERE scan_id = 's' AND seq < 10", ())]))  # retention, say
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(30), 100))
    assert _count(tmp_path / "db.sqlite") == 30


async def test_findings_another_connection_wrote_are_not_stored_twice(tmp_path: Path, writer: Writer) -> None:
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(10), 0))
    other = connect(tmp_path / "db.sqlite")  # a CLI process
    apply_sync(other, [batches.findings_op("s", "lease", "nmap", _findings(10, 10), 10)])
    other.close()
    await writer.write(batches.findings_op("s", "lease", "nmap", _findings(20), 20))
    assert _count(tmp_path / "db.sqlite") == 20


async def test_a_failed_transaction_forgets_what_its_batches_remembered(tmp_path: Path, writer: Writer) -> None:
    # Both in one transaction: the findings op runs, the next op fails, the whole is rolled back
    # and applied again op by op. Remembered fingerprints of the rolled-back rows would drop them all.
    bad = Op([("INSERT INTO no_such_table VALUES (1)", ())])
    results = await asyncio.gather(
        writer.write(batches.findings_op("s", "lease", "nmap", _findings(10), 0)), writer.write(bad),
        return_exceptions=True)
    assert results[0] == [1] and isinstance(results[1], sqlite3.OperationalError)
    assert _count(tmp_path / "db.sqlite") == 10


def test_the_findings_rebuild_keeps_every_row_and_fills_the_filter_columns(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    for number, script in enumerate(schema.MIGRATIONS[:6], start=1):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t', 'default', 0)")
    conn.execute("INSERT INTO scans (id, tenant_id, scan_type, target, target_type, status, priority, timeout,"
                 " created_at, queued_at) VALUES ('s', 't', 'nmap', '127.0.0.1', 'ip', 'completed', 'normal',"
                 " 60, 0, 0)")
    bodies = [contract_finding(f, "s", "nmap", f"id-{f.raw['i']}") for f in _findings(12)]
    for seq, body in enumerate(bodies):
        conn.execute("INSERT INTO findings (id, scan_id, seq, severity_rank, severity, fingerprint, body)"
                     " VALUES (?, 's', ?, ?, ?, ?, ?)", (body["id"], seq, SEVERITIES.index(body["severity"]),
                                                         body["severity"], body["fingerprint"], json.dumps(body)))
    migrate(conn)
    rows = _stored(conn)
    assert [json.loads(r["body"]) for r in rows] == bodies
    assert [(r["rule_id"], r["host"], r["ip"], r["port"]) for r in rows] == \
        [(b["ruleId"], b["host"], b["ip"], b["port"]) for b in bodies]
    conn.execute("DELETE FROM scans WHERE id = 's'")  # the cascade still holds
    assert _stored(conn) == []
