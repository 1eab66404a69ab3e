"""Each row of the bench's table: how it is measured (the findings rows: ingest.py). A ``Setup``
carries the running servers and the settings of this run (quick or full); every function returns
table rows (see ``Row``)."""
from __future__ import annotations

import contextlib
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT, Appliance, Reference, rss_mib, wait_for, wrk


@dataclass
class Row:
    measure: str
    value: str  # the measured figure (a ratio, a rate, a time)
    goal: str = ""
    verdict: str = ""  # "met", "not met", "INVALID: ..." or "" (informative rows)
    detail: str = ""  # absolute numbers behind the figure


@dataclass
class Setup:
    work: Path
    seconds: float  # one wrk run
    reps: int  # A/B alternations; the median is reported
    findings: int
    quick: bool
    appliances: list[Appliance] = field(default_factory=list)  # queue.workers = 0; [current, baseline?]
    reference: Reference | None = None
    scan_ids: dict[str, str] = field(default_factory=dict)  # appliance name -> a scan to GET
    profile_dir: Path | None = None  # py-spy records the serving process during ingest and POST runs
    _key_files: dict[str, list[Path]] = field(default_factory=dict)

    def keys(self, appliance: Appliance, count: int = 200) -> Path:
        """A fresh set of ``count`` keys for one wrk run: no key reaches its 1,000/minute limit, however
        many runs share a minute. Made ahead in bulk (one process) and handed out one set per call."""
        pool = self._key_files.setdefault(appliance.name, [])
        if not pool:
            raw = appliance.tool("keys", "--count", str(count * 12)).split()
            for start in range(0, len(raw), count):
                path = self.work / f"keys-{appliance.name}-{time.time_ns()}-{start}.txt"
                path.write_text("\n".join(raw[start:start + count]) + "\n")
                pool.append(path)
        return pool.pop()


@contextlib.contextmanager
def spy(setup: Setup, appliance: Appliance, name: str) -> Iterator[None]:
    """py-spy on ``appliance`` while the block runs, when profiling was asked for (--profile)."""
    if setup.profile_dir is None or appliance.server is None:
        yield
        return
    from profile_summary import summarize

    setup.profile_dir.mkdir(parents=True, exist_ok=True)
    raw = setup.profile_dir / f"{name}.txt"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "250",
                             "--threads", "-p", str(appliance.server.pid), "-o", str(raw)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        if raw.exists():
            (setup.profile_dir / f"{name}-summary.txt").write_text(summarize(raw))


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def invalid_runs(runs: list[dict[str, Any]]) -> str:
    bad = sum(r["non2xx"] for r in runs)
    errors = sum(r["errors"] for r in runs)
    if bad or errors:
        return f"INVALID: {bad} non-2xx, {errors} socket errors"
    return ""


def versus_reference(setup: Setup, label: str, path: Callable[[Appliance], str], ref_path: str,
                     authenticated: bool, goal: float | None, p99_goal: float | None = None) -> list[Row]:
    """Appliance route ÷ the bare reference, alternating A/B ``reps`` times; median of the ratios."""
    assert setup.reference is not None
    rows = []
    ref_runs: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {a.name: [] for a in setup.appliances}
    for _ in range(setup.reps):
        for appliance in setup.appliances:
            keys = setup.keys(appliance) if authenticated else None
            runs[appliance.name].append(wrk(appliance.url + path(appliance), setup.seconds, keys=keys,
                                            server_pid=appliance.pid))
        ref_runs.append(wrk(setup.reference.url + ref_path, setup.seconds, server_pid=setup.reference.pid))
    ref_rps = median([r["rps"] for r in ref_runs])
    for appliance in setup.appliances:
        mine = runs[appliance.name]
        ratio = median([m["ok_rps"] / r["rps"] for m, r in zip(mine, ref_runs, strict=True)])
        p99 = median([m["p99_ms"] for m in mine])
        ok = goal is None or (ratio >= goal and (p99_goal is None or p99 <= p99_goal))
        goal_text = "" if goal is None else f">= {goal:g}" + (f", p99 <= {p99_goal:g} ms" if p99_goal else "")
        rows.append(Row(f"{label} [{appliance.name}]", f"{ratio:.2f}x", goal_text,
                        invalid_runs(mine) or ("" if goal is None else verdict(ok)),
                        f"{median([m['ok_rps'] for m in mine]):,.0f} req/s p50 "
                        f"{median([m['p50_ms'] for m in mine]):.1f} ms p99 {p99:.1f} ms; "
                        f"reference {ref_rps:,.0f} req/s p99 "
                        f"{median([r['p99_ms'] for r in ref_runs]):.1f} ms; server CPU per request "
                        f"{median([m['cpu_us'] for m in mine]):.0f} µs vs "
                        f"{median([r['cpu_us'] for r in ref_runs]):.0f} µs"))
    return rows


