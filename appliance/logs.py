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
import threading
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
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time(record.created)

    def _time(self, created: float) -> str:
        # An access line per request: the date part is formatted once a second, not once a line.
        second = int(created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, self.converter(created)))
        return f"{self._second[1]},{int((created - second) * 1000):03d}"  # the default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{_tail(fields)}]{sep}{rest}"

    def line(self, created: float, level: str, name: str, message: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` makes of a record without a traceback (see :func:`log_request`)."""
        return f"{self._time(created)} {level} {name}: {message} [{_tail(fields)}]"


def _tail(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = self._document(record.created, record.levelname, record.name, record.getMessage(), _fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)

    def line(self, created: float, level: str, name: str, message: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` makes of a record without a traceback (see :func:`log_request`)."""
        return json.dumps(self._document(created, level, name, message, fields), default=str, ensure_ascii=False)

    @staticmethod
    def _document(created: float, level: str, name: str, message: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        return {"time": f"{stamp}.{int((created - int(created)) * 1000):03d}Z", "level": level.lower(),
                "logger": name, "message": message, **fields}


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches: at most ``delay`` seconds after the first line
    of a batch, at once for WARNING and above, and at exit (``logging.shutdown`` flushes every
    handler). A write and flush per line cost more than the access line itself; a SIGKILL loses at
    most ``delay`` seconds of INFO lines."""

    def __init__(self, stream: Any = None, delay: float = 0.1) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._delay = delay
        self._pending = threading.Event()
        threading.Thread(target=self._flush_later, name="cix-log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)
        if record.levelno >= logging.WARNING:
            self.flush()

    def write_line(self, line: str) -> None:
        """Add a formatted line (ending in a newline) to the next batch."""
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
        if not self._pending.is_set():
            self._pending.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if lines:
                try:
                    self.stream.write("".join(lines))
                except Exception:  # a closed or broken stderr must not fail the caller
                    return
            super().flush()

    def _flush_later(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(self._delay)
            self._pending.clear()
            self.flush()


def configure(level: str = "info", fmt: str = "text") -> None:
    """Install the one stderr handler (again: replaces the one installed before, never adds a second)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    # No format here prints the caller's file and line, the thread or the process: skip looking them
    # up for every record (the logging documentation's own advice; an access line per request).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(sys.stderr)
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
    method = scope.get("method")
    fields = {"method": method, "route": route, "status": status, "durationMs": ms,
              "keyId": principal.id[:12] if principal is not None else None, "requestId": request_id,
              "clientIp": scope.get("cix.client_ip")}
    handler = _sole_handler()
    if handler is None:
        access_log.info("%s %s %d %.1fms", method, route, status, ms, extra={"cix": fields})
        return
    # The line the record would have become, without the record: the logging machinery (record,
    # filters, handler lookup) cost more than everything else the request did outside the server.
    scan_id = SCAN_ID.get()
    formatter: TextFormatter | JsonFormatter = handler.formatter  # type: ignore[assignment]
    handler.write_line(formatter.line(time.time(), "INFO", access_log.name, f"{method} {route} {status} {ms:.1f}ms",
                                      {"scanId": scan_id, **fields} if scan_id else fields) + handler.terminator)


def _sole_handler() -> BufferedStreamHandler | None:
    """The handler :func:`configure` installed, when it alone would see an access record."""
    handlers = logging.root.handlers
    if (len(handlers) != 1 or access_log.handlers or access_log.filters or not access_log.propagate
            or access_log.parent is not logging.root):
        return None
    handler = handlers[0]
    if not isinstance(handler, BufferedStreamHandler) or handler.level > logging.INFO:
        return None
    return handler
