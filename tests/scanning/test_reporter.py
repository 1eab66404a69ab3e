"""A remote worker's reports fit the appliance's 1 MiB body limit (appliance/scanning/reporter.py)."""
from __future__ import annotations

import json

import httpx

from appliance.api.middleware import MAX_BODY
from appliance.scanning.intake import Claim
from appliance.scanning.job import Job
from appliance.scanning.reporter import RemoteReporter
from engines.base import Finding


def appliance(received: list[dict]) -> httpx.Client:
    """What the appliance answers a findings report: 413 over 1 MiB, as RequestMiddleware does."""
    def handle(request: httpx.Request) -> httpx.Response:
        if len(request.content) > MAX_BODY:
            return httpx.Response(413, json={"success": False, "code": "PAYLOAD_TOO_LARGE", "error": "too large"})
        body = json.loads(request.content)
        received.append(body)
        return httpx.Response(200, json={"success": True, "data": {"stored": len(body["findings"])}})
    return httpx.Client(transport=httpx.MockTransport(handle), base_url="https://appliance")


CLAIM = Claim("lease-1", Job(scan_id="s1", tenant_id="", scan_type="nikto", target="", target_type="url",
                             options={}, timeout=0, priority="normal"))


def finding(i: int, evidence: str) -> Finding:
    return Finding(rule_id=f"r{i}", title=f"finding {i}", severity="low", evidence=evidence, raw={"i": i})


def test_a_batch_over_the_body_limit_goes_in_parts_with_every_seq_kept():
    received: list[dict] = []
    batch = [finding(i, "x" * 5000) for i in range(500)]  # about 2.5 MB of JSON in one report
    assert RemoteReporter(appliance(received), "w").findings(CLAIM, "nikto", batch, 1000)
    assert len(received) >= 3
    seqs = [body["firstSeq"] + k for body in received for k in range(len(body["findings"]))]
    assert seqs == list(range(1000, 1500))
    assert [f["rule_id"] for body in received for f in body["findings"]] == \
        [f"r{i}" for i in range(500)]


def test_one_finding_too_large_alone_is_sent_with_its_long_texts_cut():
    received: list[dict] = []
    huge = finding(7, "e" * (3 << 20))
    assert RemoteReporter(appliance(received), "w").findings(CLAIM, "nikto", [huge], 0)
    (sent,) = received[0]["findings"]
    assert len(sent["evidence"]) < 100_000 and sent["evidence"].endswith("[truncated: too large to report]")
    assert sent["raw"] == {"truncated": True} and sent["title"] == "finding 7"


def test_a_small_batch_is_one_report():
    received: list[dict] = []
    assert RemoteReporter(appliance(received), "w").findings(CLAIM, "nikto", [finding(i, "ok") for i in range(3)], 5)
    assert len(received) == 1 and received[0]["firstSeq"] == 5 and len(received[0]["findings"]) == 3
