#!/usr/bin/env bash
# Install everything (nmap, redis-server, venv, PyInstaller, every scanner), lint and type-check, build
# the single binary, run the whole test suite, then the quick benchmark (bench/README.md: it prints the
# table and asserts nothing about speed). Extra arguments go to pytest, e.g. ./test.sh -k keys
# The exit status is pytest's, or the benchmark's when pytest passed and the benchmark failed to run.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
bash build.sh engines
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
bash build.sh
log=$(mktemp)
set +e
.venv/bin/python -m pytest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "==> bench (quick)"
./bench/run.sh --quick
bench=$?
set -e
[ "$status" -ne 0 ] || status=$bench
# pytest's summary once more, as the last line: the suite's verdict, not the benchmark's table.
echo "==> pytest (exit $status):"
tail -n 1 "$log"
rm -f "$log"
exit "$status"
