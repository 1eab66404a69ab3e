"""The findings report's fast way (msgspec types, workers/wire.py) takes only reports the slow way
(read_json and the checks one by one) accepts, and makes the same fields of them; everything else
goes the slow way, whose answer is the one given."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from starlette.requests import Request

from appliance.api import envelope
from appliance.errors import ApiError
from appliance.scanning import model
from appliance.workers import routes, wire
from tests.results_helpers import contract_finding


def _request(body: bytes, ctype: str = "application/json") -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", ctype.encode())],
                    "query_string": b""}, receive)


def _typed(body: bytes, ctype: str = "application/json") -> Any:
    return asyncio.run(envelope.read_typed(_request(body, ctype), wire.DECODER))


def _report(*findings: Any, **extra: Any) -> bytes:
    return orjson.dumps({"scanId": "s", "leaseId": "l", "firstSeq": 3, "findings": list(findings), **extra})


_FINDINGS = [
    {"rule_id": "r", "title": "t"},
    {"rule_id": "r\u2603 \"q\" \\", "title": "\U0001f600", "severity": "critical", "confidence": "low",
     "host": "h", "ip": "192.0.2.1", "port": 443, "protocol": "tcp", "url": "https://x/", "parameter": "p",
     "cve": ["CVE-2024-1"], "cwe": ["CWE-79"], "cvss": {"score": 9.8, "vector": None}, "description": "d\n",
     "evidence": "e\x00", "remediation": "fix", "references": ["https://r/"],
     "raw": {"a": [1, {"b": None}, 2.5, True]}},
    {"rule_id": "r", "title": "t", "port": "not checked", "description": 5, "raw": [], "cve": "as it came",
     "cvss": 9.8, "references": [None, 1, True]},
]


def test_a_report_the_slow_way_accepts_is_decoded_to_the_same_fields() -> None:
    body = _report(*_FINDINGS)
    report = _typed(body)
    assert report is not None and report.envelope() == {"scanId": "s", "leaseId": "l", "firstSeq": 3}
    slow = [routes._finding(item, index) for index, item in enumerate(envelope._parse(body)[0]["findings"])]
    fast = wire.checked_findings(report)
    assert [model.finding_values(f) for f in fast] == [model.finding_values(fields) for fields in slow]
    assert [contract_finding(f, "s", "e", "i") for f in fast] == [contract_finding(fields, "s", "e", "i")
                                                                  for fields in slow]


@pytest.mark.parametrize("body", [
    _report({"rule_id": "r", "title": "t", "nope": 1}),  # an unknown field
    _report({"rule_id": "r"}), _report({"rule_id": 1, "title": "t"}),
    _report({"rule_id": "r", "title": "t", "severity": "apocalyptic"}),
    _report({"rule_id": "r", "title": "t", "confidence": "total"}), _report([]),
    _report({"rule_id": "r", "title": "t"}, other=1),  # a field the slow way ignores: it decides
    orjson.dumps({"scanId": "s", "leaseId": "l", "firstSeq": 0}), b"[]", b"{", b"  ",
    _report({"rule_id": "r", "title": "t\\ud800"}).replace(b"\\\\ud800", b"\\ud800"),  # a lone surrogate escape
    _report({"rule_id": "r", "title": "t", "raw": {"n": 1}}).replace(b'"n":1', b'"n":123456789012345678901'),
    # fields in shapes findings do not have (the slow way accepts them as they came)
    _report({"rule_id": "r", "title": "t", "description": ["any"]}),
    _report({"rule_id": "r", "title": "t", "references": [["nested"]]}),
    _report({"rule_id": "r", "title": "t", "cvss": {"score": {"nested": 1}}}),
    _report({"rule_id": "r", "title": "t", "host": {"name": "h"}}),  # refused: the fingerprint's text
    _report({"rule_id": "r", "title": "t", "parameter": 1}),
    json.dumps({"scanId": "s", "leaseId": "l", "firstSeq": 0, "findings": [{"rule_id": "r", "title": "t",
                                                                            "raw": {"x": float("nan")}}]}).encode(),
])
def test_anything_else_goes_the_slow_way(body: bytes) -> None:
    assert _typed(body) is None


def test_the_content_type_is_checked_as_on_the_slow_way() -> None:
    assert _typed(_report(), "text/plain") is None
    assert _typed(_report(), "application/vnd.x+json; charset=utf-8") is not None


def test_nesting_too_deep_in_a_free_field_is_refused_as_on_the_slow_way() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels):
            value = {"x": value}
        return value
    # The body's object (0), findings (1), a finding (2), its raw (3): 29 more levels reach the limit.
    limit = envelope.MAX_JSON_DEPTH - wire.FIELD_DEPTH
    for levels, refused in ((limit, False), (limit + 1, True)):
        body = _report({"rule_id": "r", "title": "t", "raw": nested(levels)})
        report = _typed(body)
        assert report is not None
        slow = envelope._parse(body)[0]
        if refused:
            with pytest.raises(ApiError, match="nested deeper"):
                wire.checked_findings(report)
            with pytest.raises(ApiError, match="nested deeper"):
                envelope._check_depth(slow)
        else:
            wire.checked_findings(report)
            envelope._check_depth(slow)
