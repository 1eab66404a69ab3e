"""Whole result sets as files: SARIF 2.1.0, CSV and JSON Lines, streamed in chunks.

Findings are read with a keyset cursor in chunks of :data:`CHUNK` rows, so an export of 100,000
findings holds one chunk in memory, never the set. :func:`export_chunks` is the one writer: it yields
the exported bytes and nothing else, in a deterministic order (severity, then the scanner's order)
and with no timestamps of its own, so that the same finished scan always exports to the same bytes.
That is the hook for a signature over a report: run it once to hash (memory stays flat), then stream.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec

from appliance.store import Reader

CHUNK = 1000
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "cixFindingFingerprint/v1"
CSV_COLUMNS = ("id", "scanId", "engine", "ruleId", "title", "severity", "confidence", "host", "ip", "port",
               "protocol", "url", "parameter", "cve", "cwe", "cvssScore", "cvssVector", "description", "evidence",
               "remediation", "references", "fingerprint")
# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(_FORMULA_START)
_DIRECT_COLUMNS = tuple(c for c in CSV_COLUMNS if c not in ("cvssScore", "cvssVector"))
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub ranks alerts by ``security-severity``: 9.0+ critical, 7.0+ high, 4.0+ medium, above 0 low.
_SECURITY_SEVERITY = {"critical": 9.5, "high": 8.0, "medium": 5.5, "low": 2.0, "info": 0.0}
_PRECISION = {"high": "high", "medium": "medium", "low": "low"}
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Format:
    media_type: str
    extension: str


FORMATS = {
    "sarif": Format("application/sarif+json", "sarif"),
    "csv": Format("text/csv; charset=utf-8; header=present", "csv"),
    "jsonl": Format("application/x-ndjson", "jsonl"),
}


def iter_bodies(reader: Reader, where: str, params: Sequence[Any], chunk: int = CHUNK) -> Iterator[list[str]]:
    """Finding bodies (stored JSON text) matching ``where``, chunk by chunk, in results order. The
    cursor is the last (severity_rank, seq, rowid) seen: each chunk is one index range, whatever
    the offset (OFFSET would re-read every earlier row)."""
    last: tuple[int, int, int] = (-1, -1, -1)
    while True:
        rows = reader.all(f"SELECT severity_rank, seq, rowid, body FROM findings WHERE {where}"
                          " AND (severity_rank, seq, rowid) > (?, ?, ?) ORDER BY severity_rank, seq, rowid LIMIT ?",
                          [*params, *last, chunk])
        if not rows:
            return
        yield [r["body"] for r in rows]
        if len(rows) < chunk:
            return
        tail = rows[-1]
        last = (tail["severity_rank"], tail["seq"], tail["rowid"])


def export_chunks(fmt: str, reader: Reader, where: str, params: Sequence[Any], scan_type: str,
                  version_of: Callable[[str], str | None] | None = None) -> Iterator[bytes]:
    """The exported bytes of the findings matching ``where`` (a ``findings`` filter), chunk by chunk.
    ``version_of(engine)`` gives the scanner version shown in SARIF's ``tool.driver``; it is asked
    only for the engines the export holds, from the thread that iterates."""
    if fmt == "jsonl":
        for bodies in iter_bodies(reader, where, params):
            yield ("\n".join(bodies) + "\n").encode()
    elif fmt == "csv":
        yield _csv_rows([CSV_COLUMNS])
        for bodies in iter_bodies(reader, where, params):
            yield _csv_rows([csv_row(_decode(b)) for b in bodies])
    elif fmt == "sarif":
        yield from _sarif(reader, where, params, scan_type, version_of or (lambda _engine: None))
    else:
        raise ValueError(f"unknown export format {fmt!r}")


def _decode(body: str) -> dict[str, Any]:
    try:
        value: dict[str, Any] = msgspec.json.decode(body)
    except msgspec.DecodeError:  # a lone surrogate escape msgspec refuses; the stdlib reads it
        value = json.loads(body)
    return value


def _encode(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except (UnicodeEncodeError, msgspec.EncodeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


# -- CSV -------------------------------------------------------------------------------------------
def safe_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: lists joined, formulas defused with a leading ``'``."""
    if value is None:
        return ""
    text: str = value if type(value) is str else " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return "'" + text if text[:1] in _FORMULA_FIRST else text


def csv_row(finding: Mapping[str, Any]) -> list[str]:
    cvss = finding.get("cvss") or {}
    row = {c: safe_cell(finding.get(c)) for c in _DIRECT_COLUMNS}
    row["cvssScore"], row["cvssVector"] = safe_cell(cvss.get("score")), safe_cell(cvss.get("vector"))
    return [row[c] for c in CSV_COLUMNS]


