"""The internal worker routes: tokens, zones, leases — in-process, with queue.workers = 0 so that
the test plays the remote worker itself."""
from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.scanning.reporter import INTERNAL_PREFIX
from appliance.store.ops import Op
from engines.base import Finding
from tests.conftest import run_cli, run_cli_async, serve_in_process
from tests.results_helpers import contract_finding

pytestmark = pytest.mark.anyio


def add_worker(data_dir, name: str, *zones: str) -> str:
    args = [a for z in zones for a in ("--zone", z)]
    return json.loads(run_cli("workers", "add", name, "--data-dir", str(data_dir), "--json", *args))["token"]


@pytest.fixture
async def setup(data_dir, admin_key):
    plain = add_worker(data_dir, "plain")
    zoned = add_worker(data_dir, "seg-a", "127.0.0.2/32")
    async with serve_in_process(data_dir, queue__workers=0) as c:
        c.headers["X-API-Key"] = admin_key
        yield c, plain, zoned


async def call(c, token: str, name: str, **body):
    return await c.post(f"{INTERNAL_PREFIX}/{name}", json=body, headers={"X-API-Key": "", "X-Worker-Token": token})


async def submit(c, target: str = "127.0.0.1") -> dict:
    r = await c.post("/api/v1/scans", json={"scanType": "nmap", "target": target, "options": {"ports": "1"}})
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def test_a_worker_claims_reports_and_finishes_under_its_lease(setup):
    c, plain, _ = setup
    hello = await call(c, plain, "hello", version="x", engines=["nmap"], running=0)
    assert hello.json()["data"] == {"name": "plain", "zones": [], "applianceVersion": hello.json()["data"]
                                    ["applianceVersion"]}
    scan = await submit(c)
    assert scan["worker"] is None
    claim = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]
    assert claim["job"]["target"] == "127.0.0.1" and claim["job"]["scan_type"] == "nmap"
    assert (await call(c, plain, "claim", scanId=scan["id"])).status_code == 409  # claimed once only
    lease = claim["leaseId"]
    beat = await call(c, plain, "heartbeat", scanId=scan["id"], leaseId=lease, progress=40)
    assert beat.json()["data"] == {"continue": True}
    finding = {"rule_id": "nmap.port", "title": "Open port 1/tcp", "severity": "info", "ip": "127.0.0.1", "port": 1}
    assert (await call(c, plain, "findings", scanId=scan["id"], leaseId="forged", firstSeq=0,
                       findings=[finding])).status_code == 409
    stored = await call(c, plain, "findings", scanId=scan["id"], leaseId=lease, firstSeq=0, findings=[finding])
    assert stored.json()["data"] == {"stored": 1}
    assert (await call(c, plain, "finish", scanId=scan["id"], leaseId=lease, status="completed")).status_code == 200
    done = (await c.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
    assert (done["status"], done["worker"], done["resultSummary"]["total"]) == ("completed", "plain", 1)
    # a finished lease is spent: nothing more is taken under it
    assert (await call(c, plain, "finish", scanId=scan["id"], leaseId=lease, status="failed")).status_code == 409


async def test_cancel_reaches_the_worker_through_its_heartbeat(setup):
    c, plain, _ = setup
    scan = await submit(c)
    lease = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    assert (await c.post(f"/api/v1/scans/{scan['id']}/cancel")).json()["data"]["status"] == "cancelled"
    beat = await call(c, plain, "heartbeat", scanId=scan["id"], leaseId=lease, progress=50)
    assert beat.json()["data"] == {"continue": False}


async def test_zones_route_scans_to_their_workers_only(setup):
    c, plain, zoned = setup
    inside, outside = await submit(c, "127.0.0.2"), await submit(c, "127.0.0.1")
    assert (await call(c, plain, "claim", scanId=inside["id"])).status_code == 409
    assert (await call(c, zoned, "claim", scanId=outside["id"])).status_code == 409
    assert (await call(c, zoned, "claim", scanId=inside["id"])).status_code == 200
    assert (await call(c, plain, "claim", scanId=outside["id"])).status_code == 200
    rows = {r["id"]: r["zone"] for r in c.app.state.services.reader.all("SELECT id, zone FROM scans")}
    assert (rows[inside["id"]], rows[outside["id"]]) == ("127.0.0.2/32", "")


async def test_another_workers_lease_is_refused(setup, data_dir):
    c, plain, _ = setup
    other = add_worker(data_dir, "other")
    scan = await submit(c)
    lease = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    # the right lease id presented by the wrong worker is still not its lease
    assert (await call(c, other, "finish", scanId=scan["id"], leaseId=lease, status="completed")).status_code == 409


async def test_tokens_open_only_the_worker_routes_and_revocation_is_immediate(setup, data_dir, admin_key):
    c, plain, _ = setup
    as_key = await c.get("/api/v1/scans", headers={"X-API-Key": plain})
    assert (as_key.status_code, as_key.json()["code"]) == (401, "INVALID_API_KEY")
    key_here = await c.post(f"{INTERNAL_PREFIX}/hello", json={}, headers={"X-Worker-Token": admin_key})
    assert (key_here.status_code, key_here.json()["code"]) == (401, "INVALID_API_KEY")
    missing = await c.post(f"{INTERNAL_PREFIX}/hello", json={})
    assert (missing.status_code, missing.json()["code"]) == (401, "MISSING_API_KEY")
    await run_cli_async("workers", "revoke", "plain", "--data-dir", str(data_dir))
    revoked = await call(c, plain, "hello", version="x", engines=[], running=0)
    assert (revoked.status_code, revoked.json()["code"]) == (401, "KEY_REVOKED")


async def test_malformed_reports_are_refused_in_the_envelope(setup):
    c, plain, _ = setup
    scan = await submit(c)
    lease = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    for body in ({"scanId": scan["id"], "leaseId": lease, "firstSeq": 0, "findings": [{"nope": 1}]},
                 {"scanId": scan["id"], "leaseId": lease, "firstSeq": 0, "findings": [{"rule_id": "r", "title": "t",
                                                                                      "severity": "apocalyptic"}]},
                 {"scanId": scan["id"], "leaseId": lease, "firstSeq": -1, "findings": []},
                 # seqs past SQLite's largest integer
                 {"scanId": scan["id"], "leaseId": lease, "firstSeq": 2**63 - 2,
                  "findings": [{"rule_id": "r", "title": "t"}] * 3}):
        r = await call(c, plain, "findings", **body)
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), body
    r = await call(c, plain, "finish", scanId=scan["id"], leaseId=lease, status="running")
    assert r.status_code == 400


