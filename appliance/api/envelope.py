"""The contract's JSON envelope (§1), pagination, query parameters, and reading a JSON body."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from appliance.errors import ApiError, ValidationError
from appliance.store import Reader
from appliance.validate import parse_decimal

# Deeper than any body the API accepts; far below the parser's recursion limit.
MAX_JSON_DEPTH = 32
PAGE_PARAMS = ("page", "limit")
T = TypeVar("T")


class ApiJSONResponse(JSONResponse):
    """Starlette's JSON response rendered by orjson (the same compact UTF-8 text, several times
    faster). What orjson refuses goes through the json module as before: keys that are not strings,
    integers beyond 64 bits, and text which is not valid Unicode (a row stored before bodies were
    checked), which is sent \\u-escaped instead of failing the request with a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            pass
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def ok(data: Any, status: int = 200, pagination: dict[str, int] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return ApiJSONResponse(body, status_code=status)


def error_response(exc: ApiError) -> JSONResponse:
    return ApiJSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def check_query(request: Request, allowed: Iterable[str]) -> None:
    """400 naming the first query parameter this route does not know: a filter that is silently
    ignored answers a different question than the one asked."""
    if not request.scope["query_string"]:
        return
    known = set(allowed)
    unknown = sorted(name for name in request.query_params if name not in known)
    if unknown:
        raise ValidationError(unknown[0], f"unknown query parameter; this route accepts: {', '.join(sorted(known))}")


def page_params(request: Request, max_limit: int = 100, default_limit: int = 20) -> tuple[int, int]:
    """``page`` (from 1) and ``limit`` (1..max_limit) from the query string."""
    return (query_int(request, "page", 1, 1, 10**9),
            query_int(request, "limit", default_limit, 1, max_limit))


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = parse_decimal(raw)
    if value is None or not lo <= value <= hi:
        raise ValidationError(name, f"must be an integer between {lo} and {hi}")
    return value


def pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit)}


def paged(request: Request, reader: Reader, table: str, where: str, params: list[Any], order: str,
          to_json: Callable[[Any], Any], max_limit: int = 100, default_limit: int = 20, columns: str = "*",
          as_values: bool = False) -> tuple[list[Any], dict[str, int]]:
    """One page of ``table`` rows matching ``where``, as JSON, with the contract's pagination.
    ``as_values``: ``to_json`` gets plain tuples in the order of ``columns`` instead of ``sqlite3.Row``."""
    page, limit = page_params(request, max_limit, default_limit)
    total = reader.scalar(f"SELECT count(*) FROM {table} WHERE {where}", params)
    rows = (reader.all_values if as_values else reader.all)(
        f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit])
    return [to_json(r) for r in rows], pagination(page, limit, total)


async def read_json(request: Request, empty_ok: bool = False) -> Any:
    """The request body as JSON; 400 ``INVALID_JSON`` if it is not. Size is capped by middleware.

    Every string that reaches the database comes through here, so this is where text that cannot
    be stored and served again (lone UTF-16 surrogates from ``\\ud800`` escapes) is refused."""
    body = await request.body()
    if not body.strip():
        if empty_ok:
            return {}
        raise ApiError(400, "INVALID_JSON", "request body must be a JSON object")
    if not _json_content(request):
        raise ApiError(400, "INVALID_JSON", "Content-Type must be application/json")
    data, strict = _parse(body)
    # orjson accepts only valid UTF-8 and refuses lone surrogate escapes: what it parsed needs no
    # string-by-string check (the escape search is a second guard); what the json module parsed does.
    if not strict or _SURROGATE_ESCAPE.search(body) is not None:
        _check_tree(data)
    else:
        _check_depth(data)
    return data


async def read_typed(request: Request, decoder: msgspec.json.Decoder[T]) -> T | None:
    """The body decoded and type-checked by ``decoder`` in one pass of C code, when it is a body that
    :func:`read_json` would hand to orjson and check for depth alone (no surrogate escape, no integer
    beyond 64 bits) and ``decoder`` accepts it; else None, and :func:`read_json` gives the answer,
    its errors included. Depth is the caller's to check (:func:`check_depth`), below the levels the
    type fixes."""
    body = await request.body()
    if (not body.strip() or not _json_content(request) or _SURROGATE_ESCAPE.search(body) is not None
            or _LONG_RUN in body.translate(_DIGITS_TO_ZERO)):
        return None
    try:
        return decoder.decode(body)
    except msgspec.DecodeError:  # a ValidationError too
        return None


def _json_content(request: Request) -> bool:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# orjson reads integers beyond 64 bits (20 digits and more) as floats; json keeps them exact. A body
# with a run of 20 digits anywhere goes to json: digits are mapped to "0" and the run searched (a
# regex scanning every digit position costs ten times more).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 20


def _parse(body: bytes) -> tuple[Any, bool]:
    """``(data, True)`` when orjson accepts the body (most bodies; several times faster), else the json
    module's result or error, which is the answer (NaN, big integers, UTF-16, deep nesting)."""
    if _LONG_RUN not in body.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body), False
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "INVALID_JSON", f"malformed JSON: {exc}") from None


_Path = tuple[Any, ...]  # (parent path, key or index), built as the tree is walked; text only on error


def _path_text(path: _Path | None) -> str:
    """The field as reported: ``body`` for the whole body, ``a.b[2]`` below it."""
    parts: list[Any] = []
    while path is not None:
        path, part = path
        parts.append(part)
    text = "body"
    for part in reversed(parts):
        if isinstance(part, int):
            text = f"{text}[{part}]"
            continue
        text = part if text == "body" else f"{text}.{part}"
    return text


def _check_tree(data: Any) -> None:
    """Depth and Unicode validity of every key and string, iteratively (no recursion to exhaust)."""
    stack: list[tuple[_Path | None, Any, int]] = [(None, data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        kind = type(value)
        if kind is str:
            _check_text(_path_text(path), value)
        elif kind is dict:
            for key, item in value.items():
                _check_text(_path_text(path), key)  # a bad key is reported as its object
                stack.append(((path, key), item, depth + 1))
        elif kind is list:
            stack.extend(((path, index), item, depth + 1) for index, item in enumerate(value))


def _check_depth(data: Any) -> None:
    """Depth alone (the text is known to be valid), level by level: containers only, no paths (the
    error names none), each level's children gathered by a comprehension rather than one loop turn
    and stack entry per value — a findings batch holds thousands of values."""
    check_depth([data] if type(data) in _CONTAINERS else [], 0)


def check_depth(level: list[Any], depth: int) -> None:
    """``level``: containers nested ``depth`` deep in a body; 400 when any of them or what they hold
    lies deeper than :data:`MAX_JSON_DEPTH`."""
    while level:
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        level = [item for value in level for item in (value.values() if type(value) is dict else value)
                 if type(item) in _CONTAINERS]
        depth += 1


def _too_deep() -> ApiError:
    return ApiError(400, "INVALID_JSON", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


_CONTAINERS = (dict, list)


def _check_text(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        message = "not valid Unicode (lone surrogate escape)"
        raise ApiError(400, "INVALID_JSON", f"{path}: {message}", [{"field": path, "message": message}]) from None
