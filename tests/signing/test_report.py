"""Signed reports: the route, offline verification (the CLI and the Python example of docs/verify.md),
tampering named, rotation, hybrid signatures, detached signatures, flat memory."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.signing import jcs, report
from appliance.signing.verify import verify_detached, verify_report
from tests.conftest import make_key, run_cli, serve_in_process
from tests.signing.common import add_scan

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).parents[2]


def docs_example(tmp_path: Path) -> Path:
    """The Python verifier printed in docs/verify.md, as a script."""
    text = (ROOT / "docs" / "verify.md").read_text()
    code = re.search(r"## A verifier in plain Python.*?```python\n(.*?)```", text, re.S)
    assert code is not None
    script = tmp_path / "verify_report.py"
    script.write_text(code.group(1))
    return script


def cli_verify(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["verify", *args])
    return result.exit_code, result.stdout, result.stderr


def pem_file(data_dir: Path, tmp_path: Path, name: str = "keys.pem") -> Path:
    path = tmp_path / name
    path.write_text(run_cli("signing-key", "show", "--pem", "--data-dir", str(data_dir)))
    return path


async def fetch_report(client, scan_id: str) -> bytes:
    response = await client.get(f"/api/v1/scans/{scan_id}/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.content


def flip_in_finding(document: bytes, index: int) -> bytes:
    """One byte of finding ``index``'s title changed, as someone editing the saved file would."""
    doc = json.loads(document)
    title = doc["report"]["findings"][index]["title"].encode()
    start = document.index(b'"title":' + json.dumps(title.decode(), ensure_ascii=False).encode())
    at = start + len(b'"title":"')
    return document[:at] + bytes([document[at] ^ 0x01]) + document[at + 1:]


async def test_a_report_verifies_offline_and_every_change_is_named(client, data_dir, tmp_path):
    scan_id = await add_scan(client.app.state.services, 40)
    document = await fetch_report(client, scan_id)
    keys = pem_file(data_dir, tmp_path)
    saved = tmp_path / "report.json"
    saved.write_bytes(document)

    doc = json.loads(document)
    assert list(doc) == ["report", "signature"]
    assert list(doc["report"]) == ["appliance", "engine", "findings", "format", "scan", "summary"]
    assert len(doc["report"]["findings"]) == 40 and doc["report"]["scan"]["id"] == scan_id
    assert doc["report"]["summary"] == doc["report"]["scan"]["resultSummary"]
    assert {s["algorithm"] for s in doc["signature"]["signatures"]} == {"Ed25519", "ML-DSA-65"}
    assert document == jcs.canonical(doc)  # the file itself is in canonical form

    code, out, err = cli_verify(str(saved), "--public-key", str(keys))
    assert code == 0 and "verified" in out and "40 findings" in out and err == "", (out, err)
    example = docs_example(tmp_path)
    done = subprocess.run([sys.executable, str(example), str(saved), str(keys)], capture_output=True, text=True)
    assert done.returncode == 0 and "verified: report of scan " + scan_id in done.stdout, done.stderr

    # a pretty-printed copy is the same report: both verifiers canonicalize it again
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(doc, indent=2, ensure_ascii=True))
    assert cli_verify(str(pretty), "--public-key", str(keys))[0] == 0
    assert subprocess.run([sys.executable, str(example), str(pretty), str(keys)]).returncode == 0

    # one byte of one finding: refused, and the finding is named
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(flip_in_finding(document, 7))
    code, out, err = cli_verify(str(tampered), "--public-key", str(keys))
    finding_id = doc["report"]["findings"][7]["id"]
    assert code == 1 and f"finding #8 (id {finding_id}" in err, err
    assert subprocess.run([sys.executable, str(example), str(tampered), str(keys)],
                          capture_output=True).returncode != 0

    # one byte of the scan object, a removed finding, a changed number
    for change, named in ((lambda d: d["report"]["scan"].update(target="127.0.0.2"), "the scan member"),
                          (lambda d: d["report"]["findings"].pop(3), "40 findings were signed, 39 are there now"),
                          (lambda d: d["report"]["findings"][0]["cvss"].update(score=7.01), "finding #1 ")):
        edited = json.loads(document)
        change(edited)
        result = verify_report(json.dumps(edited).encode(), None)
        assert not result.ok and named in result.message, result.message


