#!/usr/bin/env bash
# Installs what the appliance needs on a fresh Debian 12 machine: nmap from Debian's packages and a
# Python 3.11 venv (.venv) with the pinned dependencies. Idempotent; run by run.sh and test.sh.
# The venv is only (re)installed when constraints.txt or pyproject.toml changed since the last
# install: their hash is kept in .venv/.cix-installed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# nmap scans; redis-server only runs in the tests (remote workers share the appliance's Redis queue).
missing=()
command -v nmap >/dev/null 2>&1 || missing+=(nmap)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.cix-installed
wanted=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && [ -x .venv/bin/cix-appliance ]; then
    exit 0
fi
echo "==> installing Python dependencies (pinned in constraints.txt)"
# -qq: pip still prints errors, but not setuptools' notices about editable installs.
.venv/bin/python -m pip install -qq --upgrade pip
.venv/bin/python -m pip install -qq -c constraints.txt -e ".[test,build]"
echo "$wanted" > "$stamp"
