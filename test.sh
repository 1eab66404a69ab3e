#!/usr/bin/env bash
# Install everything (nmap, venv, PyInstaller, the web scanners), build the single binary, run the whole test suite.
# Extra arguments go to pytest, e.g. ./test.sh -k keys
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
bash build.sh engines
bash build.sh
exec .venv/bin/python -m pytest "$@"
