"""How long ``engines import`` takes for a bundle of a given size (default 50 MB): a trivy-db tar.gz
whose trivy.db is incompressible, imported through the CLI exactly as an operator does.

    .venv/bin/python scripts/bench-engine-import.py [--mb 50]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.engines.bundles import trivy_db_tar


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "appliance"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([*cli, "init", "--data-dir", str(data), "--json"], check=True, capture_output=True)
        bundle = trivy_db_tar(Path(tmp) / "trivy-db.tar.gz", db_size=args.mb << 20)
        size = bundle.stat().st_size
        for attempt in (1, 2):
            started = time.monotonic()
            subprocess.run([*cli, "engines", "import", "--data-dir", str(data), "trivy-db", str(bundle)],
                           check=True, capture_output=True)
            elapsed = time.monotonic() - started
            print(json.dumps({"bundleBytes": size, "attempt": attempt, "seconds": round(elapsed, 2),
                              "mbPerSecond": round(size / elapsed / 1e6, 1)}))


if __name__ == "__main__":
    main()
