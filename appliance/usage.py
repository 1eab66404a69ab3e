"""The API call log: rows collected per request and written in batches by the writer."""
from __future__ import annotations

from typing import Any

from appliance.store.ops import Op

_COLUMNS = ("tenant_id", "api_key_id", "method", "path", "status", "duration_ms", "ip", "request_id",
            "created_at")


class CallLog:
    def __init__(self, cap: int = 100_000) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._cap = cap  # a stalled writer must not grow memory without bound

    def record(self, call: dict[str, Any]) -> None:
        if len(self._rows) < self._cap:
            self._rows.append(tuple(call[c] for c in _COLUMNS))

    def drain(self) -> list[Op]:
        if not self._rows:
            return []
        rows, self._rows = self._rows, []
        marks = ",".join("?" * len(_COLUMNS))
        return [Op([(f"INSERT INTO api_calls ({','.join(_COLUMNS)}) VALUES ({marks})", ())],
                   many={0: rows})]
