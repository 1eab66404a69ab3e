#!/usr/bin/env bash
# Build the single-file binary dist/cix-appliance with PyInstaller (packaging/cix-appliance.spec).
#   build.sh engines    instead installs the scanners the appliance drives (see docs/install.md):
#                       web scanners (nikto, sqlmap, wapiti: scripts/install-engines.sh) and data engines
#                       (trivy, nuclei, theHarvester, Sublist3r: scripts/install-engines-data.sh)
#   PYTHON              interpreter with the project and PyInstaller installed (default: .venv/bin/python)
#   CIX_RUNTIME_TMPDIR  optional absolute path baked into the binary as its extraction directory;
#                       unset, the binary extracts to $TMPDIR (else /tmp) at run time. See packaging/README.md.
# The binary needs a glibc at least as new as the build host's: build on the oldest distribution you
# deploy to (Debian 12, glibc 2.36).
set -euo pipefail
cd "$(dirname "$0")"

if [ "${1:-}" = engines ]; then
    shift
    bash scripts/install-engines.sh "$@"
    bash scripts/install-engines-data.sh
    exit 0
fi

PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "build.sh: $PYTHON not found; set up the venv first with ./scripts/install.sh (see the README)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import PyInstaller, appliance' 2>/dev/null; then
    echo "build.sh: $PYTHON lacks PyInstaller or the appliance package; run ./scripts/install.sh (see the README)" >&2
    exit 1
fi

if [ -n "${CIX_RUNTIME_TMPDIR:-}" ]; then
    echo "==> baking runtime_tmpdir=$CIX_RUNTIME_TMPDIR into the binary"
fi
export CIX_RUNTIME_TMPDIR=${CIX_RUNTIME_TMPDIR:-}

echo "==> building dist/cix-appliance with $("$PYTHON" -m PyInstaller --version 2>/dev/null | head -n1 | sed 's/^/PyInstaller /')"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --workpath build --distpath dist packaging/cix-appliance.spec

./dist/cix-appliance --version >/dev/null  # smoke: the frozen CLI starts
size=$(stat -c %s dist/cix-appliance)
echo "==> dist/cix-appliance: $(numfmt --to=iec-i --suffix=B "$size") ($size bytes); glibc floor $(ldd --version | head -n1 | awk '{print $NF}')"
