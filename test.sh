#!/usr/bin/env bash
# Install everything (nmap, redis-server, venv, PyInstaller, every scanner), lint and type-check, build
# the single binary, run the whole test suite. Extra arguments go to pytest, e.g. ./test.sh -k keys
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
bash build.sh engines
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
bash build.sh
exec .venv/bin/python -m pytest "$@"
