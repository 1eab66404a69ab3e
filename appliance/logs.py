"""Logging, configured once per process (``serve`` and ``worker``): text or JSON lines on stderr.

* Every line logged while a scan runs carries its scan id (a context variable set by the scan task,
  read by a filter), so journald or a SIEM can follow one scan across the task, runner and reporter.
* Huey's own INFO lines name Huey task ids, which mean nothing to an operator: the ``huey`` logger
  is held at WARNING (its errors still show, tagged with the scan when one runs).
* Structured fields go in ``extra={"cix": {...}}``: JSON puts them at the top level of the line,
  text appends them as ``key=value``.
* One access line per request (``cix.access``): method, route template (never the path: it holds
  ids), status, duration, key id prefix and request id.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from appliance.api.middleware import PRINCIPAL

SCAN_ID: ContextVar[str | None] = ContextVar("cix_scan_id", default=None)
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
access_log = logging.getLogger("cix.access")
_HANDLER_MARK = "_cix_handler"


@contextlib.contextmanager
def scan_context(scan_id: str) -> Iterator[None]:
    """Tag every line logged in this block (on this thread) with ``scan_id``."""
    token = SCAN_ID.set(scan_id)
    try:
        yield
    finally:
        SCAN_ID.reset(token)


class ScanIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "scan_id", None) is None:
            record.scan_id = SCAN_ID.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    scan_id = getattr(record, "scan_id", None)
    if scan_id:
        fields["scanId"] = scan_id
    extra = getattr(record, "cix", None)
    if isinstance(extra, Mapping):
        fields.update(extra)
    return fields


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        head, sep, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{tail}]{sep}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {"time": f"{created}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage(), **_fields(record)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Install the one stderr handler (again: replaces the one installed before, never adds a second)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(ScanIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("huey").setLevel(max(logging.WARNING, root.level))


def route_template(scope: Mapping[str, Any]) -> str:
    """``/api/v1/scans/{scan_id}``: the matched route, with the mount it sits under; ``<unmatched>``
    when no route matched (a label or log field must never carry a path a client made up)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "<unmatched>"
    root = scope.get("root_path", "")
    return f"{root}{path}" if isinstance(root, str) else path


def log_request(scope: Mapping[str, Any], status: int, seconds: float, request_id: str) -> None:
    """The access line of one request (a :class:`~appliance.api.middleware.RequestMiddleware` observer)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    principal = scope.get(PRINCIPAL)
    route = route_template(scope)
    ms = round(seconds * 1000, 1)
    key = principal.id[:12] if principal is not None else None
    access_log.info("%s %s %d %.1fms", scope.get("method"), route, status, ms,
                    extra={"cix": {"method": scope.get("method"), "route": route, "status": status,
                                   "durationMs": ms, "keyId": key, "requestId": request_id,
                                   "clientIp": scope.get("cix.client_ip")}})
