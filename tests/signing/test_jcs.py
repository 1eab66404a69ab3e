"""RFC 8785 canonical JSON: numbers as ECMAScript writes them, keys in UTF-16 order, the escapes, and
the fast path for stored findings giving the same bytes as the full encoder."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest

from appliance.signing import jcs
from tests.results_helpers import contract_finding
from tests.signing.common import findings

FIXTURES = Path(__file__).parents[1] / "fixtures" / "jcs"


def test_numbers_are_written_as_ecmascript_writes_them():
    pairs = json.loads((FIXTURES / "numbers.json").read_text())
    assert len(pairs) > 2000
    wrong = [(text, expected, jcs.number(float(text))) for text, expected in pairs
             if jcs.number(float(text)) != expected]
    assert wrong == []


@pytest.mark.parametrize("value, text", [
    # RFC 8785 appendix B and the cases where Python's repr differs from ECMAScript
    (0.0, "0"), (-0.0, "0"), (7.0, "7"), (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e-5, "0.000015"),
    (9007199254740992.0, "9007199254740992"), (2**60, "1152921504606847000"), (333333333.3333333, "333333333.3333333"),
    (5e-324, "5e-324"), (-1.7976931348623157e308, "-1.7976931348623157e+308"), (1e20, "100000000000000000000"),
])
def test_number_edge_cases(value, text):
    assert jcs.number(value) == text


def test_keys_sort_by_utf16_code_units_and_strings_escape_only_what_the_rfc_escapes():
    # U+1F600 is a surrogate pair (D83D DE00) in UTF-16: it sorts before U+E000, unlike in code points.
    value = {"\ue000": 1, "\U0001f600": 2, "b": [], "a": {}, "é": None}
    assert jcs.dumps(value) == '{"a":{},"b":[],"é":null,"\U0001f600":2,"\ue000":1}'
    assert jcs.dumps("\x00\x08\t\n\x0c\r\x1f\"\\/\x7f\u2028") == '"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\/\x7f\u2028"'
    assert jcs.dumps("lone \ud800 surrogate") == '"lone \ufffd surrogate"'
    assert jcs.dumps([float("nan"), float("inf"), True, False]) == "[null,null,true,false]"


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return struct.unpack("d", rng.randbytes(8))[0] if rng.random() < 0.5 else rng.choice(
            [7.0, 7.5, 1e-5, 1e16, 2.0**53, 2.0**53 + 2, 0.1, 123.456])
    if kind == 1:
        return rng.choice([0, -1, 2**53, 2**53 + 1, 2**64, 12345678901234567890, 443])
    if kind in (2, 3):
        return "".join(rng.choice("ab\x00\n\"\\é😀\ue000\u2028") for _ in range(rng.randrange(6)))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return "plain ascii"
    if kind in (6, 7):
        return {_random_key(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def _random_key(rng: random.Random) -> str:
    return "".join(rng.choice("aZ_é😀\ue000\uffff") for _ in range(rng.randrange(1, 4)))


def test_the_fast_path_for_stored_findings_gives_the_full_encoders_bytes():
    rng = random.Random(13)
    documents = [json.dumps(_random_value(rng)) for _ in range(3000)]
    documents += [json.dumps(contract_finding(f, "scan", "nmap", "id")) for f in findings(30)]
    documents += ['{"a": NaN, "b": -Infinity}', '{"x": "\\ud800"}', "[1.0, 1e400]"]
    for text in documents:
        assert jcs.from_json(text) == jcs.dumps(json.loads(text)), text
        # what a verifier computes from the output again: canonical form is a fixed point
        assert jcs.dumps(json.loads(jcs.from_json(text))) == jcs.from_json(text), text
