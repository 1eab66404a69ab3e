"""What the appliance adds to a scanner's own run time: one sqlmap scan of tests/vulnapp.py run directly
(the adapter's own argv, same environment) and through ``run_engine`` (ScanSpec, ProcessControl, parse,
outcome: what a worker does), N times each, alternating. Prints the medians; budget: 5 % + 0.5 s.

    .venv/bin/python bench/engine_overhead.py [--runs 5]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.base import ScanSpec
from engines.sqlmap import SqlmapEngine
from tests.engines.harness import run_engine
from tests.vulnapp import vuln_app

OPTIONS = {"technique": "BEU"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sqlmap = shutil.which("sqlmap")
    if sqlmap is None:
        print("sqlmap is not installed: build.sh engines", file=sys.stderr)
        return 1
    engine = SqlmapEngine()
    direct: list[float] = []
    through: list[float] = []
    with vuln_app() as app, tempfile.TemporaryDirectory() as tmp:
        target = app.url + "item?id=1"
        run_engine(engine, Path(tmp) / "warm", target, "url", OPTIONS)  # probe, page cache
        for i in range(args.runs):
            workdir = Path(tmp) / f"direct-{i}"
            workdir.mkdir()
            spec = ScanSpec("bench", target, "url", engine.validate(OPTIONS), 300, workdir, sqlmap)
            started = time.monotonic()
            subprocess.run(engine.build_argv(spec), cwd=workdir, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                           env={"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb", "HOME": str(workdir)})
            direct.append(time.monotonic() - started)
            started = time.monotonic()
            run = run_engine(engine, Path(tmp) / f"appliance-{i}", target, "url", OPTIONS)
            through.append(time.monotonic() - started)
            assert [f.parameter for f in run.findings] == ["id"], run
    d, t = statistics.median(direct), statistics.median(through)
    print(f"sqlmap direct: median {d:.3f} s {[round(x, 3) for x in direct]}")
    print(f"through run_engine: median {t:.3f} s {[round(x, 3) for x in through]}")
    print(f"overhead {t - d:+.3f} s; budget {0.05 * d + 0.5:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
