"""findings_op: a batch as one statement (rows packed into two blobs) stores exactly what the
row-by-row insert stored, and rows it cannot pack still go row by row."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.scanning import model
from appliance.store.db import connect, migrate
from appliance.store.ops import Op, apply_sync
from engines.base import SEVERITIES, Finding

_COLUMNS = "id, scan_id, seq, severity_rank, severity, fingerprint, body, typeof(body), typeof(seq)"


def _db(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    migrate(conn)
    conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t', 'default', 0)")
    conn.execute("INSERT INTO scans (id, tenant_id, scan_type, target, target_type, status, priority, timeout,"
                 " created_at, queued_at, lease_id) VALUES ('s', 't', 'nmap', '127.0.0.1', 'ip', 'running',"
                 " 'normal', 60, 0, 0, 'lease')")
    return conn


def _findings(count: int) -> list[Finding]:
    return [Finding(rule_id=f"rule-{i % 7}", title=f"Fünf \u2603 {i} \"quoted\" \\ \U0001f600",
                    severity=SEVERITIES[i % 5], host="127.0.0.1" if i % 3 else None, ip="192.0.2.1",
                    port=i % 4 or None, url=f"https://x/{i % 11}", description="\x00\x1f control " * (i % 3),
                    cve=[f"CVE-2024-{1000 + i}"], cvss={"score": 7.5} if i % 2 else None,
                    raw={"i": i, "nested": {"list": [1, 2.5, None, True]}, "big": 2**63 - 1})
            for i in range(count)]


def _row_by_row(rows: list[model.FindingRow]) -> Op:
    return Op([("UPDATE scans SET heartbeat_at = 1 WHERE id = 's' AND lease_id = 'lease'", ()),
               (model._INSERT, ())], many={1: rows}, guarded=True)


def _stored(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM findings ORDER BY seq")]


def test_a_batch_is_one_statement_and_stores_what_row_by_row_stored(tmp_path: Path) -> None:
    packed, plain = _db(tmp_path / "a.sqlite"), _db(tmp_path / "b.sqlite")
    # Duplicated fingerprints within and across batches, out of order: the lowest seq is kept.
    batches = [(model.finding_rows("s", "nmap", _findings(40), 100)),
               (model.finding_rows("s", "nmap", _findings(60), 0))]
    for rows in batches:
        op = model.findings_op("s", "lease", rows)
        assert not op.many and len(op.statements) == 2  # no executemany: one statement for the batch
        assert apply_sync(packed, [op]) == [1]
        apply_sync(plain, [_row_by_row(rows)])
    stored = _stored(packed)
    assert stored == _stored(plain)
    assert len(stored) == len({r[5] for r in stored}) > 0
    by_id = {r[0]: r for r in stored}
    for rows in batches:
        for row in rows:
            if row[0] in by_id:
                assert by_id[row[0]][:7] == row  # the body byte for byte, the columns as given


_BASE = model.finding_rows("s", "nmap", _findings(3), 0)


@pytest.mark.parametrize("odd, seqs", [
    # an id of another length would shift every field after it in its fixed-width record
    ([("short-id", *_BASE[0][1:]), *_BASE[1:]], [0, 1, 2]),
    ([(_BASE[0][0][:-1] + "\u00e9", *_BASE[0][1:]), *_BASE[1:]], [0, 1, 2]),  # not ASCII
    ([_BASE[0], (*_BASE[1][:2], 7, *_BASE[1][3:]), _BASE[2]], [0, 2, 7]),  # seqs not counted up by one
    ([_BASE[0], (*_BASE[1][:3], 0, *_BASE[1][4:]), _BASE[2]], [0, 1, 2]),  # a rank not its severity's
])
def test_rows_that_cannot_be_packed_go_row_by_row(tmp_path: Path, odd: list[model.FindingRow],
                                                  seqs: list[int]) -> None:
    conn = _db(tmp_path / "db.sqlite")
    op = model.findings_op("s", "lease", odd)
    assert op.many
    apply_sync(conn, [op])
    assert sorted(tuple(r[:7]) for r in _stored(conn)) == sorted(odd)
    assert [r[2] for r in _stored(conn)] == seqs


@pytest.mark.parametrize("first_seq", [-1, 2**63 - 2])
def test_seqs_out_of_sqlite_range_are_not_packed(first_seq: int) -> None:
    rows = model.finding_rows("s", "nmap", _findings(3), first_seq)
    assert model.findings_op("s", "lease", rows).many


def test_a_lost_lease_stores_nothing(tmp_path: Path) -> None:
    conn = _db(tmp_path / "db.sqlite")
    assert apply_sync(conn, [model.findings_op("s", "other", model.finding_rows("s", "nmap", _findings(5), 0))]) == [0]
    assert conn.execute("SELECT count(*) FROM findings").fetchone()[0] == 0
