"""The one schema library: msgspec types validate request bodies, engine options and the settings
file, and the very same types give the JSON Schema of ``GET /engines`` and the OpenAPI document.

:func:`convert` checks a decoded JSON value against a type (strict: no coercion, ``true`` is not an
integer, unknown fields are refused) and turns msgspec's first error into a :class:`SchemaError`
naming the field as the contract does (``tags[1]``, ``options.ports``) with a message derived from the
type at that path (``must be between 30 and 86400``), never from the rejected value.

Why msgspec (measured, see docs/architecture.md): it validates a ``POST /scans`` body in about 2 µs
(pydantic v2: about 4 µs), imports in 25 ms (pydantic: 130 ms, which every CLI command and the frozen
binary would pay) and adds 0.7 MB (pydantic: 10 MB); its JSON Schema output is 2020-12, as OpenAPI 3.1
wants. Its errors are text, so the path and the kind of error are read from the message here, and the
explanation comes from the type itself.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>.+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.+)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_NOUNS = {mi.StrType: "a string", mi.IntType: "an integer", mi.FloatType: "a number", mi.BoolType: "a boolean",
          mi.ListType: "an array", mi.DictType: "an object", mi.StructType: "an object"}


class SchemaError(ValueError):
    """A value does not fit its type: ``field`` is the contract's field path, ``kind`` one of
    ``missing``, ``unknown``, ``type``, ``constraint``."""

    def __init__(self, field: str, message: str, kind: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.kind = kind


# Extra words for a failed pattern, by field path: ``explain(value) -> message | None``.
Explainer = Callable[[str, Any], str | None]


def convert(data: Any, type_: type[T], root: str = "body", prefix: str = "",
            explain: Explainer | None = None) -> T:
    """``data`` as ``type_``, else :class:`SchemaError`. ``prefix`` is put before every field name
    (``"options."``); ``root`` names the value itself when it is the wrong type (``"body"``)."""
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise error_of(str(exc), type_, data, root, prefix, explain) from None


def error_of(text: str, type_: Any, data: Any, root: str, prefix: str, explain: Explainer | None) -> SchemaError:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    message, path = match["message"], match["path"] or ""
    steps: list[str | int] = [name or (int(index) if index.isdigit() else index)
                              for name, index in _STEP.findall(path)]
    info = _walk(mi.type_info(type_), steps)
    for pattern, kind in ((_MISSING, "missing"), (_UNKNOWN, "unknown")):
        found = pattern.match(message)
        if found:
            return SchemaError(_field(root, prefix, [*steps, found["name"]]), "is required" if kind == "missing"
                               else "unknown field", kind)
    field = _field(root, prefix, steps)
    if ", got `" in message:
        return SchemaError(field, _type_message(info), "type")
    value = _value_at(data, steps)
    extra = explain(field, value) if explain is not None else None
    return SchemaError(field, extra or _constraint_message(info), "constraint")


def _field(root: str, prefix: str, steps: list[str | int]) -> str:
    if not steps:
        return root
    text = prefix
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text and not text.endswith(".") else step)
    return text


def _value_at(data: Any, steps: list[str | int]) -> Any:
    for step in steps:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _concrete(info: mi.Type) -> mi.Type:
    """A ``T | None`` (or ``| UNSET``) union's T; other unions stay as they are."""
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    if isinstance(info, mi.Metadata):
        return _concrete(info.type)
    return info


def _walk(info: mi.Type, steps: list[str | int]) -> mi.Type:
    info = _concrete(info)
    for step in steps:
        if isinstance(info, mi.StructType) and isinstance(step, str):
            fields = {f.encode_name: f.type for f in info.fields}
            if step not in fields:
                return info
            info = _concrete(fields[step])
        elif isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            info = _concrete(info.item_type)
        elif isinstance(info, mi.DictType):
            info = _concrete(info.value_type)
        else:
            return info
    return info


def _choices(info: mi.Type) -> str | None:
    if isinstance(info, mi.LiteralType):
        return "must be one of " + ", ".join(str(v) for v in info.values)
    return None


def _type_message(info: mi.Type) -> str:
    choices = _choices(info)
    if choices:
        return choices
    noun = _NOUNS.get(type(info))
    if isinstance(info, mi.ListType) and isinstance(_concrete(info.item_type), mi.StrType):
        noun = "an array of strings"
    return f"must be {noun}" if noun else "has the wrong type"


