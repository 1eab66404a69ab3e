#!/usr/bin/env bash
# Install and start the appliance on its embedded defaults: SQLite, embedded queue, self-signed
# TLS 1.3 on port 8443. The first run creates the data dir and prints the first admin key.
#   CIX_DATA_DIR  data dir (default: ./cix-data)      extra arguments go to `cix-appliance serve`
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install.sh
export CIX_DATA_DIR=${CIX_DATA_DIR:-$PWD/cix-data}
if [ ! -f "$CIX_DATA_DIR/appliance.db" ]; then
    .venv/bin/cix-appliance init --hostname "$(hostname -f 2>/dev/null || hostname)"
fi
exec .venv/bin/cix-appliance serve "$@"