def submit_body(setup: Setup) -> Path:
    path = setup.work / "scan-body.json"
    path.write_text(json.dumps({"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "80"},
                                "tags": ["bench"]}))
    return path


def post_scans(setup: Setup, appliance: Appliance, label: str = "POST /scans accepted and durable",
               goal: float | None = 1500) -> Row:
    """wrk POSTs scans; afterwards every 2xx must be a queued row and a queue task; then all are cancelled."""
    runs, durable = [], True
    for _ in range(setup.reps):
        before = json.loads(appliance.tool("counts"))
        with spy(setup, appliance, f"post-{appliance.name}"):
            run = wrk(appliance.url + "/api/v1/scans", setup.seconds, keys=setup.keys(appliance), method="POST",
                      body=submit_body(setup), server_pid=appliance.server.pid if appliance.server else None)
        after = json.loads(appliance.tool("counts"))
        accepted = run["requests"] - run["non2xx"]
        # Requests in flight when wrk stopped may be stored without being counted: at most one per connection.
        stored = after["scans"].get("queued", 0) - before["scans"].get("queued", 0)
        tasks = after["queued_tasks"] - before["queued_tasks"]
        durable &= accepted <= stored <= accepted + 64 and accepted <= tasks <= accepted + 64
        runs.append(run)
        appliance.tool("cancel")
    rate = median([r["ok_rps"] for r in runs])
    ok = goal is None or (rate >= goal and durable)
    return Row(f"{label} [{appliance.name}]", f"{rate:,.0f}/s", "" if goal is None else f">= {goal:,.0f}/s",
               invalid_runs(runs) or ("" if goal is None else verdict(ok)) or ("" if durable else "NOT durable"),
               f"p99 {median([r['p99_ms'] for r in runs]):.1f} ms; server CPU per request "
               f"{median([r.get('cpu_us', 0) for r in runs]):.0f} µs; every 2xx a queued row and a queue task: "
               f"{'yes' if durable else 'NO'}")


def binary(setup: Setup) -> list[Row]:
    exe = ROOT / "dist" / "cix-appliance"
    if not exe.exists():
        return [Row("single binary: start to first HTTPS 200 / idle RSS", "skipped", "<= 1 s / <= 120 MiB", "",
                    "dist/cix-appliance not built (./build.sh)")]
    starts, rss = [], []
    for index in range(1 if setup.quick else 3):
        app = Appliance(f"binary{index}", setup.work, command=[str(exe)], config={"queue.workers": "0"})
        app.init()
        began = time.perf_counter()
        app.start()
        starts.append(time.perf_counter() - began)
        time.sleep(3)  # idle: start-up work (reconciler, epoch poll, first flush) is over
        assert app.server is not None
        rss.append(rss_mib(app.server.pid))
        app.stop()
    start, mem = median(starts), median(rss)
    return [Row("single binary: start to first HTTPS 200 / idle RSS", f"{start:.2f} s / {mem:.0f} MiB",
                "<= 1 s / <= 120 MiB", verdict(start <= 1 and mem <= 120),
                f"starts {', '.join(f'{s:.2f}' for s in starts)} s (polling /health every 50 ms); RSS of bootloader "
                "+ child")]


