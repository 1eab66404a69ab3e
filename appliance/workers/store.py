"""Worker tokens (``cix_wk_`` + 40 alphanumerics, stored only as SHA-256) and worker rows."""
from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance import clock
from appliance.audit import audit_op
from appliance.credentials import hash_key
from appliance.store.ops import BUMP_EPOCH, Op
from appliance.targets import parse_policy_entry

TOKEN_PREFIX = "cix_wk_"
TOKEN_RE = re.compile(r"^cix_wk_[A-Za-z0-9]{40}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    name: str
    zones: tuple[str, ...]

    @property
    def owner(self) -> str:
        """The lease owner of scans this worker runs."""
        return f"worker:{self.id}"


def generate_token() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def normalize_zones(zones: Iterable[str]) -> list[str]:
    """Each zone a CIDR or a domain suffix, in its canonical text; raises ValueError."""
    return list(dict.fromkeys(parse_policy_entry(z).text for z in zones))


def add_ops(name: str, zones: list[str], actor: str) -> tuple[dict[str, Any], list[Op]]:
    """A new worker: its row (with the raw token, to print once) and the ops that store its hash."""
    if not NAME_RE.match(name):
        raise ValueError("worker names are 1-63 characters of a-z, 0-9, '.', '_' and '-'")
    token = generate_token()
    worker_id = f"wk-{uuid.uuid4()}"
    ops = [Op([("INSERT INTO workers (id, name, token_hash, zones, created_at) VALUES (?,?,?,?,?)",
                (worker_id, name, hash_key(token), json.dumps(zones), clock.now())), BUMP_EPOCH]),
           audit_op(None, actor, "worker.added", "worker", worker_id, {"name": name, "zones": zones})]
    return {"id": worker_id, "name": name, "token": token, "zones": zones}, ops


def revoke_ops(worker_id: str, name: str, actor: str) -> list[Op]:
    return [Op([("UPDATE workers SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (clock.now(), worker_id)),
                BUMP_EPOCH], guarded=True),
            audit_op(None, actor, "worker.revoked", "worker", worker_id, {"name": name})]


def identity(row: Any) -> WorkerIdentity:
    return WorkerIdentity(row["id"], row["name"], tuple(json.loads(row["zones"])))


def seen_op(worker_id: str, version: str, engines: list[str], running: int) -> Op:
    return Op([("UPDATE workers SET last_seen_at = ?, version = ?, engines = ?, running = ? WHERE id = ?",
                (clock.now(), version, json.dumps(engines), running, worker_id))])