def _constraint_message(info: mi.Type) -> str:
    choices = _choices(info)
    if choices:
        return choices
    if isinstance(info, (mi.IntType, mi.FloatType)):
        lo, hi = info.ge if info.ge is not None else info.gt, info.le if info.le is not None else info.lt
        if lo is not None and hi is not None:
            return f"must be between {lo} and {hi}"
        return f"must be at least {lo}" if lo is not None else f"must be at most {hi}"
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return "has an invalid format"
        if info.max_length is not None and info.min_length:
            return (f"must be {info.min_length} to {info.max_length} characters" if info.min_length > 1
                    else f"must not be empty, and at most {info.max_length} characters")
        return f"must be at most {info.max_length} characters" if info.max_length is not None else "must not be empty"
    if isinstance(info, mi.ListType):
        if info.min_length:
            return f"must have {info.min_length} to {info.max_length} items"
        return f"must have at most {info.max_length} items"
    return "is out of range"


def json_schemas(types: list[Any], ref_template: str = "#/components/schemas/{name}"
                 ) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """JSON Schema (2020-12) of each type, plus the shared component schemas they refer to."""
    return msgspec.json.schema_components(types, ref_template=ref_template)


# -- engine options --------------------------------------------------------------------------------
# Printable, no shell or argv metacharacters, not a flag, not a path: the generic rule for string
# options (values go into argv lists only; this is the second wall). ECMA-262 and Python agree on it.
_SAFE_CLASS = r"[^\x00-\x1f\x7f;&|`$<>\\\"'(){}\[\]*?!~#%^\s]"
SAFE_STRING = rf"^(?![-/])(?![\s\S]*\.\.){_SAFE_CLASS}+$"
_NO_NEWLINE = r"(?![\s\S]*\n)"  # Python's $ also matches before a final newline


def option_pattern(pattern: str | None, generic_check: bool = True) -> str | None:
    """The anchored pattern a string option's value must match: its own full-match ``pattern``, and
    the generic safe-string rule unless the option opts out (then its own pattern must be strict)."""
    own = rf"(?=(?:{pattern})$)" if pattern else ""
    if generic_check:
        return rf"^{_NO_NEWLINE}(?![-/])(?![\s\S]*\.\.){own}{_SAFE_CLASS}+$"
    return rf"^{_NO_NEWLINE}(?:{pattern})$" if pattern else None


def option_field(option: Any) -> tuple[str, Any, Any]:
    """One :class:`~engines.options.Option` as a Struct field: ``(name, type, default)``; absent and
    ``null`` both mean "not given" (the engine's default applies)."""
    outer: dict[str, Any] = {"description": option.description}
    if option.default is not None:
        outer["extra_json_schema"] = {"default": option.default}
    meta: dict[str, Any] = {}
    kind = option.kind
    base: Any
    if kind == "boolean":
        base = bool
    elif kind == "integer":
        meta.update(ge=option.minimum, le=option.maximum)
        base = int
    elif kind == "enum":
        base = Literal[tuple(option.choices)]
    elif kind == "string":
        meta.update(min_length=1, max_length=option.max_length,
                    pattern=option_pattern(option.pattern, getattr(option, "generic_check", True)))
        base = str
    else:  # a schema bug, caught by the engine tests
        raise TypeError(f"option {option.name}: unknown kind {kind!r}")
    constraints = {k: v for k, v in meta.items() if v is not None}
    inner = Annotated[base, msgspec.Meta(**constraints)] if constraints else base
    return option.name, Annotated[inner | msgspec.UnsetType | None, msgspec.Meta(**outer)], msgspec.UNSET


def options_type(engine: str, options: Sequence[Any]) -> type[msgspec.Struct]:
    """The Struct of an engine's ``options`` object: unknown names are refused, never passed on."""
    name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", engine)) + "Options"
    return msgspec.defstruct(name, [option_field(o) for o in options], forbid_unknown_fields=True, kw_only=True)


def given(value: msgspec.Struct) -> dict[str, Any]:
    """The fields of a decoded Struct that were given (not absent, not null)."""
    return {f: v for f in value.__struct_fields__ if (v := getattr(value, f)) is not None and v is not msgspec.UNSET}