async def test_reported_findings_are_stored_as_a_finding_would_be_and_bad_ones_refused(setup):
    """A wire finding is checked and stored without a Finding object: the stored body must be what
    model.finding_json makes of the Finding, and everything Finding(**item) refused is refused, as is
    nesting too deep and text that is not valid Unicode (checked per request, not per finding)."""
    c, plain, _ = setup
    scan = await submit(c)
    lease = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    wire: dict[str, Any] = {"rule_id": "r", "title": "t", "port": 443, "cve": ["CVE-2024-1"],
                            "raw": {"a": [1, {"b": None}]}}
    deep: dict = {}
    inner = deep
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]
    refused = [({"rule_id": "r"}, 400, "VALIDATION_ERROR"), ({"rule_id": 1, "title": "t"}, 400, "VALIDATION_ERROR"),
               ({"rule_id": "r", "title": "t", "confidence": "total"}, 400, "VALIDATION_ERROR"),
               ({"rule_id": "r", "title": "t", "severity": ["info"]}, 400, "VALIDATION_ERROR"),
               ({"rule_id": "r", "title": "t", "host": {"name": "h"}}, 400, "VALIDATION_ERROR"),
               ({"rule_id": "r", "title": "t", "url": 5}, 400, "VALIDATION_ERROR"),
               ([], 400, "VALIDATION_ERROR"), ({"rule_id": "r", "title": "t", "raw": deep}, 400, "INVALID_JSON")]
    for item, status, code in refused:
        r = await call(c, plain, "findings", scanId=scan["id"], leaseId=lease, firstSeq=0, findings=[wire, item])
        assert (r.status_code, r.json()["code"]) == (status, code), item
    body = json.dumps({"scanId": scan["id"], "leaseId": lease, "firstSeq": 0,
                       "findings": [{"rule_id": "r", "title": "t\\ud800"}]}).replace("\\\\ud800", "\\ud800")
    r = await c.post(f"{INTERNAL_PREFIX}/findings", content=body,
                     headers={"X-API-Key": "", "X-Worker-Token": plain, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "INVALID_JSON"), body
    stored = await call(c, plain, "findings", scanId=scan["id"], leaseId=lease, firstSeq=0, findings=[wire])
    assert stored.json()["data"] == {"stored": 1}
    got = (await c.get(f"/api/v1/scans/{scan['id']}/results")).json()["data"]["findings"][0]
    assert got == contract_finding(Finding(**wire), scan["id"], "nmap", got["id"])
    # A batch longer than one slice (intake.ROWS_PER_TURN) keeps its seq order and its ids distinct.
    many = [{"rule_id": f"r{i}", "title": "t"} for i in range(250)]
    stored = await call(c, plain, "findings", scanId=scan["id"], leaseId=lease, firstSeq=1, findings=many)
    assert stored.json()["data"] == {"stored": 250}
    page = (await c.get(f"/api/v1/scans/{scan['id']}/results?limit=1000")).json()["data"]["findings"]
    assert [f["ruleId"] for f in page] == ["r", *(f"r{i}" for i in range(250))]
    assert len({f["id"] for f in page}) == 251
    # A field in a shape findings do not have goes the slow way, and is stored as it came all the same.
    odd: dict[str, Any] = {"rule_id": "odd", "title": "t", "description": ["a", {"b": 1}], "references": [["nested"]]}
    assert (await call(c, plain, "findings", scanId=scan["id"], leaseId=lease, firstSeq=5000,
                       findings=[odd])).json()["data"] == {"stored": 1}
    got = next(f for f in (await c.get(f"/api/v1/scans/{scan['id']}/results?ruleId=odd")).json()["data"]["findings"])
    assert got == contract_finding(Finding(**odd), scan["id"], "nmap", got["id"])


def test_workers_cli_lists_zones_and_refuses_bad_input(data_dir, admin_key):
    add_worker(data_dir, "dmz", "10.20.0.0/16", "dmz.corp.example")
    listed = json.loads(run_cli("workers", "list", "--data-dir", str(data_dir), "--json"))
    assert listed[0]["zones"] == ["10.20.0.0/16", "dmz.corp.example"] and listed[0]["status"] == "active"
    from click.testing import CliRunner

    from appliance.cli import cli
    for args in (["workers", "add", "dmz"], ["workers", "add", "x", "--zone", "not a zone"],
                 ["workers", "add", "Bad Name"], ["workers", "revoke", "nobody"]):
        result = CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == 1 and "Traceback" not in result.output, args


async def test_a_worker_back_with_results_for_a_lost_lease_is_refused(setup, data_dir):
    """The first worker went silent; its lease expired and the scan runs elsewhere. When it comes back,
    nothing it says is stored twice: findings and finish are refused, the second run's stand."""
    c, plain, _ = setup
    other = add_worker(data_dir, "other")
    services = c.app.state.services
    scan = await submit(c)
    first = (await call(c, plain, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    await services.writer.write(Op([("UPDATE scans SET lease_expires_at = 0 WHERE id = ?", (scan["id"],))]))
    assert (await services.reconciler.run_once())["requeued"] == 1
    second = (await call(c, other, "claim", scanId=scan["id"])).json()["data"]["leaseId"]
    finding = {"rule_id": "r", "title": "t", "severity": "high", "ip": "127.0.0.1", "port": 1}
    late = await call(c, plain, "findings", scanId=scan["id"], leaseId=first, firstSeq=0, findings=[finding])
    assert late.status_code == 409
    assert (await call(c, plain, "heartbeat", scanId=scan["id"], leaseId=first)).status_code == 409
    assert (await call(c, plain, "finish", scanId=scan["id"], leaseId=first, status="completed")).status_code == 409
    assert (await call(c, other, "finish", scanId=scan["id"], leaseId=second, status="completed")).status_code == 200
    done = (await c.get(f"/api/v1/scans/{scan['id']}")).json()["data"]
    assert (done["worker"], done["resultSummary"]["total"]) == ("other", 0)
    attempts = services.reader.scalar("SELECT attempts FROM scans WHERE id = ?", (scan["id"],))
    assert attempts == 2