async def test_without_pinned_keys_only_integrity_is_claimed_and_foreign_keys_fail(client, data_dir, tmp_path):
    scan_id = await add_scan(client.app.state.services, 3)
    saved = tmp_path / "report.json"
    saved.write_bytes(await fetch_report(client, scan_id))
    code, out, err = cli_verify(str(saved))
    assert code == 0 and "verified" in out and "NOT that this appliance signed it" in err, err

    other = tmp_path / "other"
    run_cli("init", "--data-dir", str(other), "--json")
    code, _, err = cli_verify(str(saved), "--public-key", str(pem_file(other, tmp_path, "other.pem")))
    assert code == 1 and "is not pinned" in err, err


async def test_both_algorithms_must_verify(client, data_dir, tmp_path):
    scan_id = await add_scan(client.app.state.services, 3)
    document = json.loads(await fetch_report(client, scan_id))
    keys = pem_file(data_dir, tmp_path)
    from appliance.signing.verify import pinned_keys

    pinned = pinned_keys([keys])
    assert verify_report(json.dumps(document).encode(), pinned).ok

    def variant(edit) -> bytes:
        doc = json.loads(json.dumps(document))
        edit(doc["signature"])
        return json.dumps(doc).encode()

    def drop_mldsa(sig):
        sig["signatures"] = [s for s in sig["signatures"] if s["algorithm"] != "ML-DSA-65"]

    def flip_mldsa(sig):
        for s in sig["signatures"]:
            if s["algorithm"] == "ML-DSA-65":
                s["value"] = ("A" if s["value"][0] != "A" else "B") + s["value"][1:]

    def relabel(sig):  # an Ed25519 signature presented as the ML-DSA-65 one
        ed = next(s for s in sig["signatures"] if s["algorithm"] == "Ed25519")
        sig["signatures"] = [ed, {**ed, "algorithm": "ML-DSA-65"}]

    def drop_mldsa_key(sig):
        drop_mldsa(sig)
        sig["publicKeys"] = [k for k in sig["publicKeys"] if k["algorithm"] != "ML-DSA-65"]

    for edit in (drop_mldsa, flip_mldsa, relabel):
        result = verify_report(variant(edit), pinned)
        assert not result.ok and "ML-DSA-65" in result.message, result.message
    assert not verify_report(variant(drop_mldsa_key), None).ok
    saved = tmp_path / "stripped.json"
    saved.write_bytes(variant(drop_mldsa))
    example = docs_example(tmp_path)
    assert subprocess.run([sys.executable, str(example), str(saved), str(keys)], capture_output=True).returncode != 0
    saved.write_bytes(variant(relabel))
    assert subprocess.run([sys.executable, str(example), str(saved), str(keys)], capture_output=True).returncode != 0


async def test_a_report_signed_before_a_rotation_still_verifies(data_dir, admin_key, tmp_path):
    async with serve_in_process(data_dir) as client:
        client.headers["X-API-Key"] = admin_key
        scan_id = await add_scan(client.app.state.services, 5)
        before = tmp_path / "before.json"
        before.write_bytes(await fetch_report(client, scan_id))
        old_ids = {k["keyId"] for k in (await client.get("/api/v1/signing-key")).json()["data"]}
        out = run_cli("signing-key", "rotate", "--data-dir", str(data_dir))
        assert "retired" in out and "new" in out
        # the running server signs with the new pair at once, without a restart
        after = json.loads(await fetch_report(client, scan_id))
        assert not set(after["signature"]["statement"]["keyIds"]) & old_ids
        listed = (await client.get("/api/v1/signing-key")).json()["data"]
        assert {k["keyId"] for k in listed if k["status"] == "retired"} == old_ids
        assert all(k["retiredAt"] for k in listed if k["status"] == "retired")
    keys = pem_file(data_dir, tmp_path)  # current and retired keys
    assert cli_verify(str(before), "--public-key", str(keys))[0] == 0
    assert not list((data_dir / "signing").glob(f"{sorted(old_ids)[0]}.pem"))  # retired private keys are gone
    audit = json.loads(run_cli("audit", "list", "--json", "--action", "signing_key.rotated", "--data-dir",
                               str(data_dir)))
    assert audit and set(audit[0]["details"]["retired"]) == old_ids


