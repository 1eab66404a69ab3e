"""The OpenAPI 3.1 document (``GET /api/v1/openapi.json``), built from the same msgspec types that
validate requests (:mod:`appliance.bodies`, each engine's options Struct) and from the answer types
(:mod:`appliance.openapi_models`). Every route is listed with its scope (``x-scopes`` and the security
requirement), parameters, request body, answers, error codes (``x-error-codes``) and headers. The
internal worker routes (``/internal/v1/worker/*``) are not part of it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from appliance import __version__, bodies, exports
from appliance import openapi_models as m
from appliance.scanning.submit import all_target_types
from engines.base import SEVERITIES, Engine, Scanner
from engines.schema import json_schemas

API = "/api/v1"
AUTH_CODES = {401: ("MISSING_API_KEY", "INVALID_API_KEY", "KEY_EXPIRED", "KEY_REVOKED", "KEY_SUSPENDED"),
              403: ("INSUFFICIENT_SCOPE", "IP_NOT_ALLOWED"), 429: ("RATE_LIMIT_EXCEEDED",),
              503: ("SERVICE_UNAVAILABLE",)}
INT = {"type": "integer"}
STR = {"type": "string"}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    repeat: bool = False
    where: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    op_id: str
    summary: str
    scope: str | None
    status: int = 200
    data: Any = None  # the answer's data: a type, ("list", type), ("paged", type), or a raw schema dict
    body: Any = None  # a request body type, or a name of a body built per registry
    body_required: bool = True
    query: tuple[Param, ...] = ()
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    links: Mapping[str, dict[str, Any]] = field(default_factory=dict)


SIGNATURE: dict[str, Any] = {"type": "object", "required": ["statement", "signatures"],
                             "description": "statement (scheme, purpose, digest, key ids) and one signature per "
                                            "algorithm; see docs/verify.md"}


def _page(max_limit: int = 100, default: int = 20) -> tuple[Param, ...]:
    return (Param("page", {**INT, "minimum": 1, "maximum": 10**9, "default": 1}, "page number, from 1"),
            Param("limit", {**INT, "minimum": 1, "maximum": max_limit, "default": default}, "items per page"))


def _enum(values: Sequence[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


TIME = {"type": "string", "description": "ISO-8601 timestamp"}
PERIOD = _enum(("24h", "7d", "30d", "90d"))
SCAN_ID = Param("scan_id", STR, "the scan's id (a UUID)", where="path", required=True)
TEMPLATE_ID = Param("template_id", STR, "tmpl-<uuid>", where="path", required=True)
WEBHOOK_ID = Param("webhook_id", STR, "wh-<uuid>", where="path", required=True)
KEY_ID = Param("key_id", STR, "key-<uuid>", where="path", required=True)
NOT_FOUND = {404: ("SCAN_NOT_FOUND",)}
RESULT_FILTERS = (
    Param("severity", _enum(SEVERITIES), repeat=True), Param("ruleId", STR, repeat=True),
    Param("host", STR, "a finding's host or ip", repeat=True),
    Param("port", {**INT, "minimum": 1, "maximum": 65535}, repeat=True),
    Param("cve", STR, "case-insensitive", repeat=True), Param("fingerprint", STR, repeat=True))


EXAMPLES: dict[Any, Any] = {
    "scan": {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "22,443", "serviceDetection": True},
             "tags": ["nightly"], "priority": "normal"},
    "template": {"name": "nightly-web", "scanType": "nmap", "options": {"topPorts": 100}, "tags": ["nightly"]},
    "template_patch": {"description": "Every night at 02:00", "tags": ["nightly", "web"]},
    "key": {"name": "ci-pipeline", "scopes": ["scans:create", "scans:read", "results:read"], "expiresInDays": 90},
}


def _link(op_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": op_id, "parameters": parameters}


SCAN_LINKS = {"GetScan": _link("getScan", scan_id="$response.body#/data/id"),
              "CancelScan": _link("cancelScan", scan_id="$response.body#/data/id"),
              "GetResults": _link("getScanResults", scan_id="$response.body#/data/id"),
              "DiffScan": _link("diffScan", scan_id="$response.body#/data/id", against="$response.body#/data/id")}


def routes() -> list[Route]:
    return [
        Route("GET", "/health", "health", "Liveness; 503 while writes fail for lack of disk space", None,
              data="health"),
        Route("GET", "/metrics", "metrics", "Prometheus metrics (when metrics.enabled)", None, data="metrics"),
        Route("GET", f"{API}/openapi.json", "openapi", "This document", None, data="openapi"),
        # -- API keys
        Route("POST", f"{API}/api-keys", "createApiKey", "Create a key (never stronger than the calling key)",
              "api-keys:write", 201, m.NewApiKey, "key", errors={403: ("SCAN_TYPE_NOT_ALLOWED",)},
              links={"GetKey": _link("getApiKey", key_id="$response.body#/data/id"),
                     "SuspendKey": _link("suspendApiKey", key_id="$response.body#/data/id"),
                     "RotateKey": _link("rotateApiKey", key_id="$response.body#/data/id")}),
        Route("GET", f"{API}/api-keys", "listApiKeys", "List the tenant's keys", "api-keys:read",
              data=("paged", m.ApiKey), query=_page()),
        Route("GET", f"{API}/api-keys/{{key_id}}", "getApiKey", "One key", "api-keys:read", data=m.ApiKey,
              query=(KEY_ID,), errors={404: ("API_KEY_NOT_FOUND",)}),
        Route("DELETE", f"{API}/api-keys/{{key_id}}", "revokeApiKey", "Revoke a key at once", "api-keys:write",
              data=m.ApiKey, query=(KEY_ID,), errors={404: ("API_KEY_NOT_FOUND",), 409: ("CONFLICT",),
                                                      403: ("SCAN_TYPE_NOT_ALLOWED",)}),
        Route("POST", f"{API}/api-keys/{{key_id}}/rotate", "rotateApiKey", "A successor key; the old one works "
              "until its grace period ends", "api-keys:write", 201, m.NewApiKey, bodies.RotateKey, False,
              (KEY_ID,), {404: ("API_KEY_NOT_FOUND",), 409: ("CONFLICT",), 403: ("SCAN_TYPE_NOT_ALLOWED",)}),
        *[Route("POST", f"{API}/api-keys/{{key_id}}/{action}", f"{action}ApiKey", f"{action.capitalize()} a key",
                "api-keys:write", data=m.ApiKey, query=(KEY_ID,),
                errors={404: ("API_KEY_NOT_FOUND",), 409: ("CONFLICT",), 403: ("SCAN_TYPE_NOT_ALLOWED",)})
          for action in ("suspend", "reactivate")],
        # -- scans
        Route("POST", f"{API}/scans", "createScan", "Submit a scan", "scans:create", 201, m.Scan, "scan",
              errors={400: ("INVALID_SCAN_TYPE", "INVALID_TARGET", "INVALID_OPTIONS"),
                      403: ("SCAN_TYPE_NOT_ALLOWED", "TARGET_NOT_ALLOWED"), 429: ("QUOTA_EXCEEDED",),
                      503: ("ENGINE_UNAVAILABLE",)}, links=SCAN_LINKS),
        Route("GET", f"{API}/scans", "listScans", "The tenant's scans, newest first", "scans:list",
              data=("paged", m.Scan), query=(
                  Param("scanType", STR), Param("status", _enum(("queued", "running", "completed", "failed",
                                                                  "cancelled"))),
                  Param("tag", STR), Param("target", STR, "exact"), Param("createdAfter", TIME),
                  Param("createdBefore", TIME), *_page())),
        Route("GET", f"{API}/scans/{{scan_id}}", "getScan", "One scan", "scans:read", data=m.Scan,
              query=(SCAN_ID, Param("scanType", STR, "another engine's scan: 404")), errors=NOT_FOUND),
        Route("POST", f"{API}/scans/{{scan_id}}/cancel", "cancelScan", "Cancel a queued or running scan",
              "scans:cancel", data=m.Scan, query=(SCAN_ID,),
              errors={**NOT_FOUND, 409: ("SCAN_NOT_CANCELLABLE",)}),
        Route("GET", f"{API}/scans/{{scan_id}}/results", "getScanResults", "Findings, paged (format=json) or the "
              "whole set as a file (format=sarif|csv|jsonl, no page/limit)", "results:read", data="results",
              query=(SCAN_ID, *RESULT_FILTERS, Param("format", _enum(("json", *exports.FORMATS)), "default json"),
                     Param("scanType", STR), *_page(1000, 100)), errors=NOT_FOUND),
        Route("GET", f"{API}/scans/{{scan_id}}/report", "getScanReport", "The scan, its summary and every finding "
              "as one document signed with Ed25519 and ML-DSA-65 (RFC 8785 canonical JSON)", "results:read",
              data="report", query=(SCAN_ID, Param("scanType", STR)), errors=NOT_FOUND),
        Route("GET", f"{API}/scans/{{scan_id}}/results/signature", "getResultsSignature", "A detached hybrid "
              "signature over the exact bytes of a format", "results:read", data=SIGNATURE,
              query=(SCAN_ID, Param("format", _enum(("report", "json", *exports.FORMATS)), "default report"),
                     Param("scanType", STR)), errors=NOT_FOUND),
        Route("GET", f"{API}/signing-key", "listSigningKeys", "Every public key that signs reports, retired ones "
              "included", "", data={"type": "array", "items": {"type": "object", "required": [
                  "keyId", "algorithm", "publicKey"]}}),
        Route("GET", f"{API}/scans/{{scan_id}}/diff", "diffScan", "Findings new, fixed and unchanged against another "
              "scan of the same tenant and type, by fingerprint", "results:read", data=("paged-object", m.Diff),
              query=(SCAN_ID, Param("against", STR, "the id of the scan to compare with", required=True),
                     Param("change", _enum(("new", "fixed", "unchanged")), repeat=True),
                     Param("severity", _enum(SEVERITIES), repeat=True), *_page(1000, 100)), errors=NOT_FOUND),
        # -- templates
        Route("POST", f"{API}/scan-templates", "createTemplate", "Save scan settings", "templates:create", 201,
              m.Template, "template", errors={400: ("INVALID_SCAN_TYPE", "INVALID_TARGET", "INVALID_OPTIONS"),
                                              403: ("SCAN_TYPE_NOT_ALLOWED",), 503: ("ENGINE_UNAVAILABLE",)},
              links={"GetTemplate": _link("getTemplate", template_id="$response.body#/data/id"),
                     "LaunchTemplate": _link("launchTemplate", template_id="$response.body#/data/id")}),
        Route("GET", f"{API}/scan-templates", "listTemplates", "The tenant's templates", "templates:read",
              data=("paged", m.Template), query=(Param("scanType", STR), *_page())),
        Route("GET", f"{API}/scan-templates/{{template_id}}", "getTemplate", "One template", "templates:read",
              data=m.Template, query=(TEMPLATE_ID,), errors={404: ("TEMPLATE_NOT_FOUND",)}),
        Route("PATCH", f"{API}/scan-templates/{{template_id}}", "updateTemplate", "Change fields; the whole "
              "template is checked again", "templates:update", data=m.Template, body="template_patch",
              query=(TEMPLATE_ID,), errors={404: ("TEMPLATE_NOT_FOUND",), 403: ("SCAN_TYPE_NOT_ALLOWED",),
                                            400: ("INVALID_SCAN_TYPE", "INVALID_TARGET", "INVALID_OPTIONS"),
                                            503: ("ENGINE_UNAVAILABLE",)}),
        Route("DELETE", f"{API}/scan-templates/{{template_id}}", "deleteTemplate", "Delete; its scans stay",
              "templates:delete", data=m.Deleted, query=(TEMPLATE_ID,), errors={404: ("TEMPLATE_NOT_FOUND",)}),
        Route("POST", f"{API}/scan-templates/{{template_id}}/launch", "launchTemplate", "Submit a scan from the "
              "template (same checks as POST /scans)", "scans:create", 201, m.Scan, bodies.LaunchRequest,
              query=(TEMPLATE_ID,), errors={404: ("TEMPLATE_NOT_FOUND",), 429: ("QUOTA_EXCEEDED",),
                                            400: ("INVALID_SCAN_TYPE", "INVALID_TARGET", "INVALID_OPTIONS"),
                                            403: ("SCAN_TYPE_NOT_ALLOWED", "TARGET_NOT_ALLOWED"),
                                            503: ("ENGINE_UNAVAILABLE",)}, links=SCAN_LINKS),
        # -- webhooks
        Route("POST", f"{API}/webhooks", "createWebhook", "Register a receiver (HTTPS, egress policy)",
              "webhooks:create", 201, m.WebhookWithSecret, bodies.WebhookRequest,
              links={"GetWebhook": _link("getWebhook", webhook_id="$response.body#/data/id"),
                     "Deliveries": _link("listDeliveries", webhook_id="$response.body#/data/id")}),
        Route("GET", f"{API}/webhooks", "listWebhooks", "The tenant's webhooks", "webhooks:read",
              data=("paged", m.Webhook), query=_page()),
        Route("GET", f"{API}/webhooks/{{webhook_id}}", "getWebhook", "One webhook", "webhooks:read", data=m.Webhook,
              query=(WEBHOOK_ID,), errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("PATCH", f"{API}/webhooks/{{webhook_id}}", "updateWebhook", "Change fields", "webhooks:update",
              data=m.Webhook, body=bodies.WebhookPatch, query=(WEBHOOK_ID,), errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("DELETE", f"{API}/webhooks/{{webhook_id}}", "deleteWebhook", "Delete with its deliveries",
              "webhooks:delete", data=m.Deleted, query=(WEBHOOK_ID,), errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("POST", f"{API}/webhooks/{{webhook_id}}/test", "testWebhook", "Send webhook.test once, now",
              "webhooks:update", data=m.Delivery, query=(WEBHOOK_ID,), errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("POST", f"{API}/webhooks/{{webhook_id}}/rotate-secret", "rotateWebhookSecret", "A new signing secret",
              "webhooks:update", data=m.WebhookWithSecret, query=(WEBHOOK_ID,), errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("GET", f"{API}/webhooks/{{webhook_id}}/deliveries", "listDeliveries", "Deliveries, newest first",
              "webhooks:read", data=("paged", m.Delivery),
              query=(WEBHOOK_ID, Param("status", _enum(("pending", "succeeded", "failed"))), *_page()),
              errors={404: ("WEBHOOK_NOT_FOUND",)}),
        Route("POST", f"{API}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver", "redeliver",
              "Send a finished delivery again", "webhooks:update", 202, m.Delivery,
              query=(WEBHOOK_ID, Param("delivery_id", STR, "dlv-<uuid>", where="path", required=True)),
              errors={404: ("WEBHOOK_NOT_FOUND", "DELIVERY_NOT_FOUND"), 409: ("CONFLICT",)}),
        # -- usage, audit, engines
        Route("GET", f"{API}/usage/summary", "usageSummary", "Calls, scans and quota over a period", "usage:read",
              data=m.UsageSummary, query=(Param("period", PERIOD, "default 30d"),)),
        Route("GET", f"{API}/usage/history", "usageHistory", "Calls and scans per hour or day", "usage:read",
              data=m.UsageHistory, query=(Param("period", PERIOD, "default 7d"),
                                          Param("granularity", _enum(("hourly", "daily", "auto"))))),
        Route("GET", f"{API}/usage/by-scan-type", "usageByScanType", "Scans per scan type", "usage:read",
              data=("list", m.ScanTypeUsage), query=(Param("period", PERIOD, "default 30d"),)),
        Route("GET", f"{API}/usage/calls", "usageCalls", "The API call log, newest first", "usage:read",
              data=("paged", m.Call), query=(Param("apiKeyId", STR), Param("status", {**INT, "minimum": 100,
                                                                                        "maximum": 599}),
                                             Param("from", TIME), Param("to", TIME), *_page())),
        Route("GET", f"{API}/audit", "listAudit", "The tenant's audit trail, newest first", "audit:read",
              data=("paged", m.AuditEvent), query=(Param("action", STR), Param("actor", STR),
                                                   Param("resourceId", STR), Param("from", TIME), Param("to", TIME),
                                                   *_page())),
        Route("GET", f"{API}/engines", "listEngines", "Every scan type: availability, version, options (JSON "
              "Schema)", "engines:read", data=("list", m.EngineInfo)),
    ]


# -- the document ------------------------------------------------------------------------------------
def _variants(engines: Mapping[str, Scanner], kind: str) -> list[type[msgspec.Struct]]:
    """One body type per scan type, its options being the engine's Struct: the ``oneOf`` of POST /scans
    (``kind="scan"``) and POST /scan-templates (``kind="template"``)."""
    out = []
    targets = all_target_types(engines)
    for name, scanner in engines.items():
        options: Any = scanner.options_type() if isinstance(scanner, Engine) else dict[str, Any]
        scan_type = bodies.one_of((name,))
        title = "".join(p.capitalize() for p in name.replace("-", "_").split("_"))
        if kind == "scan":
            fields = bodies.scan_fields(targets, scan_type, options, bodies.ScanConfig)
            out.append(msgspec.defstruct(f"ScanRequest{title}", fields, forbid_unknown_fields=True, kw_only=True))
        else:
            fields = bodies.template_fields(targets, scan_type, options, bodies.ScanConfig)
            out.append(msgspec.defstruct(f"TemplateRequest{title}", fields, forbid_unknown_fields=True,
                                         kw_only=True))
    return out


def _one_of(refs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    return {"oneOf": refs, "discriminator": {"propertyName": "scanType",
                                             "mapping": {n: r["$ref"] for n, r in zip(names, refs, strict=True)}}}


def _envelope(data: dict[str, Any], paged: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"success": {"const": True}, "data": data}
    required = ["success", "data"]
    if paged:
        props["pagination"] = {"$ref": "#/components/schemas/Pagination"}
        required.append("pagination")
    return {"type": "object", "properties": props, "required": required}


HEADERS = {
    "X-Request-Id": {"description": "The request's id (yours when valid, else a fresh UUID)", "required": True,
                     "schema": STR},
    "X-RateLimit-Limit": {"description": "Requests allowed in the window closest to exhaustion", "schema": STR},
    "X-RateLimit-Remaining": {"description": "Requests left in that window", "schema": STR},
    "X-RateLimit-Reset": {"description": "When that window resets (unix seconds)", "schema": STR},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": STR}}


def _headers(route: Route, status: int) -> dict[str, Any]:
    headers = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if route.scope is not None:
        headers.update({h: {"$ref": f"#/components/headers/{h}"} for h in HEADERS if h.startswith("X-RateLimit")})
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return headers


def _success(route: Route, refs: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
    data = route.data
    if data == "health":
        return {"application/json": {"schema": refs[m.Health]}}
    if data == "metrics":
        return {"text/plain": {"schema": STR}}
    if data == "openapi":
        return {"application/json": {"schema": {"type": "object"}}}
    if data == "report":  # a signed document, not an envelope: see docs/verify.md
        return {"application/json": {"schema": {"type": "object", "required": ["report", "signature"]}}}
    if isinstance(data, dict):
        return {"application/json": {"schema": _envelope(data)}}
    if data == "results":
        return {"application/json": {"schema": _envelope(refs[m.Results], paged=True)},
                "application/sarif+json": {"schema": {"type": "object", "required": ["version", "runs"]}},
                "text/csv": {"schema": STR}, "application/x-ndjson": {"schema": STR}}
    if isinstance(data, tuple):
        kind, type_ = data
        if kind == "paged":
            schema = _envelope({"type": "array", "items": refs[type_]}, paged=True)
        elif kind == "paged-object":
            schema = _envelope(refs[type_], paged=True)
        else:
            schema = _envelope({"type": "array", "items": refs[type_]})
        return {"application/json": {"schema": schema}}
    return {"application/json": {"schema": _envelope(refs[data])}}


def _errors(route: Route) -> dict[int, tuple[str, ...]]:
    """Every error status the route can answer, with its codes."""
    codes: dict[int, list[str]] = {}
    if route.scope is not None:
        codes[400] = ["VALIDATION_ERROR"]
        if route.body is not None:
            codes[400].append("INVALID_JSON")
            codes[413] = ["PAYLOAD_TOO_LARGE"]
        for status, found in AUTH_CODES.items():
            codes.setdefault(status, []).extend(found)
    elif route.data == "metrics":
        codes = {403: ["IP_NOT_ALLOWED"], 404: ["NOT_FOUND"]}
    for status, found in route.errors.items():
        codes.setdefault(status, []).extend(c for c in found if c not in codes.get(status, []))
    return {s: tuple(c) for s, c in sorted(codes.items())}


def _request_body(route: Route, refs: Mapping[Any, dict[str, Any]], variants: Mapping[str, dict[str, Any]]
                  ) -> dict[str, Any] | None:
    if route.body is None:
        return None
    schema = variants[route.body] if isinstance(route.body, str) else refs[route.body]
    media: dict[str, Any] = {"schema": schema}
    if route.body in EXAMPLES:
        media["example"] = EXAMPLES[route.body]
    return {"required": route.body_required, "content": {"application/json": media}}


def _parameters(route: Route) -> list[dict[str, Any]]:
    out = []
    for p in route.query:
        schema = {"type": "array", "items": p.schema} if p.repeat else p.schema
        param: dict[str, Any] = {"name": p.name, "in": p.where, "required": p.required, "schema": schema}
        if p.description:
            param["description"] = p.description
        if p.repeat:
            param.update(style="form", explode=True, description=(p.description + "; " if p.description else "")
                         + "repeat to match any of several values")
        out.append(param)
    return out


def document(engines: Mapping[str, Scanner]) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for this registry."""
    scan_variants, template_variants = _variants(engines, "scan"), _variants(engines, "template")
    targets = all_target_types(engines)
    patch = bodies.template_shape(targets, partial=True)
    types: list[Any] = [*m.MODELS, *scan_variants, *template_variants, patch, bodies.key_type(tuple(engines)),
                        bodies.RotateKey, bodies.LaunchRequest, bodies.WebhookRequest, bodies.WebhookPatch]
    schemas, components = json_schemas(types)
    refs: dict[Any, dict[str, Any]] = dict(zip(types, schemas, strict=True))
    names = list(engines)
    variants = {"scan": _one_of([refs[v] for v in scan_variants], names),
                "template": _one_of([refs[v] for v in template_variants], names),
                "template_patch": refs[patch], "key": refs[bodies.key_type(tuple(engines))]}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes():
        responses: dict[str, Any] = {str(route.status): {
            "description": route.summary, "headers": _headers(route, route.status), "content": _success(route, refs)}}
        if route.links:
            responses[str(route.status)]["links"] = route.links
        if route.data == "health":
            responses["503"] = {"description": "degraded: writes fail for lack of space",
                                "headers": _headers(route, 503), "content": {"application/json": {"schema":
                                                                                                  refs[m.Health]}}}
        errors = _errors(route)
        for status, codes in errors.items():
            responses[str(status)] = {"description": "; ".join(f"`{c}`" for c in codes),
                                      "headers": _headers(route, status),
                                      "content": {"application/json": {"schema": refs[m.Error]}}}
        operation: dict[str, Any] = {
            "operationId": route.op_id, "summary": route.summary, "responses": responses,
            "x-error-codes": {str(s): list(c) for s, c in errors.items()},
        }
        if route.scope:
            operation["security"] = [{"ApiKey": []}]
            operation["x-scopes"] = [route.scope]
            operation["description"] = f"Scope: `{route.scope}`."
        elif route.scope is not None:  # "": any valid API key, no scope needed
            operation["security"] = [{"ApiKey": []}]
            operation["description"] = "Any valid API key; no scope needed."
        else:
            operation["security"] = []
        parameters = _parameters(route)
        if parameters:
            operation["parameters"] = parameters
        body = _request_body(route, refs, variants)
        if body is not None:
            operation["requestBody"] = body
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cert-IX Scan API (cix-appliance)", "version": __version__,
                 "description": "Every route under /api/v1 is also served under /scan-api/api/v1. Errors are "
                                "`{success: false, error, code, details?}`; each operation lists its codes in "
                                "`x-error-codes` and its scope in `x-scopes`."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "cix_sk_ followed by 40 letters and digits"}},
            "headers": {**HEADERS, **RETRY_AFTER},
        },
    }
