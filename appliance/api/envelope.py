"""The contract's JSON envelope (§1), pagination, and reading a JSON body."""
from __future__ import annotations

import json
import math
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from appliance.errors import ApiError, ValidationError
from appliance.store import Reader


def ok(data: Any, status: int = 200, pagination: dict[str, int] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return JSONResponse(body, status_code=status)


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def page_params(request: Request, max_limit: int = 100, default_limit: int = 20) -> tuple[int, int]:
    """``page`` (from 1) and ``limit`` (1..max_limit) from the query string."""
    return (_query_int(request, "page", 1, 1, 10**9),
            _query_int(request, "limit", default_limit, 1, max_limit))


def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ValidationError(name, f"must be an integer between {lo} and {hi}")
    return int(raw)


def pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}


def paged(request: Request, reader: Reader, table: str, where: str, params: list[Any], order: str,
          to_json: Callable[[Any], Any], max_limit: int = 100, default_limit: int = 20
          ) -> tuple[list[Any], dict[str, int]]:
    """One page of ``table`` rows matching ``where``, as JSON, with the contract's pagination."""
    page, limit = page_params(request, max_limit, default_limit)
    total = reader.scalar(f"SELECT count(*) FROM {table} WHERE {where}", params)
    rows = reader.all(f"SELECT * FROM {table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                      [*params, limit, (page - 1) * limit])
    return [to_json(r) for r in rows], pagination(page, limit, total)


async def read_json(request: Request, empty_ok: bool = False) -> Any:
    """The request body as JSON; 400 ``INVALID_JSON`` if it is not. Size is capped by middleware."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    body = await request.body()
    if not body.strip():
        if empty_ok:
            return {}
        raise ApiError(400, "INVALID_JSON", "request body must be a JSON object")
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(400, "INVALID_JSON", "Content-Type must be application/json")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "INVALID_JSON", f"malformed JSON: {exc}") from None
