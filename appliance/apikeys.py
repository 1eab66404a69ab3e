"""API keys: the settings a key carries, how keys are made, rotated and retired.

Shared by the ``/api-keys`` routes and the CLI: both validate through :func:`parse_spec` and change
the database through the ops built here, so there is one description of every key transition.
"""
from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance import clock
from appliance.audit import audit_op
from appliance.bodies import given, key_type, parse, unique
from appliance.credentials import RATE_LIMITS, generate_key, hash_key, key_prefix
from appliance.errors import ApiError, ValidationError
from appliance.store.ops import BUMP_EPOCH, Op
from appliance.targets import network_within

# What a key gets when it names no scopes: enough to run scans from a pipeline, nothing more.
DEFAULT_SCOPES = ("scans:create", "scans:read", "scans:list", "scans:cancel", "results:read",
                  "engines:read")
SPEC_FIELDS = ("name", "description", "scopes", "allowedScanTypes", "allowedIpAddresses", "allowedPriorities",
               *RATE_LIMITS, "expiresInDays")
PRIORITIES = ("critical", "high", "normal", "low")
# KeySpec attribute of each rate limit field.
RATE_ATTRS = {"rateLimitPerMinute": "rate_minute", "rateLimitPerHour": "rate_hour", "rateLimitPerDay": "rate_day"}
DAY = 86400


@dataclass
class KeySpec:
    """A key to be made. Rate limits left None take the contract's defaults (clamped to the creating
    key's own); ``expires_at`` (absolute) wins over ``expires_in_days``."""

    name: str
    description: str | None = None
    scopes: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))
    allowed_scan_types: list[str] | None = None  # None: every scan type
    allowed_ips: list[str] | None = None  # None: any address
    allowed_priorities: list[str] | None = None  # None: every priority
    rate_minute: int | None = None
    rate_hour: int | None = None
    rate_day: int | None = None
    expires_in_days: int | None = None
    expires_at: float | None = None

    def rate(self, name: str) -> int:
        value: int | None = getattr(self, RATE_ATTRS[name])
        return RATE_LIMITS[name][2] if value is None else value


def parse_cidrs(name: str, values: list[str]) -> list[str]:
    out = []
    for index, value in enumerate(values):
        try:
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ValidationError(f"{name}[{index}]", f"{value!r} is not an IP address or CIDR") from None
    return out


def parse_spec(data: Any, scan_types: Iterable[str]) -> KeySpec:
    """Validate a create-key body (the CLI builds the same dict from its flags)."""
    body = given(parse(data, key_type(tuple(scan_types))))
    ips = unique(body.get("allowedIpAddresses"))
    return KeySpec(
        name=body["name"],
        description=body.get("description"),
        scopes=unique(body.get("scopes")) or ([] if "scopes" in body else list(DEFAULT_SCOPES)),
        allowed_scan_types=unique(body.get("allowedScanTypes")),
        allowed_ips=parse_cidrs("allowedIpAddresses", ips) if ips is not None else None,
        allowed_priorities=unique(body.get("allowedPriorities")),
        rate_minute=body.get("rateLimitPerMinute"),
        rate_hour=body.get("rateLimitPerHour"),
        rate_day=body.get("rateLimitPerDay"),
        expires_in_days=body.get("expiresInDays"),
    )


def _covered(inner: list[str], outer: Sequence[str] | None) -> list[str]:
    """Networks of ``inner`` not inside any network of ``outer`` (None: everything is inside)."""
    if outer is None:
        return []
    nets = [ipaddress.ip_network(o) for o in outer]
    return [i for i in inner if not any(network_within(ipaddress.ip_network(i), n) for n in nets)]


def bound(spec: KeySpec, creator: KeyGrant | None, now: float, rotating: bool = False) -> KeySpec:
    """A key made by a key never outlives or outruns it: its expiry and each rate limit are at most
    the creator's. Values left unset are clamped to the creator's; a value given beyond them is 400
    ``VALIDATION_ERROR`` naming the field. A rotated key's settings count as given: it keeps them."""
    if creator is None:  # the operator's CLI
        return spec
    for name, attr in RATE_ATTRS.items():
        own: int = getattr(creator, attr)
        value: int | None = getattr(spec, attr)
        if value is None:
            setattr(spec, attr, min(spec.rate(name), own))
        elif value > own:
            raise ValidationError(name, f"{value} is more than this API key's own limit of {own}")
    end = creator_end(creator)
    if end is None:
        return spec
    if spec.expires_at is None and spec.expires_in_days is None and not rotating:
        spec.expires_at = end
        return spec
    expires = spec.expires_at
    if expires is None and spec.expires_in_days is not None:
        expires = now + spec.expires_in_days * DAY
    if expires is None or expires > end:
        raise ValidationError("expiresAt" if rotating else "expiresInDays",
                              f"must not outlive this API key, which stops working at {clock.iso(end)}"
                              + ("" if rotating else " (leave expiresInDays out to expire with it)"))
    return spec


