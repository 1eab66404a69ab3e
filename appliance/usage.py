"""The API call log (rows collected per request and written in batches by the writer) and the monthly
scan quota."""
from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance import clock
from appliance.errors import ApiError
from appliance.store.ops import Op, Statement, json_rows, rows_op
from appliance.store.reader import Reader

_COLUMNS = ("tenant_id", "api_key_id", "method", "path", "status", "duration_ms", "ip", "request_id",
            "created_at")
_ROW = operator.itemgetter(*_COLUMNS)  # call dict -> row tuple, in C (once per request)
_INSERT = f"INSERT INTO api_calls ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"
_INSERT_JSON = f"INSERT INTO api_calls ({','.join(_COLUMNS)}) {json_rows(len(_COLUMNS))}"


class CallLog:
    def __init__(self, cap: int = 100_000) -> None:
        self._rows: list[Sequence[Any]] = []
        self._cap = cap  # a stalled writer must not grow memory without bound

    def record(self, call: dict[str, Any]) -> None:
        if len(self._rows) < self._cap:
            self._rows.append(_ROW(call))

    def drain(self) -> list[Op]:
        if not self._rows:
            return []
        rows, self._rows = self._rows, []
        return [rows_op(_INSERT, _INSERT_JSON, rows)]


# -- monthly scan quota (§7) -------------------------------------------------------------------------
def month_bounds(now: float) -> tuple[float, float]:
    """Start of this calendar month and of the next one (UTC), as unix seconds."""
    today = datetime.fromtimestamp(now, UTC)
    start = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), following.timestamp()


def quota_limit(tenant_quota: int | None, default: int) -> int | None:
    """The tenant's monthly scan quota: its own setting, else the config's; None when unlimited."""
    limit = default if tenant_quota is None else tenant_quota
    return limit or None


def scans_this_month(reader: Reader, tenant_id: str, now: float) -> int:
    start, _ = month_bounds(now)
    return int(reader.scalar("SELECT count(*) FROM scans WHERE tenant_id = ? AND created_at >= ?", (tenant_id, start)))


def quota_guard(tenant_id: str, limit: int, now: float) -> Statement:
    """A guard statement that changes one row while the tenant is under ``limit`` this month. Placed
    first in the scan's insert op, the count and the insert share one transaction: two racing
    submissions cannot both take the last scan."""
    start, _ = month_bounds(now)
    return ("UPDATE tenants SET scan_quota = scan_quota WHERE id = ?"
            " AND (SELECT count(*) FROM scans WHERE tenant_id = ? AND created_at >= ?) < ?",
            (tenant_id, tenant_id, start, limit))


def quota_exceeded(limit: int, now: float) -> ApiError:
    _, resets = month_bounds(now)
    return ApiError(429, "QUOTA_EXCEEDED", f"monthly scan quota of {limit} reached; it resets at {clock.iso(resets)}",
                    headers={"Retry-After": str(max(1, math.ceil(resets - now)))})
