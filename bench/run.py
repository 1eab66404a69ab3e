"""The benchmark suite: starts the appliance from this source tree (fresh data dir, ``init`` +
``serve``) and the bare reference beside it, measures, and prints one table. See bench/README.md.

    python bench/run.py [--quick] [--baseline GIT_REF] [--profile DIR] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import ingest
import measures
from harness import PYTHON, ROOT, Appliance, Reference, wrk
from measures import Row, Setup
from profile_summary import summarize


def table(rows: list[Row]) -> str:
    lines = ["| measure | value | goal | verdict | detail |", "|---|---|---|---|---|"]
    lines += [f"| {r.measure} | {r.value} | {r.goal} | {r.verdict} | {r.detail} |" for r in rows]
    return "\n".join(lines)


def header(args: argparse.Namespace, setup: Setup) -> str:
    rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return (f"cix-appliance bench ({'quick' if args.quick else 'full'}) at {rev}, {time.strftime('%Y-%m-%d %H:%M')}; "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; Python {platform.python_version()}; "
            f"wrk -t2 -c64 {setup.seconds:g} s runs over TLS 1.3, {setup.reps} alternation(s), medians"
            + (f"; baseline = {args.baseline}" if args.baseline else ""))


def baseline_tree(ref: str, work: Path) -> Path:
    """The appliance as it was at ``ref`` (git archive: no worktree is registered)."""
    tree = work / "baseline-src"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "appliance", "engines"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def profile(setup: Setup, appliance: Appliance, out: Path) -> None:
    """py-spy on the serving process during one wrk run per hot route; raw stacks plus a summary."""
    out.mkdir(parents=True, exist_ok=True)
    assert appliance.server is not None
    scan = setup.scan_ids[appliance.name]
    runs: list[tuple[str, Callable[[], object]]] = [
        ("get-scan", lambda: wrk(f"{appliance.url}/api/v1/scans/{scan}", setup.seconds, keys=setup.keys(appliance))),
        ("list-scans", lambda: wrk(f"{appliance.url}/api/v1/scans?limit=100", setup.seconds,
                                   keys=setup.keys(appliance))),
        ("health", lambda: wrk(f"{appliance.url}/health", setup.seconds)),
        ("post-scans", lambda: wrk(f"{appliance.url}/api/v1/scans", setup.seconds, keys=setup.keys(appliance),
                                   method="POST", body=measures.submit_body(setup))),
    ]
    for name, run in runs:
        raw = out / f"{name}.txt"
        spy = subprocess.Popen([str(Path(PYTHON).parent / "py-spy"), "record", "--format", "raw", "-r", "250",
                                "--threads", "-p", str(appliance.server.pid), "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run()
        spy.send_signal(2)
        spy.wait(30)
        (out / f"{name}-summary.txt").write_text(summarize(raw))
    appliance.tool("cancel")
    print(f"profiles in {out} (raw stacks for flame graphs, *-summary.txt: where the time went)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one alternation, no scale rows")
    parser.add_argument("--baseline", metavar="GIT_REF", help="also measure the appliance as it was at this commit")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="also record py-spy profiles into DIR")
    parser.add_argument("--markdown", metavar="FILE", type=Path, help="also write the table to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data dirs, server logs)")
    parser.add_argument("--only", metavar="ROWS", help="comma-separated subset: get,list,health,post,ingest,binary,"
                        "nmap,scale")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (bench/run.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="cix-bench-"))
    setup = Setup(work, seconds=2 if args.quick else 5, reps=1 if args.quick else 3,
                  findings=20_000 if args.quick else 100_000, quick=args.quick)
    setup.profile_dir = args.profile
    setup.appliances.append(Appliance("now", work, config={"queue.workers": "0"}))
    if args.baseline:
        setup.appliances.append(Appliance("before", work, src=baseline_tree(args.baseline, work),
                                          config={"queue.workers": "0"}))
    scanner = Appliance("scanner", work, config={"queue.workers": "1"})
    started: list[Appliance | Reference] = []
    rows: list[Row] = []
    try:
        for appliance in [*setup.appliances, scanner]:
            appliance.init()
            appliance.start()
            started.append(appliance)
        bodies = {}
        for appliance in setup.appliances:
            client = appliance.client()
            ids = [client.call("POST", "/api/v1/scans", appliance.admin_key,
                               {"scanType": "nmap", "target": "127.0.0.1", "options": {"ports": "80"},
                                "tags": ["bench"]})[1]["data"]["id"] for _ in range(100)]
            appliance.tool("cancel")  # a listed page of finished scans, as a CI pipeline sees them
            setup.scan_ids[appliance.name] = ids[0]
            bodies = {"/health": client.call("GET", "/health")[1],
                      "/scan": client.call("GET", f"/api/v1/scans/{ids[0]}", appliance.admin_key)[1],
                      "/list": client.call("GET", "/api/v1/scans?limit=100", appliance.admin_key)[1]}
        first = setup.appliances[0]
        setup.reference = Reference(work, first.cert, first.data_dir / "tls-key.pem", bodies)
        setup.reference.start()
        started.append(setup.reference)
        print(header(args, setup), flush=True)

        only = set(args.only.split(",")) if args.only else None

        def wanted(name: str) -> bool:
            return only is None or name in only
        if wanted("get"):
            rows += measures.versus_reference(setup, "authenticated GET /scans/:id ÷ bare reference",
                                              lambda a: f"/api/v1/scans/{setup.scan_ids[a.name]}", "/scan", True,
                                              0.6, 25)
        if wanted("list"):
            rows += measures.versus_reference(setup, "authenticated GET /scans?limit=100 ÷ bare reference",
                                              lambda a: "/api/v1/scans?limit=100", "/list", True, 0.5)
        if wanted("health"):
            rows += measures.versus_reference(setup, "unauthenticated GET /health ÷ bare reference",
                                              lambda a: "/health", "/health", False, None)
        if wanted("post"):
            for appliance in setup.appliances:
                rows.append(measures.post_scans(setup, appliance))
        if wanted("ingest"):
            rows += ingest.ingest(setup)
            rows += [ingest.results_page(setup, appliance) for appliance in setup.appliances]
        if wanted("binary"):
            rows += measures.binary(setup)
        if wanted("nmap"):
            rows.append(measures.nmap_overhead(setup, scanner))
        if not args.quick and wanted("scale"):
            get_rps = float(rows[0].detail.split(" req/s")[0].replace(",", "")) if wanted("get") else 0.0
            if get_rps:
                rows += measures.reference_scale(setup, get_rps)
            rows += measures.io_thread_scale(setup)
            rows += measures.post_scale(setup)
        if args.profile:
            profile(setup, setup.appliances[0], args.profile)
    finally:
        for server in reversed(started):
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work dir kept: {work}")
    text = table(rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(header(args, setup) + "\n\n" + text + "\n")
    print(json.dumps({"invalid": [r.measure for r in rows if r.verdict.startswith("INVALID")]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
