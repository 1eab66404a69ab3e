"""Signed result reports, generated while they are sent.

A report document is ``{"report": R, "signature": S}``, written as JCS (RFC 8785) with ``report``
first: R's bytes are produced finding by finding and fed to SHA-512 as they go out, and the signature
block S, over that digest, is computed once the last finding has been sent. Memory stays flat
whatever the number of findings; the findings are read from one read transaction, so R is one
consistent snapshot of the scan.

R holds ``appliance`` (hostname, version), ``engine`` (scan type, name, installed version), every
finding in results order, ``format``, the ``scan`` object and its ``summary``; no time of its own,
so the same finished scan gives the same bytes (the signing time is in the signed statement).

The same machinery makes the byte streams that detached signatures cover (:data:`SIGNABLE`).
"""
from __future__ import annotations

import array
import hashlib
import sqlite3
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.scanning import model
from appliance.signing import jcs
from appliance.signing.keys import KeyRing
from appliance.signing.signature import sign
from appliance.store import connect

REPORT_FORMAT = "cix-report/1"
CHUNK_BYTES = 64 * 1024
FETCH_ROWS = 500


@dataclass(frozen=True)
class Origin:
    """What produced the report, beyond the scan itself."""

    hostname: str
    appliance_version: str
    engine_name: str | None
    engine_version: str | None


class Snapshot:
    """One read transaction over the database: every byte of a report comes from the same state,
    however long the download takes."""

    def __init__(self, db_path: Path, busy_timeout_ms: int) -> None:
        self._conn = connect(db_path, busy_timeout_ms, readonly=True)
        self._conn.execute("BEGIN")

    def scan(self, scan_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def finding_bodies(self, scan_id: str) -> Iterator[str]:
        cursor = self._conn.execute("SELECT body FROM findings WHERE scan_id = ? ORDER BY severity_rank, seq",
                                    (scan_id,))
        while rows := cursor.fetchmany(FETCH_ROWS):
            for row in rows:
                yield row[0]

    def close(self) -> None:
        try:
            self._conn.execute("COMMIT")
        finally:
            self._conn.close()


class _Digest:
    """SHA-512 on a helper thread: hashlib releases the GIL while it hashes a large buffer, so one
    piece is hashed while the next is encoded, and the digest costs the download almost no time.
    Chunks are handed over :data:`_HAND_OVER` bytes at a time: each hand-over costs the encoding
    thread a GIL switch, and per 64 KiB chunk those cost more than the hashing itself. A single
    worker keeps the pieces in order; at most :data:`_AHEAD` wait."""

    _AHEAD = 2
    _HAND_OVER = 1 << 20

    def __init__(self) -> None:
        self._hash = hashlib.sha512()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="report-digest")
        self._pending: deque[Future[None]] = deque()
        self._buffer: list[bytes] = []
        self._size = 0

    def update(self, data: bytes) -> None:
        self._buffer.append(data)
        self._size += len(data)
        if self._size >= self._HAND_OVER:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._buffer:
            return
        piece = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer, self._size = [], 0
        self._pending.append(self._pool.submit(self._hash.update, piece))
        while len(self._pending) > self._AHEAD:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        self._hand_over()
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()


class _Out:
    """Text pieces → UTF-8 chunks of about :data:`CHUNK_BYTES`, fed to ``digest`` as they go out.
    With ``locate``, the CRC-32 of each finding's bytes is kept (4 bytes a finding): the
    signature block carries them so that a verifier can name the finding that was changed."""

    def __init__(self, digest: _Digest | None, locate: bool) -> None:
        self.digest = digest
        self.crcs: array.array[int] | None = array.array("I") if locate else None
        self._buffer: list[bytes] = []
        self._size = 0
        self._in_list = False  # the last piece was a finding: the next finding follows a comma

    def add(self, text: str, finding: bool = False) -> bytes | None:
        data = text.encode("utf-8")
        if finding:
            if self._in_list:
                self._buffer.append(b",")
                self._size += 1
            self._in_list = True
            if self.crcs is not None:
                self.crcs.append(zlib.crc32(data))
        else:
            self._in_list = False
        self._buffer.append(data)
        self._size += len(data)
        return self.flush() if self._size >= CHUNK_BYTES else None

    def flush(self) -> bytes | None:
        if not self._buffer:
            return None
        chunk = b"".join(self._buffer)
        self._buffer, self._size = [], 0
        if self.digest is not None:
            self.digest.update(chunk)
        return chunk


def _emit(parts: Iterator[tuple[str, bool]], out: _Out) -> Iterator[bytes]:
    for text, finding in parts:
        chunk = out.add(text, finding)
        if chunk is not None:
            yield chunk
    chunk = out.flush()
    if chunk is not None:
        yield chunk


def _findings(snapshot: Snapshot, scan_id: str) -> Iterator[tuple[str, bool]]:
    """Each finding's JCS text (:class:`_Out` puts the commas between them)."""
    for body in snapshot.finding_bodies(scan_id):
        yield jcs.from_json(body), True