def creator_end(grant: KeyGrant) -> float | None:
    """When ``grant`` stops working: its expiry, or the end of its rotation grace period."""
    ends = [t for t in (grant.expires_at, grant.grace_expires_at) if t is not None]
    return min(ends) if ends else None


def confine(spec: KeySpec, creator: KeyGrant | None) -> KeySpec:
    """A key never grants what its creator lacks; unset restrictions inherit the creator's."""
    if creator is None:  # the operator's CLI
        return spec
    for scope in spec.scopes:
        if scope not in creator.scopes:
            raise ApiError(403, "INSUFFICIENT_SCOPE", f"scope '{scope}' is beyond this API key's own")
    if creator.allowed_scan_types is not None:
        if spec.allowed_scan_types is None:
            spec.allowed_scan_types = list(creator.allowed_scan_types)
        extra = [t for t in spec.allowed_scan_types if t not in creator.allowed_scan_types]
        if extra:
            raise ApiError(403, "SCAN_TYPE_NOT_ALLOWED", f"scan type '{extra[0]}' is beyond this API key's own")
    if creator.allowed_priorities is not None:
        if spec.allowed_priorities is None:
            spec.allowed_priorities = list(creator.allowed_priorities)
        beyond = [p for p in spec.allowed_priorities if p not in creator.allowed_priorities]
        if beyond:
            raise ApiError(403, "INSUFFICIENT_SCOPE", f"priority '{beyond[0]}' is beyond this API key's own")
    if creator.allowed_ips is not None:
        if spec.allowed_ips is None:
            spec.allowed_ips = list(creator.allowed_ips)
        extra = _covered(spec.allowed_ips, creator.allowed_ips)
        if extra:
            raise ApiError(403, "IP_NOT_ALLOWED", f"IP range {extra[0]} is beyond this API key's own")
    return spec


@dataclass(frozen=True)
class KeyGrant:
    """What an authenticated key may do; cached in memory by the authenticator."""

    id: str
    tenant_id: str
    scopes: frozenset[str]
    allowed_scan_types: tuple[str, ...] | None
    allowed_ips: tuple[str, ...] | None
    rate_minute: int
    rate_hour: int
    rate_day: int
    status: str
    expires_at: float | None
    grace_expires_at: float | None
    allowed_priorities: tuple[str, ...] | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> KeyGrant:
        scan_types = json.loads(row["allowed_scan_types"]) if row["allowed_scan_types"] else None
        ips = json.loads(row["allowed_ips"]) if row["allowed_ips"] else None
        return cls(row["id"], row["tenant_id"], frozenset(json.loads(row["scopes"])),
                   tuple(scan_types) if scan_types is not None else None,
                   tuple(ips) if ips is not None else None,
                   row["rate_minute"], row["rate_hour"], row["rate_day"], row["status"],
                   row["expires_at"], row["grace_expires_at"], _json_tuple(row["allowed_priorities"]))


def _json_tuple(text: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(text)) if text else None


def _json_or_null(values: list[str] | None) -> str | None:
    return json.dumps(values) if values is not None else None


def create_ops(tenant_id: str, spec: KeySpec, actor: str, rotated_from: str | None = None
               ) -> tuple[str, str, list[Op]]:
    """Ops that insert a new key; returns ``(key_id, raw_key, ops)``. The raw key is never stored."""
    key_id = clock.new_id("key-")
    raw = generate_key()
    now = clock.now()
    expires = spec.expires_at
    if expires is None and spec.expires_in_days:
        expires = now + spec.expires_in_days * DAY
    insert = Op([(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, name, description, scopes,"
        " allowed_scan_types, allowed_ips, allowed_priorities, rate_minute, rate_hour, rate_day, status,"
        " expires_at, created_at, rotated_from_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'active',?,?,?)",
        (key_id, tenant_id, hash_key(raw), key_prefix(raw), spec.name, spec.description,
         json.dumps(sorted(spec.scopes)),
         _json_or_null(spec.allowed_scan_types), _json_or_null(spec.allowed_ips),
         _json_or_null(spec.allowed_priorities), spec.rate("rateLimitPerMinute"), spec.rate("rateLimitPerHour"),
         spec.rate("rateLimitPerDay"), expires, now, rotated_from)), BUMP_EPOCH])
    action = "api_key.rotated" if rotated_from else "api_key.created"
    details = {"name": spec.name, "scopes": sorted(spec.scopes), "rotatedFromId": rotated_from}
    return key_id, raw, [insert, audit_op(tenant_id, actor, action, "api_key", key_id, details)]