def _csv_rows(rows: list[Sequence[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)  # RFC 4180: CRLF, quotes doubled
    return out.getvalue().encode("utf-8", "backslashreplace")


# -- SARIF -----------------------------------------------------------------------------------------
def artifact_uri(finding: Mapping[str, Any]) -> str:
    """A repository-relative location: code scanning refuses URI schemes other than files, so a URL
    becomes ``host[_port]/path`` and a service ``host/protocol_port`` (the full address stays in the
    result's properties)."""
    url = finding.get("url")
    if url:
        parts = urlsplit(url)
        if parts.scheme and parts.hostname:
            host = parts.hostname + (f"_{parts.port}" if parts.port else "")
            path = f"{host}{parts.path or '/'}"
        else:  # a path (an artifact scanned by name)
            path = url.lstrip("/")
    else:
        host = finding.get("host") or finding.get("ip") or "target"
        port = finding.get("port")
        path = f"{host}/{finding.get('protocol') or 'tcp'}_{port}" if port else str(host)
    return quote(path, safe="/-._~") or "target"


def _help_uri(references: Any) -> str | None:
    for ref in references or ():
        if isinstance(ref, str) and ref.startswith(("https://", "http://")) and not any(c.isspace() for c in ref):
            return ref
    return None


class _Rules:
    """The rules of one run, indexed in the order results first use them."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.index: dict[str, int] = {}
        self.rules: list[dict[str, Any]] = []

    def use(self, finding: Mapping[str, Any]) -> int:
        rule_id = str(finding.get("ruleId"))
        severity = str(finding.get("severity", "info"))
        score = _score(finding)
        found = self.index.get(rule_id)
        if found is not None:
            props = self.rules[found]["properties"]
            if score > float(props["security-severity"]):
                props["security-severity"] = f"{score:.1f}"
            return found
        self.index[rule_id] = len(self.rules)
        title = str(finding.get("title") or rule_id)
        rule: dict[str, Any] = {
            "id": rule_id, "shortDescription": {"text": title},
            "fullDescription": {"text": str(finding.get("description") or title)},
            "help": {"text": str(finding.get("remediation") or finding.get("description") or title)},
            "defaultConfiguration": {"level": _LEVEL.get(severity, "note")},
            "properties": {"tags": ["security", self.engine, *[str(c) for c in finding.get("cwe") or ()]],
                           "security-severity": f"{score:.1f}",
                           "precision": _PRECISION.get(str(finding.get("confidence")), "medium")},
        }
        help_uri = _help_uri(finding.get("references"))
        if help_uri:
            rule["helpUri"] = help_uri
        self.rules.append(rule)
        return self.index[rule_id]


def _score(finding: Mapping[str, Any]) -> float:
    cvss = finding.get("cvss")
    if isinstance(cvss, dict) and isinstance(cvss.get("score"), (int, float)) and 0 <= cvss["score"] <= 10:
        return float(cvss["score"])
    return _SECURITY_SEVERITY.get(str(finding.get("severity")), 0.0)


_RESULT_PROPERTIES = ("engine", "severity", "confidence", "host", "ip", "port", "protocol", "url", "parameter",
                      "cve", "cwe", "cvss", "evidence", "references", "id", "scanId")


def sarif_result(finding: Mapping[str, Any], rule_index: int) -> dict[str, Any]:
    severity = str(finding.get("severity", "info"))
    return {
        "ruleId": str(finding.get("ruleId")), "ruleIndex": rule_index, "level": _LEVEL.get(severity, "note"),
        "message": {"text": str(finding.get("title") or finding.get("ruleId"))},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(finding)},
                                            "region": {"startLine": 1}}}],
        "partialFingerprints": {FINGERPRINT_KEY: str(finding.get("fingerprint"))},
        "properties": {k: v for k in _RESULT_PROPERTIES if (v := finding.get(k)) or v == 0},  # not null or empty
    }


def _sarif(reader: Reader, where: str, params: Sequence[Any], scan_type: str,
           version_of: Callable[[str], str | None]) -> Iterator[bytes]:
    """One run per engine: results stream first, then the run's ``tool`` with the rules they used
    (JSON members are unordered, and rules are known only once every result was seen)."""
    engines = [r[0] for r in reader.all(f"SELECT DISTINCT json_extract(body, '$.engine') FROM findings WHERE {where}"
                                        " ORDER BY 1", params) if r[0]] or [scan_type]
    yield b'{"$schema":"' + SARIF_SCHEMA.encode() + b'","version":"2.1.0","runs":['
    for number, engine in enumerate(engines):
        rules = _Rules(engine)
        yield (b"," if number else b"") + b'{"results":['
        clause, args = (where, list(params)) if len(engines) == 1 else \
            (f"{where} AND json_extract(body, '$.engine') = ?", [*params, engine])
        first = True
        for bodies in iter_bodies(reader, clause, args):
            parts = []
            for body in bodies:
                finding = _decode(body)
                parts.append(_encode(sarif_result(finding, rules.use(finding))))
            yield (b"" if first else b",") + b",".join(parts)
            first = False
        driver: dict[str, Any] = {"name": engine, "rules": rules.rules}
        version = version_of(engine)
        if version:
            driver["version"] = version
        yield b'],"tool":' + _encode({"driver": driver}) + b',"columnKind":"utf16CodeUnits"}'
    yield b"]}"