def nmap_overhead(setup: Setup, scanner: Appliance) -> Row:
    """One nmap scan of a loopback HTTP server through the API (submit → completed seen by polling
    every 20 ms) against the same nmap argv run directly; alternating, median."""
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    class QuietServer(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            """Silent: nmap drops connections mid-request on purpose."""

    server = QuietServer(("127.0.0.1", 0), Quiet)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = scanner.client()
    direct_times, api_times = [], []
    try:
        for index in range(max(setup.reps, 3) if not setup.quick else 1):
            workdir = setup.work / f"nmap-direct-{index}"
            workdir.mkdir()
            argv = json.loads(scanner.tool("nmap-argv", "--port", str(port), "--workdir", str(workdir)))
            began = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, timeout=120, stdin=subprocess.DEVNULL)
            direct_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            status, body = client.call("POST", "/api/v1/scans", scanner.admin_key,
                                       {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": str(port)}})
            assert status == 201, body
            scan_id = body["data"]["id"]

            def done(scan_id: str = scan_id) -> Any:
                scan = client.call("GET", f"/api/v1/scans/{scan_id}", scanner.admin_key)[1]["data"]
                return scan if scan["status"] in ("completed", "failed", "cancelled") else None
            scan = wait_for(done, 120, "the nmap scan", interval=0.02)
            api_times.append(time.perf_counter() - began)
            assert scan["status"] == "completed", scan
    finally:
        server.shutdown()
        server.server_close()
    direct, api = median(direct_times), median(api_times)
    return Row(f"one nmap scan via the API vs direct [{scanner.name}]", f"{api:.2f} s vs {direct:.2f} s",
               "API <= 1.05 x direct + 0.3 s", verdict(api <= 1.05 * direct + 0.3),
               f"overhead {api - direct:+.2f} s ({api / direct:.2f}x); queue.workers = 1, polling every 20 ms")


def reference_scale(setup: Setup, appliance_rps: float) -> list[Row]:
    """The reference with 2 and 4 uvicorn worker processes (the appliance is one process by design)."""
    assert setup.reference is not None
    rows = []
    for workers in (2, 4):
        ref = Reference(setup.work, setup.reference.cert, setup.reference.key, setup.reference.bodies, workers)
        ref.start()
        try:
            rps = median([wrk(ref.url + "/scan", setup.seconds)["rps"] for _ in range(setup.reps)])
        finally:
            ref.stop()
        rows.append(Row(f"reference with {workers} uvicorn workers, GET /scan", f"{rps:,.0f} req/s", "", "",
                        f"authenticated GET /scans/:id ÷ this: {appliance_rps / rps:.2f}x"))
    return rows


def io_thread_scale(setup: Setup) -> list[Row]:
    """Authenticated GET /scans/:id ÷ the reference with 2 and 4 granian I/O threads
    (``server.io_threads``; the app itself always runs on one thread)."""
    assert setup.reference is not None
    rows = []
    for threads in (2, 4):
        app = Appliance(f"io-threads-{threads}", setup.work,
                        config={"queue.workers": "0", "server.io_threads": str(threads)})
        app.init()
        app.start()
        try:
            status, body = app.client().call("POST", "/api/v1/scans", app.admin_key,
                                             {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "80"},
                                              "tags": ["bench"]})
            assert status == 201, body
            app.tool("cancel")
            path = f"/api/v1/scans/{body['data']['id']}"
            mine, ref = [], []
            for _ in range(setup.reps):
                mine.append(wrk(app.url + path, setup.seconds, keys=setup.keys(app), server_pid=app.pid))
                ref.append(wrk(setup.reference.url + "/scan", setup.seconds, server_pid=setup.reference.pid))
        finally:
            app.stop()
        ratio = median([m["ok_rps"] / r["rps"] for m, r in zip(mine, ref, strict=True)])
        rows.append(Row(f"authenticated GET /scans/:id ÷ bare reference, server.io_threads = {threads}",
                        f"{ratio:.2f}x", "", invalid_runs(mine),
                        f"{median([m['ok_rps'] for m in mine]):,.0f} req/s p99 "
                        f"{median([m['p99_ms'] for m in mine]):.1f} ms; reference "
                        f"{median([r['rps'] for r in ref]):,.0f} req/s"))
    return rows


def post_scale(setup: Setup) -> list[Row]:
    """POST /scans with 10k, 100k and 1M scans already stored (inserted directly before the start)."""
    app = Appliance("scale", setup.work, config={"queue.workers": "0"})
    app.init()
    app.start()
    status, body = app.client().call("POST", "/api/v1/scans", app.admin_key,
                                     {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "80"}})
    assert status == 201, body
    app.stop()
    rows, stored = [], 1
    for size in (10_000, 100_000, 1_000_000):
        began = time.perf_counter()
        app.tool("seed-scans", "--count", str(size - stored))
        seeded = time.perf_counter() - began
        stored = size
        app.start()
        try:
            row = post_scans(setup, app, f"POST /scans with {size:,} scans stored", goal=None)
        finally:
            app.stop()
        row.detail += f"; seeding took {seeded:.0f} s"
        rows.append(row)
    return rows
