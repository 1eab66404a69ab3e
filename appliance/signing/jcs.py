"""RFC 8785 JSON Canonicalization Scheme (JCS) for the values ``json.loads`` produces.

The signed content of a report is the JCS encoding of its ``report`` member: a verifier who parses
the document (or a pretty-printed copy of it) and canonicalizes it again gets the same bytes.

What differs from ``json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``:
- object keys are sorted by their UTF-16 code units (Python sorts by code points; the two differ only
  when a key mixes characters above U+FFFF with ones in U+E000..U+FFFF);
- numbers are written as ECMAScript's ``Number.prototype.toString`` writes the IEEE-754 double:
  ``7.0`` is ``7``, ``1e-05`` is ``0.00001``, ``1e-07`` is ``1e-7``; integers beyond 2**53 are
  written as the double they round to;
- text that is not valid Unicode (a lone surrogate) cannot be encoded: :func:`canonical` replaces
  each one with U+FFFD, and NaN and infinities (which JSON cannot hold) become ``null``.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

_SAFE_INT = 2**53
_encode_string: Callable[[str], str] = json.encoder.encode_basestring
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def number(value: int | float) -> str:
    """ECMAScript's shortest round-trip form of ``value`` as a double (RFC 8785 §3.2.2.3)."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(value, int) and -_SAFE_INT <= value <= _SAFE_INT:
        return str(value)
    x = float(value)
    if not math.isfinite(x):
        raise ValueError("NaN and infinities have no JSON form")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript does; only the layout differs.
    digits_tuple, exponent = Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_tuple))
    assert isinstance(exponent, int)
    k, n = len(digits), len(digits) + exponent  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"


def _key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _string(text: str) -> str:
    # json's non-ASCII-escaping string encoder escapes exactly what RFC 8785 escapes: '"', '\\' and
    # U+0000..U+001F (short forms for \b \t \n \f \r, lowercase \u00xx for the rest).
    if not text.isascii():
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return _encode_string(text)


def dumps(value: Any) -> str:
    """The JCS text of ``value`` (dict, list, str, int, float, bool, None), iteratively."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            out.append(item.text)
        elif isinstance(item, str):
            out.append(_string(item))
        elif item is None or item is True or item is False:
            out.append("null" if item is None else "true" if item else "false")
        elif isinstance(item, (int, float)):
            out.append(number(item) if isinstance(item, int) or math.isfinite(item) else "null")
        elif isinstance(item, dict):
            keys = sorted(item, key=_key)
            parts: list[Any] = [_Literal("}")]
            for index in range(len(keys) - 1, -1, -1):
                parts.append(item[keys[index]])
                parts.append(_Literal(("{" if index == 0 else ",") + _string(keys[index]) + ":"))
            if not keys:
                parts = [_Literal("{}")]
            stack.extend(parts)
        elif isinstance(item, (list, tuple)):
            parts = [_Literal("]")]
            for index in range(len(item) - 1, -1, -1):
                parts.append(item[index])
                parts.append(_Literal("[" if index == 0 else ","))
            if not item:
                parts = [_Literal("[]")]
            stack.extend(parts)
        else:
            raise TypeError(f"{type(item).__name__} has no JSON form")
    return "".join(out)


def canonical(value: Any) -> bytes:
    """The JCS bytes (UTF-8) of ``value``."""
    return dumps(value).encode("utf-8")


class _NotPlain(Exception):
    """The document holds a number the fast path does not write as JCS does."""


def _refuse(literal: str) -> Any:
    raise _NotPlain()


def _plain_float(literal: str) -> int | float:
    """A number Python writes as JCS does: an integral value below 2**53 (as an int: JCS writes
    7.0 as 7), or one with a fraction between 1e-4 and 1e16 (both write the shortest digits in
    plain decimal notation)."""
    value = float(literal)
    if value.is_integer():
        if abs(value) <= _SAFE_INT:
            return int(value)
    elif 1e-4 <= abs(value) < 1e16:
        return value
    raise _NotPlain()


def _plain_int(literal: str) -> int:
    if len(literal) > 15:  # possibly beyond 2**53: JCS writes the double it rounds to
        raise _NotPlain()
    return int(literal)


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} has no JSON form")


_PLAIN = json.JSONDecoder(parse_float=_plain_float, parse_constant=_refuse, parse_int=_plain_int)
# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) without rebuilding the C
# encoder on every call (a third of the cost for a small document).
_make_encoder: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(json.encoder, "c_make_encoder",
                                                                                    None)
_C_SORTED_COMPACT = (None if _make_encoder is None else _make_encoder(
    None, _no_default, json.encoder.encode_basestring, None, ":", ",", True, False, True))


def _sorted_compact(value: Any) -> str:
    if _C_SORTED_COMPACT is not None:
        return "".join(_C_SORTED_COMPACT(value, 0))
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_BEYOND_BMP_START = re.compile("[\ud800-\U0010ffff]")


def from_json(text: str) -> str:
    """The JCS text of the JSON document ``text`` (a stored finding). Most findings hold no number
    outside what :func:`_plain_float` and :func:`_plain_int` accept and no character at or above
    U+D800: for those, the C encoder's sorted compact output is already JCS, at a fraction of
    :func:`dumps`' cost."""
    try:
        value = _PLAIN.decode(text)
    except _NotPlain:
        return dumps(json.loads(text))
    out = _sorted_compact(value)
    if out.isascii() or not _BEYOND_BMP_START.search(out):
        return out
    return dumps(value)


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text