def spec_from_row(row: sqlite3.Row) -> KeySpec:
    """The settings of an existing key, for rotation: the successor expires when the old key would."""
    return KeySpec(
        name=row["name"], description=row["description"], scopes=json.loads(row["scopes"]),
        allowed_scan_types=json.loads(row["allowed_scan_types"]) if row["allowed_scan_types"] else None,
        allowed_ips=json.loads(row["allowed_ips"]) if row["allowed_ips"] else None,
        allowed_priorities=json.loads(row["allowed_priorities"]) if row["allowed_priorities"] else None,
        rate_minute=row["rate_minute"], rate_hour=row["rate_hour"], rate_day=row["rate_day"],
        expires_at=row["expires_at"])


ALREADY_ROTATED = "was already rotated; rotate the successor instead"


def check_rotatable(row: sqlite3.Row, now: float) -> None:
    """409 ``CONFLICT`` unless ``row`` is active and not already rotated: a key in its grace period
    rotated again would start a chain of keys that all keep working."""
    status = effective_status(row, now)
    if status != "active":
        raise ApiError(409, "CONFLICT", f"only active keys rotate; {row['id']} is {status}")
    if row["grace_expires_at"] is not None:
        raise ApiError(409, "CONFLICT", f"{row['id']} {ALREADY_ROTATED}")


def rotate_ops(row: sqlite3.Row, grace_hours: int, actor: str, spec: KeySpec | None = None
               ) -> tuple[str, str, list[Op]]:
    """A new key with the old one's settings (``spec``, default: the row's); the old one works until
    the grace period ends. One guarded op: a concurrent rotation of the same key makes it report 0."""
    check_rotatable(row, clock.now())
    key_id, raw, (insert, audit) = create_ops(row["tenant_id"], spec or spec_from_row(row), actor,
                                              rotated_from=row["id"])
    grace_end = clock.now() + grace_hours * 3600
    status = "revoked" if grace_hours == 0 else "active"
    retire = ("UPDATE api_keys SET status = ?, grace_expires_at = ? WHERE id = ? AND status = 'active'"
              " AND grace_expires_at IS NULL", (status, grace_end, row["id"]))
    return key_id, raw, [Op([retire, *insert.statements, *audit.statements], guarded=True)]


# Allowed status changes: action -> (from statuses, to status, audit action).
TRANSITIONS = {
    "revoke": (("active", "suspended"), "revoked", "api_key.revoked"),
    "suspend": (("active",), "suspended", "api_key.suspended"),
    "reactivate": (("suspended",), "active", "api_key.reactivated"),
}


def transition_ops(row: sqlite3.Row, action: str, actor: str) -> list[Op]:
    sources, target, audit_action = TRANSITIONS[action]
    if row["status"] not in sources:
        raise ApiError(409, "CONFLICT", f"cannot {action} a key that is {row['status']}")
    marks = ",".join("?" * len(sources))
    return [Op([(f"UPDATE api_keys SET status = ? WHERE id = ? AND status IN ({marks})",
                 (target, row["id"], *sources)), BUMP_EPOCH], guarded=True),
            audit_op(row["tenant_id"], actor, audit_action, "api_key", row["id"], {})]


def effective_status(row: sqlite3.Row | KeyGrant, now: float) -> str:
    """Stored status plus what time did to it: expiry, and the end of a rotation's grace period."""
    if isinstance(row, sqlite3.Row):
        status, grace, expires = row["status"], row["grace_expires_at"], row["expires_at"]
    else:
        status, grace, expires = row.status, row.grace_expires_at, row.expires_at
    if status == "active":
        if grace is not None and grace <= now:
            return "revoked"
        if expires is not None and expires <= now:
            return "expired"
    return str(status)


def to_json(row: sqlite3.Row) -> dict[str, Any]:
    """The contract's key object (§8); never the hash."""
    return {
        "id": row["id"], "name": row["name"], "description": row["description"],
        "prefix": row["prefix"], "scopes": json.loads(row["scopes"]),
        "allowedScanTypes": json.loads(row["allowed_scan_types"]) if row["allowed_scan_types"] else None,
        "allowedIpAddresses": json.loads(row["allowed_ips"]) if row["allowed_ips"] else None,
        "allowedPriorities": json.loads(row["allowed_priorities"]) if row["allowed_priorities"] else None,
        "rateLimitPerMinute": row["rate_minute"], "rateLimitPerHour": row["rate_hour"],
        "rateLimitPerDay": row["rate_day"], "status": effective_status(row, clock.now()),
        "expiresAt": clock.iso(row["expires_at"]), "lastUsedAt": clock.iso(row["last_used_at"]),
        "lastUsedIp": row["last_used_ip"], "createdAt": clock.iso(row["created_at"]),
        "rotatedFromId": row["rotated_from_id"], "graceExpiresAt": clock.iso(row["grace_expires_at"]),
    }