async def test_routes_scopes_and_tenants(client, data_dir, tmp_path):
    scan_id = await add_scan(client.app.state.services, 2)
    reader = make_key(data_dir, "--name", "engines-only", "--scope", "engines:read")["key"]
    keys = await client.get("/api/v1/signing-key", headers={"X-API-Key": reader})
    assert keys.status_code == 200  # any valid key: public keys need no scope
    assert {k["algorithm"] for k in keys.json()["data"]} == {"Ed25519", "ML-DSA-65"}
    assert all(k["publicKey"].startswith("-----BEGIN PUBLIC KEY-----") for k in keys.json()["data"])
    assert (await client.get("/api/v1/signing-key", headers={"X-API-Key": "nope"})).status_code == 401
    for path in (f"/api/v1/scans/{scan_id}/report", f"/api/v1/scans/{scan_id}/results/signature"):
        denied = await client.get(path, headers={"X-API-Key": reader})
        assert denied.status_code == 403 and denied.json()["code"] == "INSUFFICIENT_SCOPE"
    run_cli("tenants", "create", "other", "--data-dir", str(data_dir))
    outsider = make_key(data_dir, "--name", "o", "--tenant", "other")["key"]
    for path in (f"/api/v1/scans/{scan_id}/report", f"/api/v1/scans/{scan_id}/results/signature",
                 "/api/v1/scans/not-a-uuid/report", f"/api/v1/scans/{scan_id}/report?scanType=zap"):
        response = await client.get(path, headers={"X-API-Key": outsider} if "not-a" not in path else {})
        assert response.status_code == 404 and response.json()["code"] == "SCAN_NOT_FOUND", path
    bad = await client.get(f"/api/v1/scans/{scan_id}/results/signature?format=pdf")
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "format"
    unknown = await client.get(f"/api/v1/scans/{scan_id}/report?limit=5")
    assert unknown.status_code == 400 and unknown.json()["details"][0]["field"] == "limit"


