"""Errors that reach a client, each with the contract's HTTP status and code (§2).

    ApplianceError
     └── ApiError(status, code, message, details)   -> the error envelope
          ├── ValidationError                        -> 400, names the field
          └── StorageFull                            -> 503, the disk is full
"""
from __future__ import annotations

import errno
import sqlite3
from typing import Any


class ApplianceError(Exception):
    """Base of the appliance's own exceptions."""


class ApiError(ApplianceError):
    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "error": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class ValidationError(ApiError):
    def __init__(self, field: str, message: str, code: str = "VALIDATION_ERROR") -> None:
        super().__init__(400, code, f"{field}: {message}", [{"field": field, "message": message}])
        self.field = field



class StorageFull(ApiError):
    """A write failed for lack of space: the client may retry once an operator freed some."""

    RETRY_AFTER = 60

    def __init__(self) -> None:
        super().__init__(503, "SERVICE_UNAVAILABLE", "storage is full; writes are suspended until space is freed",
                         headers={"Retry-After": str(self.RETRY_AFTER)})


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or an OS-level ENOSPC/EDQUOT."""
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
