"""Streaming a large result set: SARIF, CSV and JSONL exports of one scan with 100,000 findings,
through the in-process app (``GET /scans/:id/results?format=...``; the ASGI app is driven directly,
each chunk counted and dropped as a server's socket would, since httpx's in-process transport keeps
the whole body), printing the rate and the process's resident memory before and at its peak.

    .venv/bin/python bench/export.py [--findings 100000]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.store import apply_sync, connect
from tests.conftest import run_cli, serve_in_process
from tests.results_helpers import finding, scan_ops

SEVERITIES = ("critical", "high", "medium", "low", "info")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(data_dir: Path, count: int) -> str:
    """One completed nmap scan with ``count`` findings (500 rules, many hosts), written in batches."""
    conn = connect(data_dir / "appliance.db")
    tenant = conn.execute("SELECT id FROM tenants").fetchone()[0]
    scan_id = None
    for start in range(0, count, 5000):
        batch = [finding(f"nmap.rule-{i % 500}", SEVERITIES[i % 5], i % 65535 + 1, title=f"finding {i}",
                         description="x" * 200, references=["https://nmap.org/nsedoc/"], cve=["CVE-2014-0160"])
                 for i in range(start, min(count, start + 5000))]
        scan_id, ops = scan_ops(tenant, batch, scan_id=scan_id, first_seq=start)
        apply_sync(conn, ops[1:] if start else ops)  # later batches: the scan row exists already
    conn.close()
    assert scan_id is not None
    return scan_id


async def stream(app: Any, path: str, query: str, key: str) -> tuple[int, float]:
    """GET ``path?query`` on the ASGI app; (bytes sent, peak RSS while sending)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
             "headers": [(b"host", b"bench"), (b"x-api-key", key.encode())], "client": ("127.0.0.1", 50000),
             "server": ("bench", 443)}
    done = asyncio.Event()
    sent = [0, 0.0]
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif message["type"] == "http.response.body":
            sent[0] += len(message.get("body", b""))
            sent[1] = max(sent[1], rss_mib())
            if not message.get("more_body"):
                done.set()

    await app(scope, receive, send)
    return int(sent[0]), sent[1]


async def export(data_dir: Path, key: str, scan_id: str, count: int) -> None:
    async with serve_in_process(data_dir, queue__workers=0) as client:
        for fmt in ("sarif", "csv", "jsonl"):
            gc.collect()
            before = rss_mib()
            started = time.perf_counter()
            size, peak = await stream(client.app, f"/api/v1/scans/{scan_id}/results", f"format={fmt}", key)
            seconds = time.perf_counter() - started
            print(f"{fmt:>5}: {count:,} findings in {seconds:5.2f} s = {count / seconds:8,.0f} findings/s, "
                  f"{size / 2**20:6.1f} MiB; RSS {before:5.1f} MiB before, {peak:5.1f} MiB peak "
                  f"(+{peak - before:4.1f} MiB)")


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        key = json.loads(run_cli("init", "--data-dir", str(data_dir), "--json"))["key"]
        started = time.perf_counter()
        scan_id = fill(data_dir, count)
        print(f"stored {count:,} findings in {time.perf_counter() - started:.1f} s")
        asyncio.run(export(data_dir, key, scan_id, count))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=100_000)
    main(parser.parse_args().findings)
