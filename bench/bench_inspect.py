"""The inspector against its peers: procps `ps`, a psutil script, and bare interpreter start-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.tasks import live_tasks
from bench.timing import interleaved_ratio, run_quiet

BIN = Path(sys.executable).parent
PSUTIL_SCRIPT = (
    "import psutil, sys\n"
    "for p in psutil.process_iter(['pid', 'ppid', 'name']):\n"
    "    sys.stdout.write(f\"{p.info['pid']} {p.info['ppid']} {p.info['name']}\\n\")\n"
)


def run() -> dict[str, float]:
    pidns = str(BIN / "pidns")
    ours = run_quiet([pidns, "ps", "--json"])
    results: dict[str, float] = {}
    with live_tasks(10_000):
        tasks = sum(1 for n in os.listdir("/proc") if n.isdigit())
        print(f"  ({tasks} tasks alive)")
        a, b, r = interleaved_ratio(ours, run_quiet(["ps", "-e", "-o", "pid,ppid,pidns,comm"]), 7)
        print(f"  pidns ps --json {a * 1e3:.0f} ms, ps -e -o pid,ppid,pidns,comm {b * 1e3:.0f} ms")
        results["ps_vs_procps_10k"] = r
        a, b, r = interleaved_ratio(ours, run_quiet([sys.executable, "-c", PSUTIL_SCRIPT]), 7)
        print(f"  pidns ps --json {a * 1e3:.0f} ms, psutil process_iter {b * 1e3:.0f} ms")
        results["ps_vs_psutil_10k"] = r
    a, b, r = interleaved_ratio(
        run_quiet([pidns, "--help"]), run_quiet([sys.executable, "-c", "pass"]), 31
    )
    print(f"  pidns --help {a * 1e3:.1f} ms, python -c pass {b * 1e3:.1f} ms")
    results["help_vs_python"] = r
    return results
