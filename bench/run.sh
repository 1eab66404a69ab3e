#!/usr/bin/env bash
# The benchmark suite: ./bench/run.sh [--quick] [--baseline GIT_REF] [--profile DIR] [--markdown FILE] [--keep]
# Installs what it needs (wrk from Debian's packages, the venv, bench/requirements.txt), then runs
# bench/run.py, which starts the appliance from this source tree on 127.0.0.1 with fresh data dirs and
# the bare reference beside it, and prints one table. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v wrk >/dev/null 2>&1; then
    echo "==> installing wrk (Debian package)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi
./scripts/install.sh
stamp=.venv/.cix-bench-installed
wanted=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing bench/requirements.txt"
    .venv/bin/python -m pip install -qq -r bench/requirements.txt
    echo "$wanted" > "$stamp"
fi
exec .venv/bin/python bench/run.py "$@"
