"""`pidns run` start-up against `python -c pass` and util-linux unshare; the USS of one init.

Keys: run_vs_python (target <= 1.5), run_vs_unshare, init_uss_mb (target <= 4).
"""

from __future__ import annotations

import compileall
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.timing import interleaved_ratio, run_quiet

BIN = Path(sys.executable).parent
PIDNS = str(BIN / "pidns")


def _uss_mb(pid: int) -> float:
    """Unique set size: the pages only this process maps (Private_* of smaps_rollup), in MiB."""
    kib = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:", "Private_Hugetlb:")):
                kib += int(line.split()[1])
    return kib / 1024


def init_uss_mb() -> float:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [PIDNS, "run", "--status-json", f"/dev/fd/{write}", "--", "sleep", "60"],
        pass_fds=(write,),
    )
    os.close(write)
    try:
        with os.fdopen(read) as status:
            started = json.loads(status.readline())
        return _uss_mb(started["inits"][-1])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def run() -> dict[str, float]:
    # Measure the installed state: bytecode compiled once, as pip does for a regular install
    # (an editable checkout run with PYTHONDONTWRITEBYTECODE would recompile on every start).
    compileall.compile_dir(str(Path(__file__).parents[1] / "src" / "pidns"), quiet=1)
    ours = run_quiet([PIDNS, "run", "--", "true"])
    python = run_quiet([sys.executable, "-c", "pass"])
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    _, _, vs_python = interleaved_ratio(ours, python, rounds=21)
    _, _, vs_unshare = interleaved_ratio(ours, run_quiet(unshare), rounds=21)
    return {
        "run_vs_python": vs_python,
        "run_vs_unshare": vs_unshare,
        "init_uss_mb": init_uss_mb(),
    }
