#!/usr/bin/env bash
# Install what pidns needs on a Debian 12 machine: system packages (as root), then a venv with
# the project and its test tools. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    python3 python3-venv                   # the venv
    fuse3                                  # fusermount3: unprivileged FUSE views
    procps psmisc util-linux               # ps/top, pstree, unshare/lsns/setpriv: test clients
    lxcfs                                  # the FUSE peer the benchmarks compare against
    prometheus                             # a real server (and promtool) for the export tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: missing system packages: ${missing[*]} (run as root, or apt-get install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # lxcfs is a peer for benchmarks only; don't let its service hold a mount on this machine.
    if command -v systemctl >/dev/null && systemctl is-active -q lxcfs 2>/dev/null; then
        systemctl stop lxcfs || true
    fi
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
if [[ ! -f .venv/.installed || pyproject.toml -nt .venv/.installed ]]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch .venv/.installed
fi
