#!/bin/sh
# The README's two commands on a fresh minimal Debian 12, from a checkout in /root (mode 0700),
# without make: as a new user would run them.
#
#   scripts/fresh-check.sh [SCENARIO...]       as root; a scenario is a comma list of ./go commands
#
# Default scenarios: "demo,demo,test" and "test,demo": each command as the first thing run on a
# fresh machine, and each run again over the first one's set-up (idempotence).
# Each scenario gets its own copy of a cached `debootstrap --variant=minbase bookworm` rootfs
# (built once, under $PIDNS_FRESH_CACHE, default /var/cache/pidns-fresh; the mirror is
# $PIDNS_FRESH_MIRROR, default http://deb.debian.org/debian), with this checkout's files (those
# git tracks or would track; no .venv) copied to /root/pidns. Inside a private mount namespace the
# copy becomes / (pivot_root) with /proc, /sys, /dev and a tmpfs /run, and the commands run there
# as root with a clean environment. A machine whose own trust store has local CAs (Debian keeps
# them in /usr/local/share/ca-certificates: a TLS-inspecting proxy) hands its CA bundle to the
# fresh machine's pip (PIP_CERT), as such a network's new machines would be set up; or set
# $PIDNS_FRESH_CA to a bundle. http(s)_proxy pass through when set. Prints one line per step with its duration; the full output
# of each scenario goes to $PIDNS_FRESH_CACHE/logs/RUN/. Exit status: 0 when every step passed.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${PIDNS_FRESH_CACHE:-/var/cache/pidns-fresh}
mirror=${PIDNS_FRESH_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
rootfs=$cache/$suite-minbase

say() { echo "fresh-check: $*"; }
die() { echo "fresh-check: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount namespaces, pivot_root): run it with sudo"
[ $# -gt 0 ] || set -- demo,demo,test test,demo
for scenario in "$@"; do
    for step in $(echo "$scenario" | tr , ' '); do
        case $step in
            demo | test | setup) ;;
            *) echo "fresh-check: error: unknown step '$step' in '$scenario' (use demo, test, setup)" >&2; exit 2 ;;
        esac
    done
done

mkdir -p "$cache/logs"
if [ ! -f "$rootfs/.complete" ]; then
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    say "building $rootfs from $mirror (once)"
    rm -rf "$rootfs.tmp"
    start=$(date +%s)
    debootstrap --variant=minbase "$suite" "$rootfs.tmp" "$mirror" >"$cache/logs/debootstrap.log" 2>&1 ||
        die "debootstrap failed: see $cache/logs/debootstrap.log"
    # The same sources a Debian 12 install has, so that apt-get update sees security updates.
    printf '%s\n' "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb http://deb.debian.org/debian-security $suite-security main" >"$rootfs.tmp/etc/apt/sources.list"
    apt_clean="$rootfs.tmp/var/cache/apt/archives"
    find "$apt_clean" -name '*.deb' -delete
    touch "$rootfs.tmp/.complete"
    mv "$rootfs.tmp" "$rootfs"
    say "rootfs built in $(($(date +%s) - start)) s"
fi

# The files of the checkout as a clone would have them (tracked or not ignored), no .venv.
copy_checkout() {
    dest=$1
    mkdir -p "$dest"
    if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$here" && git ls-files -z --cached --others --exclude-standard |
            tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$dest" -xf -
    else
        tar -C "$here" --exclude=./.venv --exclude='*/__pycache__' -cf - . | tar -C "$dest" -xf -
    fi
}

ca=${PIDNS_FRESH_CA:-}
if [ -z "$ca" ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    ca=/etc/ssl/certs/ca-certificates.crt
fi
[ -z "$ca" ] || [ -r "$ca" ] || die "PIDNS_FRESH_CA=$ca is not a readable file"
# The environment a fresh root login has, plus this network's settings.
env="HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
[ -z "$ca" ] || env="$env PIP_CERT=/etc/ssl/certs/fresh-check-ca.crt"
for v in http_proxy https_proxy no_proxy; do
    eval "value=\${$v:-}"
    # shellcheck disable=SC2154 # set by eval
    [ -z "$value" ] || env="$env $v=$value"
done

logs=$cache/logs/$(date +%Y%m%d-%H%M%S)-$$  # this run's: runs may overlap
mkdir -p "$logs"
failed=0
n=0
for scenario in "$@"; do
    n=$((n + 1))
    work=$cache/run.$$.$n
    log=$logs/scenario-$n.log
    rm -rf "$work"
    cp -a "$rootfs" "$work"
    rm -f "$work/.complete"
    chmod 0700 "$work/root"
    copy_checkout "$work/root/pidns"
    cp -L /etc/resolv.conf "$work/etc/resolv.conf"
    if [ -n "$ca" ]; then
        mkdir -p "$work/etc/ssl/certs"
        cp -L "$ca" "$work/etc/ssl/certs/fresh-check-ca.crt"
    fi
    steps=$(echo "$scenario" | tr , ' ')
    say "scenario $n: ./go $(echo "$steps" | sed 's/ / then .\/go /g') (log: $log)"
    # Inside: the copy is made a mount of its own, gets its filesystems, becomes / by pivot_root,
    # then each step runs from /root/pidns with a clean environment; a marker line per step.
    set +e
    unshare --mount --propagation private --fork sh -c '
        set -e
        root=$1; env=$2; shift 2
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"  # as a booted machine has them
        mount --rbind /dev "$root/dev"
        mount -t tmpfs -o mode=0755 tmpfs "$root/run"
        cd "$root"
        mkdir -p .oldroot
        pivot_root . .oldroot
        exec /usr/sbin/chroot . /bin/sh -c "
            umount -l /.oldroot && rmdir /.oldroot
            cd /root/pidns
            for step in \$*; do
                start=\$(date +%s)
                echo \"== ./go \$step\"
                if env -i $env ./go \$step </dev/null 2>&1; then
                    echo \"== ./go \$step: ok (\$((\$(date +%s) - start)) s)\"
                else
                    echo \"== ./go \$step: FAILED with \$? (\$((\$(date +%s) - start)) s)\"
                    exit 1
                fi
            done
        " sh "$@"
    ' sh "$work" "$env" $steps >"$log" 2>&1
    rc=$?
    set -e
    # The step lines, and the test suite's summary and failures.
    grep -E '^== |^(FAILED|ERROR) |^=+ .*(passed|failed|error).* =+$' "$log" | sed 's/^/    /' || true
    if [ "$rc" -ne 0 ]; then
        failed=1
        say "scenario $n FAILED (exit $rc): see $log (its root is kept in $work)"
    else
        say "scenario $n passed"
        rm -rf "$work"
    fi
done
[ "$failed" -eq 0 ] && say "all scenarios passed"
exit "$failed"