def members(scan: sqlite3.Row, origin: Origin) -> dict[str, Any]:
    """Every member of the ``report`` object but ``findings``."""
    return {"appliance": {"hostname": origin.hostname, "version": origin.appliance_version},
            "engine": {"scanType": scan["scan_type"], "name": origin.engine_name, "version": origin.engine_version},
            "format": REPORT_FORMAT, "scan": model.scan_json(scan), "summary": model.summary_json(scan)}


def report_parts(snapshot: Snapshot, scan: sqlite3.Row, origin: Origin) -> Iterator[tuple[str, bool]]:
    """The JCS text of the ``report`` member, in pieces (flagged when the piece is one finding)."""
    rest = members(scan, origin)
    # JCS orders members by name: appliance, engine | findings | format, scan, summary.
    head = jcs.dumps({name: rest.pop(name) for name in ("appliance", "engine")})
    yield head[:-1] + ',"findings":[', False
    yield from _findings(snapshot, scan["id"])
    yield "]," + jcs.dumps(rest)[1:], False


def results_parts(snapshot: Snapshot, scan: sqlite3.Row, origin: Origin) -> Iterator[tuple[str, bool]]:
    """The JCS text of the complete ``GET /scans/:id/results`` data object (every page, no filter)."""
    yield '{"findings":[', False
    yield from _findings(snapshot, scan["id"])
    rest = {"scanId": scan["id"], "scanType": scan["scan_type"], "status": scan["status"],
            "summary": model.summary_json(scan)}
    yield "]," + jcs.dumps(rest)[1:], False


def locators(report_members: dict[str, Any], finding_crcs: Iterable[int]) -> dict[str, Any]:
    """CRC-32s of each member's JCS bytes and of each finding's: not signed, only a help to name
    what was changed once the signed digest no longer matches."""
    crcs = array.array("I", finding_crcs)
    if sys.byteorder == "little":
        crcs.byteswap()
    return {"algorithm": "CRC-32", "findings": crcs.tobytes().hex(),
            "members": {name: f"{zlib.crc32(jcs.canonical(value)):08x}"
                        for name, value in sorted(report_members.items()) if name != "findings"}}


def _bytes_of(parts: Callable[[Snapshot, sqlite3.Row, Origin], Iterator[tuple[str, bool]]]
              ) -> Callable[[Snapshot, sqlite3.Row, Origin], Iterator[bytes]]:
    return lambda snapshot, scan, origin: _emit(parts(snapshot, scan, origin), _Out(None, locate=False))


# Formats a detached signature may cover, made here from one snapshot: format -> its bytes for a
# scan. (The export formats, sarif, csv and jsonl, are signed by appliance.api.results over the
# bytes appliance.exports produces.)
SIGNABLE: dict[str, Callable[[Snapshot, sqlite3.Row, Origin], Iterator[bytes]]] = {
    "report": _bytes_of(report_parts),
    "json": _bytes_of(results_parts),
}


def document(db_path: Path, busy_timeout_ms: int, scan_id: str, origin: Origin,
             keyring: KeyRing | None) -> Iterator[bytes]:
    """The report document's bytes. Without ``keyring`` the same bytes are made but neither hashed
    nor signed (``"signature": null``): the baseline the signing cost is measured against."""
    snapshot = Snapshot(db_path, busy_timeout_ms)
    try:
        scan = snapshot.scan(scan_id)
        if scan is None:
            raise LookupError(f"scan {scan_id} is gone")
        out = _Out(_Digest() if keyring is not None else None, locate=keyring is not None)
        try:
            yield b'{"report":'
            yield from _emit(report_parts(snapshot, scan, origin), out)
            if keyring is None or out.digest is None or out.crcs is None:
                yield b',"signature":null}'
                return
            block = sign(keyring, "report", "SHA-512", out.digest.hexdigest(), {"scanId": scan_id})
        finally:
            if out.digest is not None:
                out.digest.close()
        block["locators"] = locators(members(scan, origin), out.crcs)
        yield b',"signature":' + jcs.canonical(block) + b"}"
    finally:
        snapshot.close()


def detached(db_path: Path, busy_timeout_ms: int, scan_id: str, origin: Origin, keyring: KeyRing,
             fmt: str) -> dict[str, Any]:
    """A detached signature over the bytes ``fmt`` produces for the scan, from one snapshot."""
    snapshot = Snapshot(db_path, busy_timeout_ms)
    try:
        scan = snapshot.scan(scan_id)
        if scan is None:
            raise LookupError(f"scan {scan_id} is gone")
        digest = _Digest()
        try:
            for chunk in SIGNABLE[fmt](snapshot, scan, origin):
                digest.update(chunk)
            hexdigest = digest.hexdigest()
        finally:
            digest.close()
    finally:
        snapshot.close()
    return sign(keyring, "export", "SHA-512", hexdigest, {"scanId": scan_id, "format": fmt})