async def test_detached_signatures_cover_the_exact_bytes_of_a_format(client, data_dir, tmp_path):
    scan_id = await add_scan(client.app.state.services, 25)
    keys = pem_file(data_dir, tmp_path)
    from appliance.signing.verify import pinned_keys

    pinned = pinned_keys([keys])
    json_sig = await client.get(f"/api/v1/scans/{scan_id}/results/signature?format=json")
    assert json_sig.status_code == 200
    statement = json_sig.json()["data"]["statement"]
    assert statement["purpose"] == "export" and statement["format"] == "json" and statement["scanId"] == scan_id
    results = await client.get(f"/api/v1/scans/{scan_id}/results?limit=1000")
    assert verify_detached(results.content, json_sig.content, pinned).ok  # the API's own envelope
    data = results.json()["data"]
    assert verify_detached(json.dumps(data, indent=1).encode(), json_sig.content, pinned).ok
    data["findings"][2]["severity"] = "low"
    result = verify_detached(json.dumps(data).encode(), json_sig.content, pinned)
    assert not result.ok and "changed" in result.message

    document = await fetch_report(client, scan_id)
    report_sig = (await client.get(f"/api/v1/scans/{scan_id}/results/signature")).content
    exact = json.dumps(json.loads(document)["report"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert document[len(b'{"report":'):document.rindex(b',"signature":')] == jcs.canonical(
        json.loads(document)["report"])
    assert verify_detached(exact.encode(), report_sig, pinned).ok
    saved, sig = tmp_path / "report.json", tmp_path / "report.sig.json"
    saved.write_bytes(document)
    sig.write_bytes(report_sig)
    assert cli_verify(str(saved), "--signature", str(sig), "--public-key", str(keys))[0] == 0
    # a report signature is not an export signature, nor the other way round
    assert not verify_detached(document, json.dumps(json.loads(document)["signature"]).encode(), pinned).ok
    wrapped = json.dumps({"report": json.loads(document)["report"], "signature": json_sig.json()["data"]}).encode()
    assert not verify_report(wrapped, pinned).ok


async def test_exports_carry_a_signature_over_their_exact_bytes(client, data_dir, tmp_path):
    from appliance.signing.signature import parse_header_value
    from appliance.signing.verify import pinned_keys

    services = client.app.state.services
    pinned = pinned_keys([pem_file(data_dir, tmp_path)])
    finished, running = await add_scan(services, 25), await add_scan(services, 5, status="running")
    for fmt in ("sarif", "csv", "jsonl"):
        exported = await client.get(f"/api/v1/scans/{finished}/results?format={fmt}")
        assert exported.status_code == 200, exported.text
        header = parse_header_value(exported.headers["x-certix-report-signature"])
        assert header["statement"]["format"] == fmt and header["statement"]["scanId"] == finished
        assert verify_detached(exported.content, json.dumps(header).encode(), pinned).ok
        detached = await client.get(f"/api/v1/scans/{finished}/results/signature?format={fmt}")
        assert verify_detached(exported.content, detached.content, pinned).ok
        changed = verify_detached(exported.content.replace(b"high", b"low!"), detached.content, pinned)
        assert not changed.ok and "changed" in changed.message
        filtered = await client.get(f"/api/v1/scans/{finished}/results?format={fmt}&severity=info")
        assert verify_detached(filtered.content, json.dumps(parse_header_value(
            filtered.headers["x-certix-report-signature"])).encode(), pinned).ok  # the bytes it was sent
        # a running scan's findings still change between signing and sending: no signature claimed
        unsigned = await client.get(f"/api/v1/scans/{running}/results?format={fmt}")
        assert unsigned.status_code == 200 and "x-certix-report-signature" not in unsigned.headers


def test_the_report_streams_with_flat_memory(tmp_path):
    """20,000 findings make a report of about 12 MB; building it holds a few chunks, not the report."""
    import anyio

    data_dir = tmp_path / "data"
    key = json.loads(run_cli("init", "--data-dir", str(data_dir), "--json"))["key"]

    async def make() -> tuple[Any, str]:
        async with serve_in_process(data_dir, queue__workers=0) as client:
            client.headers["X-API-Key"] = key
            services = client.app.state.services
            scan_id = await add_scan(services, 20_000)
            return services, scan_id

    services, scan_id = anyio.run(make)
    origin = report.Origin("h", "v", "Nmap", "7")
    tracemalloc.start()
    size = 0
    for chunk in report.document(services.config.db_path, 5000, scan_id, origin, services.signing.keyring):
        size += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert size > 10_000_000
    assert peak < 4_000_000, f"peak {peak} bytes for a {size}-byte report"


async def test_an_export_format_registers_its_bytes_for_detached_signatures(client, data_dir, tmp_path, monkeypatch):
    """A format registered in ``report.SIGNABLE``: its byte stream (read through the snapshot as
    through a Reader) is what ``/results/signature?format=...`` signs; the header value form of the
    block verifies the same bytes."""
    from appliance.signing.signature import header_value
    from appliance.signing.verify import pinned_keys

    def jsonl(snapshot, scan, origin):
        rows = snapshot.all("SELECT body FROM findings WHERE scan_id = ? ORDER BY severity_rank, seq", (scan["id"],))
        yield "".join(r["body"] + "\n" for r in rows).encode()

    monkeypatch.setitem(report.SIGNABLE, "jsonl", jsonl)
    scan_id = await add_scan(client.app.state.services, 12)
    answer = await client.get(f"/api/v1/scans/{scan_id}/results/signature?format=jsonl")
    assert answer.status_code == 200 and answer.json()["data"]["statement"]["format"] == "jsonl"
    rows = client.app.state.services.reader.all(
        "SELECT body FROM findings WHERE scan_id = ? ORDER BY severity_rank, seq", (scan_id,))
    exported = "".join(r["body"] + "\n" for r in rows).encode()
    pinned = pinned_keys([pem_file(data_dir, tmp_path)])
    assert verify_detached(exported, answer.content, pinned).ok
    assert verify_detached(exported, header_value(answer.json()["data"]).encode(), pinned).ok
    assert not verify_detached(exported.replace(b"rule-1", b"rule-2", 1), answer.content, pinned).ok
