"""Typed access to a JSON request body; every problem is a :class:`ValidationError` naming the field."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.errors import ValidationError

_MISSING = object()


class Body:
    """Reads fields from a JSON object; ``finish()`` rejects the fields nobody asked for."""

    def __init__(self, data: Any, allowed: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise ValidationError("body", "must be a JSON object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValidationError(unknown[0], "unknown field")
        self.data = data

    def _get(self, name: str, required: bool) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise ValidationError(name, "is required")
            return _MISSING
        return value

    def string(self, name: str, required: bool = False, max_length: int = 255,
               choices: Iterable[str] | None = None, default: str | None = None) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ValidationError(name, "must be a string")
        if required and not value.strip():
            raise ValidationError(name, "must not be empty")
        if len(value) > max_length:
            raise ValidationError(name, f"must be at most {max_length} characters")
        if choices is not None and value not in choices:
            raise ValidationError(name, f"must be one of {', '.join(choices)}")
        return value

    def integer(self, name: str, minimum: int, maximum: int, default: int | None = None,
                required: bool = False) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        return check_int(name, value, minimum, maximum)

    def strings(self, name: str, max_items: int = 100, max_length: int = 255,
                choices: Iterable[str] | None = None, default: list[str] | None = None) -> list[str] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        return check_strings(name, value, max_items, max_length, choices)

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            raise ValidationError(name, "must be an object")
        return value


def parse_decimal(text: str, max_digits: int = 18) -> int | None:
    """A non-negative ASCII decimal, else None. ``str.isdigit`` alone accepts '²' and other digits
    ``int`` refuses, and ``int`` refuses more than 4300 digits: both were 500s."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def check_int(name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, "must be an integer")
    if not minimum <= value <= maximum:
        raise ValidationError(name, f"must be between {minimum} and {maximum}")
    return value


def check_strings(name: str, value: Any, max_items: int = 100, max_length: int = 255,
                  choices: Iterable[str] | None = None) -> list[str]:
    if not isinstance(value, list):
        raise ValidationError(name, "must be an array of strings")
    if len(value) > max_items:
        raise ValidationError(name, f"must have at most {max_items} items")
    allowed = set(choices) if choices is not None else None
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(item, str) or not item:
            raise ValidationError(where, "must be a non-empty string")
        if len(item) > max_length:
            raise ValidationError(where, f"must be at most {max_length} characters")
        if allowed is not None and item not in allowed:
            raise ValidationError(where, f"unknown value {item!r}")
    return list(dict.fromkeys(value))
