#!/bin/sh
# Install what pidns needs on a Debian 12 machine, from nothing but this checkout: system
# packages (as root; python3 included), then a venv with the project and its test tools.
# Safe to run again: it installs only what is missing, and says nothing when nothing is.
# POSIX sh, so that it runs before anything is installed (./go calls it).
set -eu
cd "$(dirname "$0")/.."

# python3 python3-venv: the venv. fuse3: fusermount3, for unprivileged FUSE views.
# procps psmisc util-linux mount findutils htop tmux: ps/top, pstree, unshare/lsns/setpriv/nsenter,
# find, htop (read from a tmux screen): the real clients and oracles of the tests. lxcfs: the FUSE peer of the benchmarks and the oracle
# of virtualised files. podman runc uidmap docker.io containerd systemd-container busybox-static:
# real containers (images built here from busybox) for the container and resource tests.
# prometheus: a real server (and promtool) for the export tests.
packages="python3 python3-venv fuse3 procps psmisc util-linux mount findutils htop tmux lxcfs
    podman runc uidmap docker.io containerd systemd-container busybox-static prometheus"
missing=
for p in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing system packages:$missing (run as root, or apt-get install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # lxcfs is a peer for benchmarks only; don't let its service hold a mount on this machine.
    if command -v systemctl >/dev/null && systemctl is-active -q lxcfs 2>/dev/null; then
        systemctl stop lxcfs || true
    fi
fi

# fusermount3 records and finds unprivileged FUSE mounts through /etc/mtab, which a system that
# boots with systemd has and a minimal install (debootstrap, containers) may not.
if [ ! -e /etc/mtab ] && [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: linking /etc/mtab to /proc/self/mounts (fusermount3 needs it)"
    ln -s ../proc/self/mounts /etc/mtab
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$python" -m venv .venv
fi
# Installed once, and again when pyproject.toml changes (the install is editable: sources are
# read from src/ as they are).
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "bootstrap: installing pidns and its test tools into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch .venv/.installed
fi
