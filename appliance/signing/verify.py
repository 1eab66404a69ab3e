"""Offline verification of signed reports and detached signatures: no data dir, no network, only
the file and, ideally, the appliance's public keys pinned by the verifier.

Without pinned keys a document is checked against the public keys it carries itself. That proves
it was not changed since it was signed, not who signed it: anyone can sign a forged report with keys
of their own and embed those.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.signing import jcs
from appliance.signing.keys import ALGORITHMS, PublicKey, load_public_pem
from appliance.signing.report import locators
from appliance.signing.signature import Trusted, check, embedded_keys, parse_header_value

INTEGRITY_ONLY = ("checked against the public keys embedded in the document itself: this proves it was not "
                  "changed since it was signed, NOT that this appliance signed it. Pin the appliance's keys "
                  "(cix-appliance signing-key show --pem, or GET /api/v1/signing-key) with --public-key to "
                  "prove its origin.")


@dataclass(frozen=True)
class Result:
    ok: bool
    message: str
    pinned: bool = False


def pinned_keys(paths: Iterable[Path]) -> Trusted | None:
    """The keys in the given PEM files (each may hold several), or None when no file is given."""
    keys: list[PublicKey] = []
    for path in paths:
        try:
            keys += load_public_pem(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return Trusted.of(keys) if keys else None


def _signers(key_ids: tuple[str, ...]) -> str:
    return " and ".join(f"{alg} key {kid}" for alg, kid in zip(ALGORITHMS, key_ids, strict=True))


def verify_report(data: bytes, pinned: Trusted | None) -> Result:
    """A report document as ``GET /scans/:id/report`` serves it (or any re-serialization of it)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return Result(False, f"not a JSON document ({exc})")
    if not isinstance(doc, dict) or not isinstance(doc.get("report"), dict) or "signature" not in doc:
        return Result(False, "not a report document (an object with \"report\" and \"signature\")")
    block, report = doc["signature"], doc["report"]
    if not isinstance(block, dict):
        return Result(False, "the report is not signed")
    trusted = pinned or embedded_keys(block)
    verdict = check(block, trusted, "report")
    if not verdict.ok:
        return Result(False, f"signature: {verdict.problem}", trusted.pinned)
    stmt = block["statement"]
    digest = hashlib.sha512(jcs.canonical(report)).hexdigest()
    if digest != stmt.get("digest"):
        return Result(False, "the report was changed after it was signed: " + _what_changed(report, block),
                      trusted.pinned)
    scan = report.get("scan") if isinstance(report.get("scan"), dict) else {}
    if stmt.get("scanId") != scan.get("id"):
        return Result(False, f"the signature is for scan {stmt.get('scanId')}, the report shows scan {scan.get('id')}",
                      trusted.pinned)
    findings = report.get("findings") if isinstance(report.get("findings"), list) else []
    return Result(True, f"report of scan {scan.get('id')} ({scan.get('scanType')}, {scan.get('status')}, "
                  f"{len(findings)} findings) is intact; signed {stmt.get('signedAt')} by "
                  f"{_signers(verdict.key_ids)}", trusted.pinned)


def _what_changed(report: Mapping[str, Any], block: Mapping[str, Any]) -> str:
    """Name the changed members and findings from the locators (CRC-32s) the block carries."""
    signed = block.get("locators")
    if not isinstance(signed, dict) or not isinstance(signed.get("findings"), str):
        return "no locators in the signature block to say where"
    found = report.get("findings")
    findings: list[Any] = found if isinstance(found, list) else []
    try:
        signed_crcs = binascii.unhexlify(signed["findings"])
    except (binascii.Error, ValueError):
        return "its locators are unreadable"
    now = locators(dict(report), (zlib.crc32(jcs.canonical(f)) for f in findings))
    changed = [f"the {name} member" for name, crc in sorted(now["members"].items())
               if signed.get("members", {}).get(name) != crc]
    changed += [f"member {name!r} was removed" for name in sorted(set(signed.get("members", {})) - set(now["members"]))]
    count = len(signed_crcs) // 4
    if count != len(findings):
        changed.append(f"{count} findings were signed, {len(findings)} are there now")
    now_crcs = binascii.unhexlify(now["findings"])
    bad = [i for i in range(min(count, len(findings))) if signed_crcs[4 * i:4 * i + 4] != now_crcs[4 * i:4 * i + 4]]
    for index in bad[:5]:
        finding = findings[index] if isinstance(findings[index], dict) else {}
        changed.append(f"finding #{index + 1} (id {finding.get('id')}, ruleId {finding.get('ruleId')})")
    if len(bad) > 5:
        changed.append(f"{len(bad) - 5} more findings")
    return ", ".join(changed) if changed else "the change could not be located (the locators match)"


def parse_signature(data: bytes) -> dict[str, Any] | None:
    """A detached signature as served (``{"success": true, "data": block}``), the bare block, or
    an ``X-CertIX-Report-Signature`` header value."""
    text = data.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            return parse_header_value(text)
        except (ValueError, binascii.Error):
            return None
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), dict) and "statement" in parsed["data"]:
        parsed = parsed["data"]
    return parsed if isinstance(parsed, dict) else None


def verify_detached(data: bytes, signature: bytes, pinned: Trusted | None) -> Result:
    """A detached signature over a file's exact bytes; for the ``report`` and ``json`` formats a
    re-serialized copy (or a saved report document) verifies too, through its JCS form."""
    block = parse_signature(signature)
    if block is None:
        return Result(False, "the signature file holds no signature block")
    trusted = pinned or embedded_keys(block)
    verdict = check(block, trusted, "export")
    if not verdict.ok:
        return Result(False, f"signature: {verdict.problem}", trusted.pinned)
    stmt = block["statement"]
    fmt = stmt.get("format")
    digest = hashlib.sha512(data).hexdigest()
    if digest != stmt.get("digest") and fmt in ("report", "json"):
        canonical = _canonical_form(data, str(fmt))
        if canonical is not None:
            digest = hashlib.sha512(canonical).hexdigest()
    if digest != stmt.get("digest"):
        return Result(False, f"the file is not the {fmt} of scan {stmt.get('scanId')} that was signed "
                      "(its content was changed, or it is another file)", trusted.pinned)
    return Result(True, f"{fmt} of scan {stmt.get('scanId')} is intact; signed {stmt.get('signedAt')} by "
                  f"{_signers(verdict.key_ids)}", trusted.pinned)


def _canonical_form(data: bytes, fmt: str) -> bytes | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict):
        if fmt == "report" and isinstance(value.get("report"), dict):
            value = value["report"]  # a saved report document
        elif fmt == "json" and isinstance(value.get("data"), dict):
            value = value["data"]  # the API's envelope
    return jcs.canonical(value)

