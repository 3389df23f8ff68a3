#!/bin/sh
# The README's entry point, for a machine that may have nothing but this checkout:
#   ./go demo    install what is missing (system packages as root, then .venv), run `pidns demo`
#   ./go test    the same install, then the whole test suite (arguments go to pytest)
#   ./go setup | lint | bench | soak
# POSIX sh only: on a minimal Debian there is no make and no python3 until this installs them.
set -eu
cd "$(dirname "$0")"
command=${1:-}
[ $# -gt 0 ] && shift
case $command in
    setup | demo | test | lint | bench | soak) ;;
    *)
        echo "usage: ./go demo|test|setup|lint|bench|soak [ARGS...]" >&2
        exit 2
        ;;
esac
sh scripts/bootstrap.sh
bin=.venv/bin
case $command in
    setup) ;;
    demo) exec "$bin/pidns" demo "$@" ;;
    test) exec "$bin/python" -m pytest "$@" ;;
    lint)
        "$bin/ruff" check src tests bench
        "$bin/ruff" format --check src tests bench
        exec "$bin/mypy"
        ;;
    bench) exec "$bin/python" -m bench "$@" ;;
    soak) PIDNS_SOAK_SECONDS=${PIDNS_SOAK_SECONDS:-300} exec "$bin/python" -m pytest tests/soak -q "$@" ;;
esac
