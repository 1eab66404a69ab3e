"""The answers of the API as msgspec types, for the OpenAPI document (answers are built by each
resource's ``to_json``; the fuzzing test checks every answer against these)."""
from __future__ import annotations

from typing import Any, Literal

import msgspec

Timestamp = str  # ISO-8601 UTC with Z
Severity = Literal["critical", "high", "medium", "low", "info"]


class _Doc(msgspec.Struct, kw_only=True):
    pass


class Summary(_Doc):
    total: int
    critical: int
    high: int
    medium: int
    low: int
    info: int


class ScanError(_Doc):
    code: str | None
    message: str | None


class Scan(_Doc):
    id: str
    scanType: str
    name: str | None
    target: str
    targetType: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    priority: Literal["critical", "high", "normal", "low"]
    progress: int
    options: dict[str, Any]
    config: dict[str, Any]
    tags: list[str]
    timeout: int
    assetId: str | None
    callbackUrl: str | None
    templateId: str | None
    createdAt: Timestamp
    startedAt: Timestamp | None
    completedAt: Timestamp | None
    durationMs: int | None
    resultSummary: Summary
    worker: str | None
    error: ScanError | msgspec.UnsetType = msgspec.UNSET


class Finding(_Doc):
    id: str
    scanId: str
    engine: str
    ruleId: str
    title: str
    severity: Severity
    confidence: Literal["high", "medium", "low"]
    host: str | None
    ip: str | None
    port: int | None
    protocol: str | None
    url: str | None
    parameter: str | None
    cve: list[str]
    cwe: list[str]
    cvss: dict[str, Any] | None
    description: str | None
    evidence: str | None
    remediation: str | None
    references: list[str]
    fingerprint: str
    detectedBy: list[str]
    raw: dict[str, Any]


class DiffFinding(Finding):
    change: Literal["new", "fixed", "unchanged"]


class Results(_Doc):
    scanId: str
    scanType: str
    status: str
    summary: Summary
    findings: list[Finding]


class DiffCounts(_Doc):
    new: int
    fixed: int
    unchanged: int


class Diff(_Doc):
    scanId: str
    against: str
    scanType: str
    counts: DiffCounts
    findings: list[DiffFinding]


class ApiKey(_Doc):
    id: str
    name: str
    description: str | None
    prefix: str
    scopes: list[str]
    allowedScanTypes: list[str] | None
    allowedIpAddresses: list[str] | None
    allowedPriorities: list[str] | None
    rateLimitPerMinute: int
    rateLimitPerHour: int
    rateLimitPerDay: int
    status: Literal["active", "expired", "revoked", "suspended"]
    expiresAt: Timestamp | None
    lastUsedAt: Timestamp | None
    lastUsedIp: str | None
    createdAt: Timestamp
    rotatedFromId: str | None
    graceExpiresAt: Timestamp | None


class NewApiKey(ApiKey):
    key: str


class Template(_Doc):
    id: str
    name: str
    description: str | None
    scanType: str
    targetType: str | None
    priority: str | None
    options: dict[str, Any]
    config: dict[str, Any]
    tags: list[str]
    timeout: int | None
    createdAt: Timestamp
    updatedAt: Timestamp


class Deleted(_Doc):
    id: str
    deleted: bool


class Webhook(_Doc):
    id: str
    name: str
    url: str
    events: list[str]
    isActive: bool
    isHealthy: bool
    consecutiveFailures: int
    previousSecretExpiresAt: Timestamp | None
    createdAt: Timestamp
    updatedAt: Timestamp


class WebhookWithSecret(Webhook):
    secret: str


class Delivery(_Doc):
    id: str
    webhookId: str | None
    event: str
    scanId: str | None
    attempt: int
    status: Literal["pending", "succeeded", "failed"]
    responseStatus: int | None
    responseBodyExcerpt: str | None
    durationMs: float | None
    error: str | None
    nextAttemptAt: Timestamp | None
    createdAt: Timestamp
    deliveredAt: Timestamp | None


class Period(_Doc):
    start: Timestamp
    end: Timestamp


class Quota(_Doc):
    limit: int | None
    used: int
    remaining: int | None
    resetsAt: Timestamp


class UsageSummary(_Doc):
    tenantId: str
    period: Period
    totalCalls: int
    successCalls: int
    errorCalls: int
    avgDurationMs: float
    maxDurationMs: float
    totalScans: int
    distinctScanTypes: int
    scanTypesUsed: list[str]
    quotaConsumedCalls: int
    quota: Quota


class HistoryPoint(_Doc):
    timestamp: Timestamp
    totalCalls: int
    successCalls: int
    errorCalls: int
    scans: int
    avgDurationMs: float


class NamedPeriod(Period):
    name: str


class UsageHistory(_Doc):
    period: NamedPeriod
    granularity: Literal["hourly", "daily"]
    points: list[HistoryPoint]


class ScanTypeUsage(_Doc):
    scanType: str
    scans: int
    completed: int
    failed: int
    cancelled: int
    avgDurationMs: int | None
    findings: int | None


class Call(_Doc):
    id: int
    apiKeyId: str | None
    method: str
    path: str
    status: int
    durationMs: float
    ip: str | None
    requestId: str | None
    createdAt: Timestamp


class AuditEvent(_Doc):
    id: int
    tenantId: str | None
    actor: str
    action: str
    resourceType: str | None
    resourceId: str | None
    details: Any
    createdAt: Timestamp
    prevHash: str
    hash: str


class EngineInfo(_Doc):
    scanType: str
    name: str
    installed: bool
    available: bool
    version: str | None
    missing: list[str]
    offlineDataAge: Any
    targetTypes: list[str]
    defaultTimeout: int
    options: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class Health(_Doc):
    status: Literal["ok", "degraded"]
    reason: str | msgspec.UnsetType = msgspec.UNSET


class Pagination(_Doc):
    page: int
    limit: int
    total: int
    totalPages: int


class ErrorDetail(_Doc):
    field: str
    message: str


class Error(_Doc):
    success: Literal[False]
    error: str
    code: str
    details: list[ErrorDetail] | msgspec.UnsetType = msgspec.UNSET


MODELS: tuple[type[msgspec.Struct], ...] = (
    Scan, Finding, Results, Diff, ApiKey, NewApiKey, Template, Deleted, Webhook, WebhookWithSecret, Delivery,
    UsageSummary, UsageHistory, ScanTypeUsage, Call, AuditEvent, EngineInfo, Health, Pagination, Error)
