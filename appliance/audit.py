"""Audit trail: who changed what. Events go through the writer like every other write."""
from __future__ import annotations

import json
from typing import Any

from appliance import clock
from appliance.store.ops import Op


def audit_op(tenant_id: str | None, actor: str, action: str, resource_type: str,
             resource_id: str | None, details: dict[str, Any]) -> Op:
    """An audit event; ``actor`` is ``key:<id>`` for API calls and ``cli:<user>`` for the CLI."""
    return Op([("INSERT INTO audit_events (tenant_id, actor, action, resource_type, resource_id,"
                " details, created_at) VALUES (?,?,?,?,?,?,?)",
                (tenant_id, actor, action, resource_type, resource_id, json.dumps(details), clock.now()))])
