"""Engine options: one declaration per option (:class:`Option`), from which come the options Struct
that validates a submission and the JSON Schema that documents it (:mod:`engines.schema`), and the
metacharacter rule every string value passes before it reaches an argv list.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from engines import schema

# Printable, no shell or argv metacharacters. Values still go into argv lists only; this is the
# second wall, so that nothing odd reaches a scanner's own option parser either.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f;&|`$<>\\\"'(){}\[\]*?!~#%^\s]")


class OptionError(ValueError):
    """An engine option is unknown, ill-typed, out of range or not allowed here."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Option:
    """One engine option: its type and bounds. It becomes a field of the engine's options Struct
    (:mod:`engines.schema`), which both validates submissions and gives the JSON Schema (``GET
    /engines``, OpenAPI): one declaration, one schema."""

    name: str
    kind: str  # "integer" | "boolean" | "string" | "enum"
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # full-match regex for strings
    max_length: int = 256
    normalize: Callable[[Any], Any] | None = None  # raises ValueError with a message
    # False: skip the generic metacharacter check for a value whose syntax needs one of those
    # characters (a form body's '&'); the full-match ``pattern`` alone decides, so it must be strict.
    generic_check: bool = True

    def __post_init__(self) -> None:
        if not self.generic_check and not self.pattern:
            raise TypeError(f"option {self.name}: generic_check=False needs a pattern")


def check_safe_string(where: str, value: str, max_length: int = 256) -> None:
    """Reject values that could be read as a flag or carry metacharacters (the same rule as
    :data:`engines.schema.SAFE_STRING`, with a message saying which part failed)."""
    if not value:
        raise OptionError(where, "must not be empty")
    if len(value) > max_length:
        raise OptionError(where, f"must be at most {max_length} characters")
    if value.startswith("-"):
        raise OptionError(where, "must not start with '-'")
    if _UNSAFE_CHARS.search(value):
        raise OptionError(where, "contains characters that are not allowed")
    if ".." in value or value.startswith("/"):
        raise OptionError(where, "must not be a path")


@functools.lru_cache(maxsize=256)
def options_struct(engine: str, options: tuple[Option, ...]) -> type[msgspec.Struct]:
    return schema.options_type(engine, options)


def _explain(options: tuple[Option, ...]) -> schema.Explainer:
    """Why a string option failed its pattern: the generic rule's own words, when it was that."""
    def explain(field: str, value: Any) -> str | None:
        option = next((o for o in options if f"options.{o.name}" == field), None)
        if option is None or option.kind != "string" or not isinstance(value, str) or not option.generic_check:
            return None
        try:
            check_safe_string(field, value, option.max_length)
        except OptionError as exc:
            return exc.message
        return None
    return explain


def validate_options(schema_: Sequence[Option], raw: Any, engine: str = "engine",
                     struct: type[msgspec.Struct] | None = None) -> dict[str, Any]:
    """Check ``raw`` against the options Struct (``struct``, else made from ``schema_``): unknown names
    are rejected, never passed through; ``null`` means not given. Then each option's ``normalize``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise OptionError("options", "must be an object")
    options = tuple(schema_)
    try:
        value = schema.convert(dict(raw), struct or options_struct(engine, options), root="options",
                               prefix="options.", explain=_explain(options))
    except schema.SchemaError as exc:
        raise OptionError(exc.field, "unknown option" if exc.kind == "unknown" else exc.message) from None
    clean = schema.given(value)
    for option in options:
        if option.normalize is not None and option.name in clean:
            try:
                clean[option.name] = option.normalize(clean[option.name])
            except ValueError as exc:
                raise OptionError(f"options.{option.name}", str(exc)) from None
    return clean
