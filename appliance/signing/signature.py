"""Signature blocks: what is signed, how, and how a block is checked.

A block is ``{"statement": {...}, "signatures": [...], "publicKeys": [...]}``. The statement is a
small JSON object naming what is signed (``purpose``: ``report``, ``export`` or
``audit-checkpoint``), the digest of the signed bytes, the signing time and the key ids; every
signature is over the JCS bytes of the statement (ASCII strings and integers only, so
``json.dumps(statement, sort_keys=True, separators=(",", ":"))`` gives the same bytes). Signing a
statement rather than the raw digest binds the purpose (a report signature cannot pass for an audit
checkpoint), the time and the key ids to the signature. ``publicKeys`` (optional) carries the PEM of
the signing keys so that a report can be checked with nothing else — which proves integrity only,
not origin, unless the verifier pins the appliance's keys.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance import clock
from appliance.signing import jcs
from appliance.signing.keys import ALGORITHMS, KeyRing, PublicKey, algorithm_of, key_id, verify_with

SCHEME = "cix-signature/1"
PURPOSES = ("report", "export", "audit-checkpoint")


def statement(purpose: str, digest_algorithm: str, digest: str, key_ids: Sequence[str],
              subject: Mapping[str, str | int], signed_at: float | None = None) -> dict[str, Any]:
    """``subject`` names what is signed beyond the digest (``scanId``, ``format``, ``headId``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    return {"scheme": SCHEME, "purpose": purpose, "digestAlgorithm": digest_algorithm, "digest": digest,
            "signedAt": clock.iso(clock.now() if signed_at is None else signed_at), "keyIds": list(key_ids),
            **subject}


def message(stmt: Mapping[str, Any]) -> bytes:
    return jcs.canonical(stmt)


def sign(keyring: KeyRing, purpose: str, digest_algorithm: str, digest: str, subject: Mapping[str, str | int],
         embed_keys: bool = True) -> dict[str, Any]:
    """A block signed with the current pair. The signatures are made before the key ids are known
    to be consistent, so the ids come from the same read of the key store as the keys."""
    current = keyring.current()
    stmt = statement(purpose, digest_algorithm, digest, sorted(k.key_id for k in current), subject)
    signatures = keyring.sign(message(stmt))
    if sorted(s["keyId"] for s in signatures) != stmt["keyIds"]:  # rotated between the two reads
        return sign(keyring, purpose, digest_algorithm, digest, subject, embed_keys)
    block: dict[str, Any] = {"statement": stmt, "signatures": signatures}
    if embed_keys:
        block["publicKeys"] = [{"keyId": k.key_id, "algorithm": k.algorithm, "publicKey": k.pem}
                               for k in current]
    return block


def sign_digest_of(keyring: KeyRing, chunks: Iterable[bytes], purpose: str, subject: Mapping[str, str | int]
                   ) -> dict[str, Any]:
    """A detached signature over the bytes ``chunks`` produce (SHA-512), e.g. an export's:
    ``sign_digest_of(keyring, export_chunks(...), "export", {"scanId": id, "format": "sarif"})``."""
    digest = hashlib.sha512()
    for chunk in chunks:
        digest.update(chunk)
    return sign(keyring, purpose, "SHA-512", digest.hexdigest(), subject)


def header_value(block: Mapping[str, Any]) -> str:
    """A block without its public keys, as one HTTP header value (base64url of its JCS bytes): for
    ``X-CertIX-Report-Signature`` on an export whose bytes are known before they are sent."""
    slim = {k: v for k, v in block.items() if k != "publicKeys"}
    return base64.urlsafe_b64encode(jcs.canonical(slim)).decode().rstrip("=")


def parse_header_value(value: str) -> dict[str, Any]:
    import json

    padded = value + "=" * (-len(value) % 4)
    parsed: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return parsed


# -- checking --------------------------------------------------------------------------------------
@dataclass
class Trusted:
    """The keys a verifier believes. ``pinned``: given by the verifier (origin proven); otherwise
    taken from the document itself (integrity only)."""

    keys: dict[str, PublicKey] = field(default_factory=dict)
    pinned: bool = True
    source: str = "pinned"  # completes "key X is not ...", e.g. "in the key store"

    @classmethod
    def of(cls, keys: Iterable[PublicKey], pinned: bool = True, source: str = "pinned") -> Trusted:
        return cls({key_id(k): k for k in keys}, pinned, source)


@dataclass(frozen=True)
class Check:
    ok: bool
    problem: str | None = None
    key_ids: tuple[str, ...] = ()  # the keys whose signatures counted


def embedded_keys(block: Mapping[str, Any]) -> Trusted:
    """The public keys a block carries, each checked against the key id it claims."""
    from appliance.signing.keys import load_public_pem

    keys: dict[str, PublicKey] = {}
    for item in block.get("publicKeys") or []:
        try:
            key = load_public_pem(str(item["publicKey"]))[0]
        except (KeyError, TypeError, ValueError):
            continue
        if key_id(key) == item.get("keyId"):
            keys[key_id(key)] = key
    return Trusted(keys, pinned=False, source="embedded in the document")


def check(block: Any, trusted: Trusted, purpose: str, digest: str | None = None) -> Check:
    """Whether ``block`` is a valid ``purpose`` signature by trusted keys, over ``digest`` when given.
    Both algorithms must verify: a block with only one of them, or one that fails, does not count."""
    if not isinstance(block, Mapping) or not isinstance(block.get("statement"), Mapping) \
            or not isinstance(block.get("signatures"), list):
        return Check(False, "no signature block (statement and signatures)")
    stmt = block["statement"]
    if stmt.get("scheme") != SCHEME:
        return Check(False, f"unknown signature scheme {stmt.get('scheme')!r}")
    if stmt.get("purpose") != purpose:
        return Check(False, f"the signature is for a {stmt.get('purpose')!r}, not a {purpose!r}")
    if digest is not None and stmt.get("digest") != digest:
        return Check(False, "the signed digest does not match the content (it was changed after signing)")
    try:
        signed = message(stmt)
    except (TypeError, ValueError) as exc:
        return Check(False, f"the statement cannot be encoded ({exc})")
    listed = stmt.get("keyIds") if isinstance(stmt.get("keyIds"), list) else []
    good: dict[str, str] = {}
    failures: list[str] = []
    for sig in block["signatures"]:
        if not isinstance(sig, Mapping):
            continue
        kid, algorithm = sig.get("keyId"), sig.get("algorithm")
        key = trusted.keys.get(str(kid))
        if key is None or kid not in listed:
            failures.append(f"{algorithm} key {kid} is not {trusted.source}" if key is None
                            else f"{algorithm} key {kid} is not named by the statement")
            continue
        if algorithm_of(key) != algorithm:
            failures.append(f"key {kid} is not an {algorithm} key")
            continue
        if verify_with(key, str(sig.get("value", "")), signed):
            good[str(algorithm)] = str(kid)
        else:
            failures.append(f"the {algorithm} signature by key {kid} does not verify")
    missing = [a for a in ALGORITHMS if a not in good]
    if missing:
        reason = "; ".join(failures) or f"no {' or '.join(missing)} signature"
        return Check(False, f"{' and '.join(missing)} signature missing or invalid ({reason})")
    return Check(True, None, tuple(good[a] for a in ALGORITHMS))
