#!/usr/bin/env bash
# Installs the scanners that live on imported data and the two OSINT tools, versions pinned:
#   trivy 0.74.0 and nuclei 3.4.10, built from the Go module proxy into $CIX_ENGINES/bin;
#   theHarvester (PyPI harvester-windows 4.11.1, needs Python >= 3.12) and Sublist3r 1.0 (PyPI), each
#   in its own venv under $CIX_ENGINES, with its console script linked into $CIX_ENGINES/bin.
# Idempotent and quick when everything is at its pinned version. Called by `build.sh engines`.
#   CIX_ENGINES   install prefix (default /opt/cix-engines)
#   CIX_ENGINES_BIN  where the entry points are linked too (default /usr/local/bin: on the appliance's PATH)
#   CIX_PYTHON312 a Python >= 3.12 for theHarvester (default: the first one found, see find_python312)
# GOCACHE/GOMODCACHE stay at Go's defaults, so repeated builds on one machine reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${CIX_ENGINES:-/opt/cix-engines}
PATH="$PATH:/usr/local/go/bin"  # where the Go toolchain lives on the project's machines
TRIVY_VERSION=0.74.0
NUCLEI_VERSION=3.4.10
HARVESTER_VERSION=4.11.1
SUBLIST3R_VERSION=1.0
mkdir -p "$PREFIX/bin"

need_go() {
    command -v go >/dev/null 2>&1 || { echo "install-engines-data: go is required (Go >= 1.26)" >&2; exit 1; }
}

# -- trivy ---------------------------------------------------------------------------------------
if ! "$PREFIX/bin/trivy" --version 2>/dev/null | grep -qx "Version: $TRIVY_VERSION"; then
    need_go
    echo "==> building trivy $TRIVY_VERSION (go install; several minutes on 2 cores)"
    # trivy 0.74 imports encoding/json/v2, an experiment in Go 1.26; -X sets the version it reports.
    GOBIN="$PREFIX/bin" GOFLAGS=-trimpath GOEXPERIMENT=jsonv2 go install \
        -ldflags "-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=$TRIVY_VERSION" \
        "github.com/aquasecurity/trivy/cmd/trivy@v$TRIVY_VERSION"
fi

# -- nuclei --------------------------------------------------------------------------------------
nuclei_version() {
    local home
    home=$(mktemp -d)
    (cd "$home" && HOME="$home" "$PREFIX/bin/nuclei" -version -nc 2>&1 || true) | sed -n 's/.*Engine Version: v//p'
    rm -rf "$home"
}
if [ ! -x "$PREFIX/bin/nuclei" ] || [ "$(nuclei_version)" != "$NUCLEI_VERSION" ]; then
    need_go
    echo "==> building nuclei $NUCLEI_VERSION (packaging/nuclei: see its README)"
    (cd packaging/nuclei && GOFLAGS="-trimpath -buildvcs=false" go build -ldflags "-s -w" \
        -o "$PREFIX/bin/nuclei" github.com/projectdiscovery/nuclei/v3/cmd/nuclei)
fi

# -- theHarvester --------------------------------------------------------------------------------
find_python312() {
    local candidate
    for candidate in "${CIX_PYTHON312:-}" python3.13 python3.12 /usr/bin/python3.13 /usr/bin/python3.12 \
                     /root/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.13*/bin/python3.13; do
        [ -n "$candidate" ] || continue
        if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
venv_has() {  # venv dist version
    "$1/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null
}
if ! venv_has "$PREFIX/harvester" harvester-windows "$HARVESTER_VERSION"; then
    PY312=$(find_python312) || { echo "install-engines-data: theHarvester needs Python >= 3.12; set CIX_PYTHON312" >&2; exit 1; }
    echo "==> installing theHarvester (harvester-windows $HARVESTER_VERSION) with $PY312"
    rm -rf "$PREFIX/harvester"
    "$PY312" -m venv "$PREFIX/harvester"
    "$PREFIX/harvester/bin/python" -m pip install -q --disable-pip-version-check "harvester-windows==$HARVESTER_VERSION"
fi
ln -sfn "$PREFIX/harvester/bin/harvester_windows" "$PREFIX/bin/harvester_windows"

# -- Sublist3r -----------------------------------------------------------------------------------
if ! venv_has "$PREFIX/sublist3r" sublist3r "$SUBLIST3R_VERSION"; then
    echo "==> installing Sublist3r $SUBLIST3R_VERSION"
    rm -rf "$PREFIX/sublist3r"
    "${PYTHON:-$(command -v python3.11 || command -v python3)}" -m venv "$PREFIX/sublist3r"
    "$PREFIX/sublist3r/bin/python" -m pip install -q --disable-pip-version-check "sublist3r==$SUBLIST3R_VERSION"
fi
ln -sfn "$PREFIX/sublist3r/bin/sublist3r" "$PREFIX/bin/sublist3r"

# Linked onto PATH like the web scanners, so the appliance finds them without engines.paths.
BIN_DIR=${CIX_ENGINES_BIN:-/usr/local/bin}
mkdir -p "$BIN_DIR"
for entry in trivy nuclei harvester_windows sublist3r; do
    [ "$(readlink "$BIN_DIR/$entry" 2>/dev/null)" = "$PREFIX/bin/$entry" ] || ln -sfn "$PREFIX/bin/$entry" "$BIN_DIR/$entry"
done
echo "==> data engines in $PREFIX/bin (linked into $BIN_DIR): trivy $TRIVY_VERSION, nuclei $NUCLEI_VERSION, harvester_windows $HARVESTER_VERSION, sublist3r $SUBLIST3R_VERSION"
