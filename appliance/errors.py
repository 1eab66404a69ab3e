"""Errors that reach a client, each with the contract's HTTP status and code (§2).

    ApplianceError
     └── ApiError(status, code, message, details)   -> the error envelope
          └── ValidationError                        -> 400, names the field
"""
from __future__ import annotations

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

