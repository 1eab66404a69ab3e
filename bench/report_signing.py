"""What signing adds to a large report download: ``GET /scans/:id/report`` of a scan with 100,000
findings, signed, against the same streaming with neither hash nor signature (``"signature": null``).

Starts the appliance in-process on a fresh data dir, stores the findings straight into the database
(90 % nmap-like open ports, 10 % vulnerabilities with a CVSS score), then drives the ASGI app
directly, counting the bytes it sends (no HTTP client buffers them). Runs alternate; the best and
the median of each are printed, wall time and CPU time of the process (CPU time is less disturbed by
other load on the machine; the SHA-512 runs on a helper thread, so it costs CPU but little wall
time). Then one signed run under tracemalloc gives the peak Python memory.

    .venv/bin/python bench/report_signing.py [--findings 100000] [--runs 9]
"""
from __future__ import annotations

import argparse
import array
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance import clock
from appliance.scanning import batches, lifecycle
from appliance.signing import jcs, report
from appliance.signing.signature import sign
from engines.base import Finding
from tests.conftest import run_cli, serve_in_process


def finding(n: int) -> Finding:
    host = f"10.0.{n // 60000}.1"  # a distinct fingerprint for every finding
    if n % 10:
        return Finding(rule_id="nmap.open-port", title=f"Open port {n % 60000 + 1}/tcp", severity="info",
                       host=host, ip=host, port=n % 60000 + 1, protocol="tcp", evidence="syn-ack",
                       description="The port answered a TCP connection.", raw={"reason": "syn-ack", "ttl": 64})
    return Finding(rule_id=f"vuln-{n}", title="OpenSSL Heartbleed", severity="high", host=host, ip=host,
                   port=443, protocol="tcp", cve=["CVE-2014-0160"], cwe=["CWE-125"],
                   cvss={"score": 7.5, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"},
                   description="A missing bounds check in the heartbeat extension.", remediation="Upgrade OpenSSL.",
                   references=["https://nvd.nist.gov/vuln/detail/CVE-2014-0160"])


async def store_scan(services: Any, count: int) -> str:
    tenant = services.reader.scalar("SELECT id FROM tenants WHERE name = 'default'")
    now = clock.now()
    scan_id = clock.new_id()
    await services.writer.write(lifecycle.submit({
        "id": scan_id, "tenant_id": tenant, "scan_type": "nmap", "target": "127.0.0.1", "target_type": "ip",
        "status": "completed", "priority": "normal", "timeout": 60, "created_at": now, "queued_at": now,
        "lease_id": "bench"}))
    for start in range(0, count, 5000):
        batch = [finding(n) for n in range(start, min(count, start + 5000))]
        await services.writer.write(batches.findings_op(scan_id, "bench", "nmap", batch, start))
    await services.writer.write(lifecycle.recount(scan_id, "bench"))
    return scan_id


async def download(app: Any, path: str, key: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process, every thread: less disturbed by other load on the
    machine) and bytes for one GET through the whole ASGI stack (middleware, auth, route)."""
    sent = 0
    status = 0
    requested = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent, status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            sent += len(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench"), (b"x-api-key", key.encode())], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8443)}
    started, cpu = time.perf_counter(), time.process_time()
    await app(scope, receive, send)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    assert status == 200, status
    return elapsed, cpu, sent


def components(services: Any, scan_id: str, keyring: Any) -> dict[str, float]:
    """The signing steps on this report's real bytes, each timed alone: stable where the end-to-end
    comparison is at the mercy of other load on the machine."""
    origin = report.Origin("bench", "0", "Nmap", None)
    chunks = list(report.document(services.config.db_path, 5000, scan_id, origin, None))
    snapshot = report.Snapshot(services.config.db_path, 5000)
    try:
        findings = [jcs.from_json(body).encode() for body in snapshot.finding_bodies(scan_id)]
    finally:
        snapshot.close()

    def best(step: Any) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return min(times)

    def digest() -> None:
        h = hashlib.sha512()
        for chunk in chunks:
            h.update(chunk)

    def locate() -> None:
        crcs = array.array("I")
        for data in findings:
            crcs.append(zlib.crc32(data))
        report.locators({}, crcs)

    return {"SHA-512 of the report bytes": best(digest),
            "CRC-32 locators of each finding": best(locate),
            "Ed25519 + ML-DSA-65 signatures of the statement": best(
                lambda: sign(keyring, "report", "SHA-512", "0" * 128, {"scanId": scan_id}))}


async def main(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = json.loads(run_cli("init", "--data-dir", str(data_dir), "--json"))["key"]
        async with serve_in_process(data_dir, queue__workers=0) as client:
            app, services = client.app, client.app.state.services
            scan_id = await store_scan(services, count)
            stored = services.reader.scalar("SELECT count(*) FROM findings WHERE scan_id = ?", (scan_id,))
            assert stored == count, stored
            path = f"/api/v1/scans/{scan_id}/report"
            keyring = services.signing.keyring
            signed_document = report.document

            def unsigned_document(*args: Any) -> Any:
                return signed_document(*args[:-1], None)  # the keyring is the last argument
            timings: dict[str, list[float]] = {"signed": [], "unsigned": []}
            cpu: dict[str, list[float]] = {"signed": [], "unsigned": []}
            sizes: dict[str, int] = {}
            await download(app, path, key)  # warm-up: engine probe, page cache
            for _ in range(runs):
                for variant in ("unsigned", "signed"):
                    # the route as served; "unsigned" makes the same stream without hash and signature
                    report.document = signed_document if variant == "signed" else unsigned_document
                    elapsed, used, size = await download(app, path, key)
                    timings[variant].append(elapsed)
                    cpu[variant].append(used)
                    sizes[variant] = size
            report.document = signed_document
            parts = await asyncio.to_thread(components, services, scan_id, keyring)
            tracemalloc.start()
            await download(app, path, key)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    print(f"report of {count} findings ({sizes['signed'] / 1e6:.1f} MB signed, {sizes['unsigned'] / 1e6:.1f} MB "
          f"unsigned), {runs} alternating runs each; unsigned = the same stream with neither hash nor signature")
    for label, pick in (("best", min), ("median", statistics.median)):
        wall = {v: pick(t) for v, t in timings.items()}
        cpus = {v: pick(t) for v, t in cpu.items()}
        print(f"  {label:<6} wall: unsigned {wall['unsigned']:.3f} s, signed {wall['signed']:.3f} s "
              f"({100 * (wall['signed'] - wall['unsigned']) / wall['unsigned']:+.1f} %); "
              f"CPU: unsigned {cpus['unsigned']:.3f} s, signed {cpus['signed']:.3f} s "
              f"({100 * (cpus['signed'] - cpus['unsigned']) / cpus['unsigned']:+.1f} %)")
    # Each signed run against the unsigned run just before it: the machine's load drifts less within a pair.
    for label, runs_of in (("wall", timings), ("CPU", cpu)):
        ratios = [signed / unsigned for signed, unsigned in zip(runs_of["signed"], runs_of["unsigned"], strict=True)]
        print(f"  pairwise {label}: each signed run ÷ the unsigned run before it, median "
              f"{100 * (statistics.median(ratios) - 1):+.1f} %")
    best = min(timings["unsigned"])
    print("  what signing adds, each part timed alone (best of 3; the SHA-512 runs on a helper thread, so it"
          " costs CPU but overlaps the encoding when a core is free):")
    for name, seconds in parts.items():
        print(f"    {name:<44} {seconds * 1000:7.1f} ms = {100 * seconds / best:4.1f} % of the best unsigned run")
    print(f"  peak Python memory during a signed download: {peak / 1e6:.1f} MB")
    print("  goal: signing adds <= 5 % to the download (the pairwise wall median)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(main(args.findings, args.runs))
