"""Webhooks and deliveries: request bodies, rows, ops and the contract's JSON (§6)."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance import clock
from appliance.audit import audit_op
from appliance.bodies import WebhookPatch, WebhookRequest, given, parse
from appliance.errors import ValidationError
from appliance.store.ops import Op, Statement
from appliance.webhooks.secretbox import SecretBox, new_secret

EVENTS = ("scan.queued", "scan.started", "scan.completed", "scan.failed", "scan.cancelled")
DEFAULT_EVENTS = ["scan.completed", "scan.failed"]
TEST_EVENT = "webhook.test"
FIELDS = ("name", "url", "events", "isActive")
UNHEALTHY_AFTER = 5  # consecutive failed attempts


def parse_body(data: Any, partial: bool = False) -> dict[str, Any]:
    """Fields of a create (or, ``partial``, a PATCH) body as column values; the URL's egress check
    is the caller's (it resolves names)."""
    body = given(parse(data, WebhookPatch if partial else WebhookRequest))
    out: dict[str, Any] = {k: body[k] for k in ("name", "url") if k in body}
    if "events" in body:
        out["events"] = json.dumps(list(dict.fromkeys(body["events"])))
    elif not partial:
        out["events"] = json.dumps(DEFAULT_EVENTS)
    if "isActive" in body:
        out["is_active"] = int(body["isActive"])
    if partial and not out:
        raise ValidationError("body", "names no field to change")
    return out


def create_ops(tenant_id: str, fields: dict[str, Any], box: SecretBox, actor: str) -> tuple[str, str, list[Op]]:
    webhook_id = clock.new_id("wh-")
    secret = new_secret()
    now = clock.now()
    row = {"id": webhook_id, "tenant_id": tenant_id, "is_active": 1, **fields,
           "secret": box.seal(secret, webhook_id), "created_at": now, "updated_at": now}
    insert = Op([(f"INSERT INTO webhooks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                  tuple(row.values()))])
    details = {"name": row["name"], "url": row["url"], "events": json.loads(row["events"])}
    return webhook_id, secret, [insert, audit_op(tenant_id, actor, "webhook.created", "webhook", webhook_id, details)]


def update_ops(row: sqlite3.Row, fields: dict[str, Any], actor: str) -> list[Op]:
    sets = ", ".join(f"{k} = ?" for k in fields)
    changed = {k: (json.loads(v) if k == "events" else bool(v) if k == "is_active" else v) for k, v in fields.items()}
    return [Op([(f"UPDATE webhooks SET {sets}, updated_at = ? WHERE id = ?",
                 (*fields.values(), clock.now(), row["id"]))]),
            audit_op(row["tenant_id"], actor, "webhook.updated", "webhook", row["id"], changed)]


def delete_ops(row: sqlite3.Row, actor: str) -> list[Op]:
    """The webhook and its deliveries (cascade); scans are untouched."""
    return [Op([("DELETE FROM webhooks WHERE id = ?", (row["id"],))]),
            audit_op(row["tenant_id"], actor, "webhook.deleted", "webhook", row["id"], {"name": row["name"]})]


def rotate_ops(row: sqlite3.Row, box: SecretBox, grace_hours: int, actor: str) -> tuple[str, float | None, list[Op]]:
    """A new secret; the current one keeps signing (second signature) for ``grace_hours``."""
    secret = new_secret()
    until = clock.now() + grace_hours * 3600 if grace_hours else None
    old = row["secret"] if until else None
    ops = [Op([("UPDATE webhooks SET secret = ?, secret_old = ?, secret_old_until = ?, updated_at = ? WHERE id = ?",
                (box.seal(secret, row["id"]), old, until, clock.now(), row["id"]))]),
           audit_op(row["tenant_id"], actor, "webhook.secret_rotated", "webhook", row["id"],
                    {"graceHours": grace_hours})]
    return secret, until, ops


def signing_secrets(box: SecretBox, owner: str, current: str | None, old: str | None,
                    old_until: float | None) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    out = [box.unseal(current, owner)] if current else []
    if old and old_until and old_until > clock.now():
        out.append(box.unseal(old, owner))
    return out


def webhook_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "url": row["url"], "events": json.loads(row["events"]),
            "isActive": bool(row["is_active"]), "isHealthy": row["consecutive_failures"] < UNHEALTHY_AFTER,
            "consecutiveFailures": row["consecutive_failures"],
            "previousSecretExpiresAt": clock.iso(row["secret_old_until"]) if row["secret_old"] else None,
            "createdAt": clock.iso(row["created_at"]), "updatedAt": clock.iso(row["updated_at"])}


def delivery_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "webhookId": row["webhook_id"], "event": row["event"], "scanId": row["scan_id"],
            "attempt": row["attempt"], "status": row["status"], "responseStatus": row["response_status"],
            "responseBodyExcerpt": row["response_excerpt"], "durationMs": row["duration_ms"], "error": row["error"],
            "nextAttemptAt": clock.iso(row["next_attempt_at"]), "createdAt": clock.iso(row["created_at"]),
            "deliveredAt": clock.iso(row["delivered_at"])}


def payload(delivery_id: str, event: str, tenant_id: str, data: dict[str, Any], created_at: float) -> str:
    """The body every attempt sends unchanged (only the timestamp and signature headers differ)."""
    return json.dumps({"id": delivery_id, "event": event, "createdAt": clock.iso(created_at),
                       "tenantId": tenant_id, "data": data}, separators=(",", ":"))


def insert_delivery(delivery_id: str, tenant_id: str, event: str, body: str, now: float, retries: int,
                    webhook_id: str | None = None, callback_url: str | None = None,
                    event_id: int | None = None, scan_id: str | None = None, due: bool = True) -> Statement:
    """A pending delivery; ``due`` False leaves it to its creator (the delivery loop skips it)."""
    return ("INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, callback_url, event_id, scan_id, event,"
            " payload, status, attempt, round_start, retries, next_attempt_at, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,'pending',0,0,?,?,?)",
            (delivery_id, tenant_id, webhook_id, callback_url, event_id, scan_id, event, body, retries,
             now if due else None, now))
