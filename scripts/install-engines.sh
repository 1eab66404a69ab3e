#!/usr/bin/env bash
# Installs the web-application scanners the appliance drives: nikto (Debian, non-free), sqlmap and
# wapiti (PyPI, pinned, each in a venv of its own so that their dependencies can never break the
# appliance's). Idempotent and fast when everything is in place: each part is skipped when the pinned
# version is already installed. Run as root (or with sudo); called by `build.sh engines` and test.sh.
#
#   CIX_ENGINES_DIR   where the venvs go                      (default /opt/cix-engines)
#   CIX_ENGINES_BIN   where the entry points are linked       (default /usr/local/bin: on the appliance's PATH)
#   PYTHON311         interpreter for the venvs               (default python3.11)
#   CIX_ENGINES       space-separated subset to install       (default "nikto sqlmap wapiti")
set -euo pipefail

ENGINES_DIR=${CIX_ENGINES_DIR:-/opt/cix-engines}
BIN_DIR=${CIX_ENGINES_BIN:-/usr/local/bin}
PYTHON311=${PYTHON311:-$(command -v python3.11 || command -v python3)}
SELECTED=${CIX_ENGINES:-nikto sqlmap wapiti}
SQLMAP_VERSION=1.10.10
WAPITI_VERSION=3.2.3

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { echo "==> $*"; }

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
}

install_nikto() {
    if dpkg-query -W -f='${Status}' nikto 2>/dev/null | grep -q "install ok installed"; then
        say "nikto $(dpkg-query -W -f='${Version}' nikto) already installed"
        return
    fi
    # Nikto is in Debian's non-free component (its check databases carry the CIRT licence, see
    # docs/install.md). Only the non-free component of the running release is added.
    local codename list=/etc/apt/sources.list.d/cix-debian-non-free.sources
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    if ! grep -rqsE '^(Components:.*|deb .*)non-free( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        say "adding Debian $codename non-free to apt sources ($list)"
        as_root tee "$list" >/dev/null <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_updated=0
    fi
    say "installing nikto (Debian non-free)"
    apt_update
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nikto >/dev/null
}

# pip_engine <name> <distribution> <version> <entry point>...
pip_engine() {
    local name=$1 dist=$2 version=$3; shift 3
    local venv=$ENGINES_DIR/$name
    local site
    if [ -x "$venv/bin/python" ]; then
        site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        if compgen -G "$site/${dist}-${version}.dist-info" >/dev/null; then
            say "$name $version already installed in $venv"
            link_entry_points "$venv" "$@"
            return
        fi
    fi
    say "installing $dist==$version into $venv"
    as_root mkdir -p "$ENGINES_DIR"
    [ -x "$venv/bin/python" ] || as_root "$PYTHON311" -m venv "$venv"
    as_root "$venv/bin/python" -m pip install -q --disable-pip-version-check "$dist==$version"
    link_entry_points "$venv" "$@"
}

link_entry_points() {
    local venv=$1; shift
    as_root mkdir -p "$BIN_DIR"
    for entry in "$@"; do
        [ "$(readlink "$BIN_DIR/$entry" 2>/dev/null)" = "$venv/bin/$entry" ] || as_root ln -sfn "$venv/bin/$entry" "$BIN_DIR/$entry"
    done
}

install_sqlmap() {
    pip_engine sqlmap sqlmap "$SQLMAP_VERSION" sqlmap
}

install_wapiti() {
    pip_engine wapiti wapiti3 "$WAPITI_VERSION" wapiti
}

for engine in $SELECTED; do
    case $engine in
        nikto) install_nikto ;;
        sqlmap) install_sqlmap ;;
        wapiti) install_wapiti ;;
        *) echo "install-engines.sh: unknown engine $engine (nikto, sqlmap, wapiti)" >&2; exit 2 ;;
    esac
done
