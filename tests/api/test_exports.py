"""Exports (``?format=sarif|csv|jsonl``) and the scan diff, on findings written into the database."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest

from appliance import exports
from tests.conftest import run_cli_async
from tests.results_helpers import add_scan, finding, scan_ops

pytestmark = pytest.mark.anyio
SARIF_SCHEMA = json.loads((Path(__file__).parents[1] / "fixtures" / "sarif" / "sarif-2.1.0-rtm.5.json").read_text())


def sample() -> list:
    return [
        finding("nmap.port-open", "info", 22, title="ssh open", references=["https://nmap.org/", "not a uri"]),
        finding("nmap.vuln", "critical", 443, title="=HYPERLINK(\"http://x\")", cve=["CVE-2014-0160"],
                cwe=["CWE-119"], cvss={"score": 9.8, "vector": "CVSS:3.1/AV:N"}, description="+1-2",
                remediation="@SUM(A1)", evidence="-cmd"),
        finding("nmap.http", "medium", None, url="https://example.com:8443/a b?q=1", title="\tTabbed,\"quoted\"\r\nx"),
        finding("nmap.v6", "low", 25, title="v6"),
    ]


async def test_sarif_is_valid_2_1_0_with_rules_levels_fingerprints_and_locations(client):
    services = client.app.state.services
    scan_id = await add_scan(services, sample())
    response = await client.get(f"/api/v1/scans/{scan_id}/results?format=sarif")
    assert response.status_code == 200 and response.headers["content-type"] == "application/sarif+json"
    assert f"scan-{scan_id}.sarif" in response.headers["content-disposition"]
    sarif = response.json()
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(sarif)
    assert sarif["version"] == "2.1.0" and len(sarif["runs"]) == 1
    run = sarif["runs"][0]
    assert run["tool"]["driver"]["name"] == "nmap"
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["nmap.vuln", "nmap.http", "nmap.v6", "nmap.port-open"]  # by severity
    assert [r["level"] for r in results] == ["error", "warning", "note", "note"]
    rules = run["tool"]["driver"]["rules"]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert len(result["partialFingerprints"][exports.FINGERPRINT_KEY]) == 32
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert "://" not in uri and not uri.startswith("/")  # code scanning takes repository-relative paths
        assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 1
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results]
    assert uris == ["127.0.0.1/tcp_443", "example.com_8443/a%20b", "127.0.0.1/tcp_25", "127.0.0.1/tcp_22"]
    vuln = rules[results[0]["ruleIndex"]]
    assert vuln["properties"]["security-severity"] == "9.8" and "CWE-119" in vuln["properties"]["tags"]
    assert rules[results[3]["ruleIndex"]]["helpUri"] == "https://nmap.org/"
    assert results[0]["properties"]["cve"] == ["CVE-2014-0160"]
    # the JSON results agree on the fingerprints
    listed = (await client.get(f"/api/v1/scans/{scan_id}/results")).json()["data"]["findings"]
    assert [f["fingerprint"] for f in listed] == [r["partialFingerprints"][exports.FINGERPRINT_KEY] for r in results]


async def test_sarif_has_one_run_per_engine_and_a_run_for_an_empty_scan(client):
    services = client.app.state.services
    scan_id = await add_scan(services, [finding("a.one", "high")], engine="nuclei")
    tenant = services.reader.scalar("SELECT id FROM tenants")
    _, ops = scan_ops(tenant, [finding("b.two", "low")], engine="nmap", scan_id=scan_id)
    await services.writer.write(*ops[1:])  # the same scan, findings of a second engine
    sarif = (await client.get(f"/api/v1/scans/{scan_id}/results?format=sarif")).json()
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(sarif)
    assert [r["tool"]["driver"]["name"] for r in sarif["runs"]] == ["nmap", "nuclei"]
    assert [[x["ruleId"] for x in r["results"]] for r in sarif["runs"]] == [["b.two"], ["a.one"]]
    empty = await add_scan(services, [])
    sarif = (await client.get(f"/api/v1/scans/{empty}/results?format=sarif")).json()
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(sarif)
    assert sarif["runs"][0]["results"] == [] and sarif["runs"][0]["tool"]["driver"]["name"] == "nmap"


async def test_csv_has_the_documented_header_and_defuses_formulas(client):
    scan_id = await add_scan(client.app.state.services, sample())
    response = await client.get(f"/api/v1/scans/{scan_id}/results?format=csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.content.count(b"\r\n") >= 5  # RFC 4180 line ends
    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert tuple(rows[0]) == exports.CSV_COLUMNS and len(rows) == 5
    table = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    vuln = table[0]
    assert vuln["title"] == "'=HYPERLINK(\"http://x\")" and vuln["description"] == "'+1-2"
    assert vuln["remediation"] == "'@SUM(A1)" and vuln["evidence"] == "'-cmd"
    assert vuln["cve"] == "CVE-2014-0160" and vuln["cvssScore"] == "9.8" and vuln["port"] == "443"
    assert table[1]["title"] == "'\tTabbed,\"quoted\"\r\nx"  # quoted, with its comma, quotes and line break
    for row in table:
        assert not any(cell.startswith(exports._FORMULA_START) for cell in row.values())
    assert exports.safe_cell("\rx") == "'\rx" and exports.safe_cell("plain-text") == "plain-text"


async def test_jsonl_is_one_finding_per_line_and_equals_the_json_results(client):
    scan_id = await add_scan(client.app.state.services, sample())
    response = await client.get(f"/api/v1/scans/{scan_id}/results?format=jsonl&severity=critical&severity=info")
    lines = response.content.decode().splitlines()
    listed = (await client.get(f"/api/v1/scans/{scan_id}/results?severity=critical&severity=info")).json()
    assert [json.loads(line) for line in lines] == listed["data"]["findings"] and len(lines) == 2


async def test_exports_stream_every_finding_past_one_chunk_in_results_order(client):
    services = client.app.state.services
    severities = ["info", "low", "critical", "medium", "high"]
    many = [finding(f"r{i}", severities[i % 5], i % 65535 + 1) for i in range(2 * exports.CHUNK + 321)]
    scan_id = await add_scan(services, many)
    lines = (await client.get(f"/api/v1/scans/{scan_id}/results?format=jsonl")).content.decode().splitlines()
    got = [json.loads(line)["ruleId"] for line in lines]
    rank = {s: i for i, s in enumerate(["critical", "high", "medium", "low", "info"])}
    expected = [f.rule_id for _, f in sorted(enumerate(many), key=lambda p: (rank[p[1].severity], p[0]))]
    assert got == expected
    sarif = (await client.get(f"/api/v1/scans/{scan_id}/results?format=sarif")).json()
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == expected
    assert len(sarif["runs"][0]["tool"]["driver"]["rules"]) == len(many)


async def test_export_refuses_pages_and_unknown_formats(client):
    scan_id = await add_scan(client.app.state.services, sample())
    for query, field in (("format=sarif&page=2", "page"), ("format=csv&limit=5", "limit"), ("format=xml", "format")):
        response = await client.get(f"/api/v1/scans/{scan_id}/results?{query}")
        assert response.status_code == 400 and response.json()["details"][0]["field"] == field, query


async def test_diff_new_fixed_unchanged_by_fingerprint(client):
    services = client.app.state.services
    before = await add_scan(services, [finding("kept", "high", 22), finding("gone", "low", 23)])
    after = await add_scan(services, [finding("kept", "high", 22), finding("fresh", "critical", 24),
                                      finding("fresh2", "info", 25)])
    diff = (await client.get(f"/api/v1/scans/{after}/diff?against={before}")).json()
    assert diff["data"]["counts"] == {"new": 2, "fixed": 1, "unchanged": 1}
    assert [(f["change"], f["ruleId"]) for f in diff["data"]["findings"]] == [
        ("new", "fresh"), ("new", "fresh2"), ("fixed", "gone"), ("unchanged", "kept")]
    assert diff["data"]["findings"][2]["scanId"] == before and diff["data"]["findings"][0]["scanId"] == after
    only_new = (await client.get(f"/api/v1/scans/{after}/diff?against={before}&change=new&severity=critical"
                                 "&severity=high")).json()
    assert [f["ruleId"] for f in only_new["data"]["findings"]] == ["fresh"] and only_new["pagination"]["total"] == 1
    paged = (await client.get(f"/api/v1/scans/{after}/diff?against={before}&limit=1&page=2")).json()
    assert [f["ruleId"] for f in paged["data"]["findings"]] == ["fresh2"] and paged["pagination"]["totalPages"] == 4


async def test_diff_refuses_other_tenants_other_types_and_bad_parameters(client, data_dir):
    services = client.app.state.services
    mine = await add_scan(services, [finding("a")])
    zap = await add_scan(services, [finding("a")], scan_type="zap")
    await run_cli_async("tenants", "create", "other", "--data-dir", str(data_dir))
    theirs = await add_scan(services, [finding("a")], tenant="other")
    cases = [(f"{mine}/diff?against={theirs}", 404, "SCAN_NOT_FOUND", None),
             (f"{theirs}/diff?against={mine}", 404, "SCAN_NOT_FOUND", None),
             (f"{mine}/diff?against=nonsense", 404, "SCAN_NOT_FOUND", None),
             (f"{mine}/diff?against={zap}", 400, "VALIDATION_ERROR", "against"),
             (f"{mine}/diff", 400, "VALIDATION_ERROR", "against"),
             (f"{mine}/diff?against={mine}&change=gone", 400, "VALIDATION_ERROR", "change"),
             (f"{mine}/diff?against={mine}&bogus=1", 400, "VALIDATION_ERROR", "bogus")]
    for path, status, code, field in cases:
        response = await client.get(f"/api/v1/scans/{path}")
        assert (response.status_code, response.json()["code"]) == (status, code), path
        if field:
            assert response.json()["details"][0]["field"] == field
    same = (await client.get(f"/api/v1/scans/{mine}/diff?against={mine}")).json()["data"]["counts"]
    assert same == {"new": 0, "fixed": 0, "unchanged": 1}
