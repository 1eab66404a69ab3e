"""Request bodies as msgspec types: what the API validates them with, and what the OpenAPI document
describes them with.

Each body is declared once as a list of fields (:data:`SCAN_FIELDS` and friends). ``POST /scans`` is
checked in two steps, so that errors come in the order a client fixes them (docs/api.md): first the
body's shape, with ``options`` and ``config`` as plain objects (``VALIDATION_ERROR``), then, once the
scan type is known, ``options`` with the engine's Struct and ``config`` with :class:`ScanConfig`
(``INVALID_OPTIONS``). The document shows the same fields with the engine's options in place, one
variant per scan type (``oneOf`` keyed by ``scanType``).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from appliance.credentials import RATE_LIMITS, SCOPES
from appliance.errors import ValidationError
from engines import schema

T = TypeVar("T")
PRIORITIES = ("critical", "high", "normal", "low")
WEBHOOK_EVENTS = ("scan.queued", "scan.started", "scan.completed", "scan.failed", "scan.cancelled")

Name = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"\S", description="1-255 characters, not blank")]
Text255 = Annotated[str, Meta(max_length=255)]
Tag = Annotated[str, Meta(min_length=1, max_length=64)]
Tags = Annotated[list[Tag], Meta(max_length=20)]
Priority = Literal["critical", "high", "normal", "low"]
HttpsUrl = Annotated[str, Meta(max_length=2048, pattern=r"^https://\S+$", description="an https:// URL")]
Target = Annotated[str, Meta(max_length=2048, description="no spaces or control characters, not starting "
                                                           "with '-'")]
ScanTypeName = Annotated[str, Meta(max_length=64)]
Timeout = Annotated[int, Meta(ge=30, le=86400, description="seconds")]
AnyObject = dict[str, Any]
Field = tuple[str, Any, Any]  # (name, type, default) as msgspec.defstruct takes them
_NOTHING = msgspec.UNSET


def one_of(values: Sequence[str]) -> Any:
    """``Literal[...]`` of values known at run time (the registry's scan types)."""
    return Literal[tuple(values)]


def list_of(values: Sequence[str]) -> Any:
    return list[one_of(values)]  # type: ignore[misc]


def _opt(annotation: Any) -> Any:
    """Optional: absent and ``null`` both mean "not given"."""
    return annotation | msgspec.UnsetType | None


def parse(data: Any, type_: type[T], code: str = "VALIDATION_ERROR", root: str = "body", prefix: str = "") -> T:
    """``data`` as ``type_``; else :class:`ValidationError` with ``code``, naming the field."""
    try:
        return schema.convert(data, type_, root=root, prefix=prefix)
    except schema.SchemaError as exc:
        message = exc.message
        if exc.field == "body" and exc.kind == "type":
            message = "must be a JSON object"
        raise ValidationError(exc.field, message, code) from None


def given(value: msgspec.Struct) -> dict[str, Any]:
    return schema.given(value)


def unique(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(dict.fromkeys(values))


def _struct(name: str, fields: list[Field], doc: str = "") -> type[msgspec.Struct]:
    struct = msgspec.defstruct(name, fields, forbid_unknown_fields=True, kw_only=True)
    struct.__doc__ = doc or None
    return struct


class ScanConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Engine run settings; anything else is ``INVALID_OPTIONS``."""

    timeoutSeconds: _opt(Annotated[int, Meta(ge=30, le=86400)]) = _NOTHING  # type: ignore[valid-type]
    maxFindings: _opt(Annotated[int, Meta(ge=1, le=1_000_000)]) = _NOTHING  # type: ignore[valid-type]


CONFIG_KEYS = tuple(ScanConfig.__struct_fields__)


def scan_fields(target_types: Sequence[str], scan_type: Any = ScanTypeName, options: Any = AnyObject,
                config: Any = AnyObject) -> list[Field]:
    """The ``POST /scans`` fields; ``scan_type``, ``options`` and ``config`` vary between the shape
    check, the per-engine variants of the document, and templates."""
    return [
        ("scanType", scan_type, msgspec.NODEFAULT),
        ("target", Target, msgspec.NODEFAULT),
        ("targetType", _opt(one_of(target_types)), _NOTHING),
        ("name", _opt(Text255), _NOTHING),
        ("priority", _opt(Priority), _NOTHING),
        ("options", _opt(options), _NOTHING),
        ("config", _opt(config), _NOTHING),
        ("tags", _opt(Tags), _NOTHING),
        ("timeout", _opt(Timeout), _NOTHING),
        ("assetId", _opt(Text255), _NOTHING),
        ("callbackUrl", _opt(HttpsUrl), _NOTHING),
    ]


SCAN_FIELDS = tuple(name for name, _, _ in scan_fields(()))


def template_fields(target_types: Sequence[str], scan_type: Any = ScanTypeName, options: Any = AnyObject,
                    config: Any = AnyObject, partial: bool = False) -> list[Field]:
    fields: list[Field] = [
        ("name", Name, msgspec.NODEFAULT),
        ("description", _opt(Annotated[str, Meta(max_length=2000)]), _NOTHING),
        ("scanType", scan_type, msgspec.NODEFAULT),
        ("targetType", _opt(one_of(target_types)), _NOTHING),
        ("priority", _opt(Priority), _NOTHING),
        ("options", _opt(options), _NOTHING),
        ("config", _opt(config), _NOTHING),
        ("tags", _opt(Tags), _NOTHING),
        ("timeout", _opt(Timeout), _NOTHING),
    ]
    return [(n, _opt(t), _NOTHING) for n, t, _ in fields] if partial else fields


LAUNCH_FIELDS: list[Field] = [
    ("target", _opt(Target), _NOTHING), ("name", _opt(Text255), _NOTHING), ("tags", _opt(Tags), _NOTHING),
    ("priority", _opt(Priority), _NOTHING), ("callbackUrl", _opt(HttpsUrl), _NOTHING),
    ("options", _opt(Annotated[AnyObject, Meta(description="merged over the template's options, key by key")]),
     _NOTHING),
]


def key_fields(scan_types: Sequence[str]) -> list[Field]:
    rates: list[Field] = [(name, _opt(Annotated[int, Meta(ge=lo, le=hi, description=f"default {default}")]), _NOTHING)
                          for name, (lo, hi, default) in RATE_LIMITS.items()]
    return [
        ("name", Name, msgspec.NODEFAULT),
        ("description", _opt(Annotated[str, Meta(max_length=1000)]), _NOTHING),
        ("scopes", _opt(Annotated[list_of(SCOPES), Meta(max_length=len(SCOPES))]), _NOTHING),
        ("allowedScanTypes", _opt(Annotated[list_of(scan_types), Meta(max_length=50)]), _NOTHING),
        ("allowedIpAddresses", _opt(Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]],
                                              Meta(max_length=100, description="IPs or CIDRs, v4 or v6")]), _NOTHING),
        ("allowedPriorities", _opt(Annotated[list[Priority], Meta(max_length=len(PRIORITIES))]), _NOTHING),
        *rates,
        ("expiresInDays", _opt(Annotated[int, Meta(ge=1, le=3650)]), _NOTHING),
    ]


class RotateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    gracePeriodHours: _opt(Annotated[int, Meta(ge=0, le=168)]) = _NOTHING  # type: ignore[valid-type]


def webhook_fields(partial: bool = False) -> list[Field]:
    fields: list[Field] = [
        ("name", Name, msgspec.NODEFAULT),
        ("url", HttpsUrl, msgspec.NODEFAULT),
        ("events", _opt(Annotated[list_of(WEBHOOK_EVENTS), Meta(min_length=1, max_length=len(WEBHOOK_EVENTS))]),
         _NOTHING),
        ("isActive", _opt(bool), _NOTHING),
    ]
    return [(n, _opt(t), _NOTHING) for n, t, _ in fields] if partial else fields


# Body types depend on the registry (its scan types and target types): made once per registry.
@functools.lru_cache(maxsize=16)
def scan_shape(target_types: tuple[str, ...]) -> type[msgspec.Struct]:
    return _struct("ScanRequestShape", scan_fields(target_types))


@functools.lru_cache(maxsize=16)
def template_shape(target_types: tuple[str, ...], partial: bool = False) -> type[msgspec.Struct]:
    return _struct("ScanTemplatePatch" if partial else "ScanTemplateRequestShape",
                   template_fields(target_types, partial=partial))


@functools.lru_cache(maxsize=16)
def key_type(scan_types: tuple[str, ...]) -> type[msgspec.Struct]:
    return _struct("ApiKeyRequest", key_fields(scan_types))


LaunchRequest = _struct("TemplateLaunchRequest", LAUNCH_FIELDS)
WebhookRequest = _struct("WebhookRequest", webhook_fields())
WebhookPatch = _struct("WebhookPatch", webhook_fields(partial=True))
