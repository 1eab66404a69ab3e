"""A findings batch as one write op: each finding's stored JSON encoded by msgspec into one blob, one
``INSERT`` that cuts the rows out of it in SQLite's C code, and a repeated fingerprint dropped on the
writer's thread, from what it remembers of the scan's fingerprints instead of a unique index.

A unique ``(scan_id, fingerprint)`` index cost the writer more than anything else per finding: the
fingerprints are hashes, so every batch changed index pages all over a large scan, each written to
the WAL at every commit. The writer now remembers each running scan's fingerprints (read once from
the table, and again whenever they could have changed behind it: another lease, a deleted finding,
another connection's write, a failed transaction).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from appliance import clock
from appliance.scanning.lifecycle import holds_lease
from appliance.scanning.model import FINDING_FIELDS, SEVERITY_RANK, FindingLike, finding_struct
from appliance.store.ops import Memo, Op
from engines.base import fingerprint_of

MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a batch's seqs stay at or below it
# A finding's fields are encoded as FindingStruct names them: by their Python names, which are the
# contract's but for the first, rule_id, which the insert renames to ruleId. The insert puts the id,
# scanId and engine before them and the fingerprint and detectedBy after them.
_FIRST = b'{"rule_id":'
_ENCODER = msgspec.json.Encoder()
# One fixed-width ASCII record per finding: severity rank, fingerprint, the lengths of its encoded
# fields and of its encoded filter values (ruleId, host, ip, port: a JSON array, read back by the
# insert into the filter columns, as json_extract reads them from the stored body).
_FP, _LEN = 32, 12
_RECORD = 1 + _FP + 2 * _LEN
_SEVERITY_OF_RANK = " ".join(f"WHEN {rank} THEN '{name}'" for name, rank in SEVERITY_RANK.items())
# ?1 scan id, ?2 records, ?3 each finding's encoded fields and filter values one after another, ?4
# first seq, ?5 row count, ?6 and ?7 the ids' prefix and start (clock.id_block), ?8 the engine and ?9
# the scan id as JSON strings, ?10 one character per row: '1' stored, '0' a fingerprint the scan has
# already. A blob's substr is by byte.
_BODY_LEN = f"CAST(substr(r, {2 + _FP}, {_LEN}) AS INTEGER)"
_FILTERS_LEN = f"CAST(substr(r, {2 + _FP + _LEN}) AS INTEGER)"
_INSERT = (
    f"WITH RECURSIVE n(k, r, at) AS (SELECT 0, substr(?2, 1, {_RECORD}), 1 UNION ALL"
    f" SELECT k + 1, substr(?2, (k + 1) * {_RECORD} + 1, {_RECORD}), at + {_BODY_LEN} + {_FILTERS_LEN}"
    " FROM n WHERE k + 1 < ?5),"
    f" rows AS (SELECT k, CAST(substr(r, 1, 1) AS INTEGER) AS rank,"
    f" CAST(substr(r, 2, {_FP}) AS TEXT) AS fp,"
    " '{\"id\":\"' || printf('%s%012x', ?6, ?7 + k) || '\",\"scanId\":' || ?9 || ',\"engine\":' || ?8 || ','"
    f" || '\"ruleId\":' || CAST(substr(?3, at + {len(_FIRST)}, {_BODY_LEN} - {len(_FIRST) + 1}) AS TEXT)"
    f" || ',\"fingerprint\":\"' || CAST(substr(r, 2, {_FP}) AS TEXT) || '\",\"detectedBy\":[' || ?8 || ']}}' AS body,"
    f" CAST(substr(?3, at + {_BODY_LEN}, {_FILTERS_LEN}) AS TEXT) AS filters"
    " FROM n WHERE substr(?10, k + 1, 1) = '1')"
    " INSERT INTO findings (scan_id, seq, severity_rank, severity, fingerprint, rule_id, host, ip, port, body)"
    f" SELECT ?1, ?4 + k, rank, CASE rank {_SEVERITY_OF_RANK} END, fp, json_extract(filters, '$[0]'),"
    " json_extract(filters, '$[1]'), json_extract(filters, '$[2]'), json_extract(filters, '$[3]'), body FROM rows")


class BatchEncoder:
    """Findings (objects, a remote worker's decoded entries, or fields by name) encoded for one
    findings op, a slice at a time: the intake serves other requests between slices."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.fingerprints: list[str] = []
        self._records: list[str] = []
        self._fields = bytearray()

    def __len__(self) -> int:
        return len(self.fingerprints)

    def add(self, findings: Sequence[FindingLike]) -> None:
        engine, fields = self.engine, self._fields
        for finding in findings:
            f = finding_struct(finding)
            fingerprint = fingerprint_of(engine, f.rule_id, f.host, f.ip, f.port, f.protocol, f.url, f.parameter)
            start = len(fields)
            try:
                _ENCODER.encode_into(f, fields, -1)
                middle = len(fields)
                _ENCODER.encode_into((f.rule_id, f.host, f.ip, f.port), fields, -1)
            except (UnicodeEncodeError, TypeError, ValueError, msgspec.EncodeError):
                # Text that is not valid Unicode: \u-escaped by json, as before; what json refuses too
                # (a key that is no string) fails the batch.
                del fields[start:]
                fields += json.dumps(dict(zip(FINDING_FIELDS, msgspec.structs.astuple(f), strict=True)),
                                     allow_nan=False, separators=(",", ":")).encode()
                middle = len(fields)
                fields += json.dumps([f.rule_id, f.host, f.ip, f.port], allow_nan=False).encode()
            self.fingerprints.append(fingerprint)
            self._records.append(f"{SEVERITY_RANK[f.severity]}{fingerprint}{middle - start:0{_LEN}d}"
                                 f"{len(fields) - middle:0{_LEN}d}")

    def op(self, scan_id: str, lease_id: str, first_seq: int) -> Op:
        """The batch, stored only while ``lease_id`` holds the scan, numbered from ``first_seq``."""
        if not 0 <= first_seq <= MAX_SEQ - len(self):
            raise ValueError(f"seqs {first_seq}..{first_seq + len(self)} are out of SQLite's range")
        if not self.fingerprints:
            return Op([holds_lease(scan_id, lease_id)], guarded=True)
        prefix, start = clock.id_block()
        params = (scan_id, "".join(self._records).encode("ascii"), bytes(self._fields), first_seq, len(self),
                  prefix, start, json.dumps(self.engine), json.dumps(scan_id))
        return Op([holds_lease(scan_id, lease_id)], guarded=True, bounded=True,
                  then=_Insert(scan_id, lease_id, first_seq, self.fingerprints, params))


def findings_op(scan_id: str, lease_id: str, engine: str, findings: Sequence[FindingLike], first_seq: int) -> Op:
    """``findings`` as one op (see :class:`BatchEncoder`)."""
    encoder = BatchEncoder(engine)
    encoder.add(findings)
    return encoder.op(scan_id, lease_id, first_seq)


@dataclass(frozen=True)
class _Insert:
    """The insert, once the guard held: a fingerprint the scan has already is stored once, as the
    finding the worker found first (lowest seq), whichever batch came first — a worker keeps several
    batches in flight (appliance.scanning.sender), so they may arrive out of order."""

    scan_id: str
    lease_id: str
    first_seq: int
    fingerprints: list[str]
    params: tuple[Any, ...]

    def __call__(self, conn: sqlite3.Connection, memo: Memo) -> None:
        seen = _seen(conn, memo, self.scan_id, self.lease_id)
        keep = bytearray(b"1" * len(self.fingerprints))
        replaced = []
        for k, fingerprint in enumerate(self.fingerprints):
            seq = self.first_seq + k
            stored = seen.seqs.get(fingerprint)
            if stored is None or seq < stored:
                seen.seqs[fingerprint] = seq
                if stored is not None:
                    replaced.append(stored)
            else:
                keep[k] = ord("0")
        if replaced:
            conn.execute("DELETE FROM findings WHERE scan_id = ? AND seq IN (SELECT value FROM json_each(?))",
                         (self.scan_id, json.dumps(replaced)))
            seen.deletes = _deletes(conn, self.scan_id)  # its own deletes: nothing it does not know
        conn.execute(_INSERT, (*self.params, keep.decode("ascii")))


@dataclass
class _Seen:
    lease_id: str
    deletes: int  # the connection's count of deleted findings when ``seqs`` was last right
    seqs: dict[str, int]  # fingerprint -> seq of the finding stored for it


MAX_SCANS = 8  # running scans whose fingerprints the writer keeps (the rest are read again when needed)
_KEY = "fingerprints"
_VERSION = "data_version"  # PRAGMA data_version when the remembered fingerprints were last right


def forget(scan_id: str) -> Op:
    """Drops what the writer remembers of the scan's fingerprints (its run ended: a large scan's would
    otherwise stay in memory until other scans push them out). Late findings read them again."""
    return Op([], then=lambda _conn, memo: memo.pop((_KEY, scan_id), None))


def _seen(conn: sqlite3.Connection, memo: Memo, scan_id: str, lease_id: str) -> _Seen:
    """The scan's stored fingerprints, as remembered, or read from the table when they may have
    changed since: another connection wrote, another lease (a retry's claim deleted the findings), or
    a finding of the scan deleted since by anything else (retention): ``scans.findings_deleted``
    counts them (a trigger)."""
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    if memo.get(_VERSION) != version:  # another connection (a CLI process) wrote since: forget all scans
        for old in [k for k in memo if isinstance(k, tuple) and k[0] == _KEY]:
            del memo[old]
        memo[_VERSION] = version
    deletes = _deletes(conn, scan_id)
    key = (_KEY, scan_id)
    seen: _Seen | None = memo.pop(key, None)
    if seen is None or seen.lease_id != lease_id or seen.deletes != deletes:
        seqs: dict[str, int] = {}
        for fingerprint, seq in conn.execute("SELECT fingerprint, seq FROM findings WHERE scan_id = ?", (scan_id,)):
            if seqs.setdefault(fingerprint, seq) > seq:
                seqs[fingerprint] = seq
        seen = _Seen(lease_id, deletes, seqs)
    memo[key] = seen  # the most recently used last
    scans = [k for k in memo if isinstance(k, tuple) and k[0] == _KEY]
    for old in scans[:-MAX_SCANS]:
        del memo[old]
    return seen


def _deletes(conn: sqlite3.Connection, scan_id: str) -> int:
    return int(conn.execute("SELECT findings_deleted FROM scans WHERE id = ?", (scan_id,)).fetchone()[0])
