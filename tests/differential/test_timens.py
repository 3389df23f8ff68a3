"""The FUSE view against the kernel's procfs for a reader in a time namespace with a boottime
offset (docs/kernel-proc.md §14b): the kernel gives that reader every task's start time, uptime
and btime in its own clock, whichever instance it reads; the view must too. The readers run
under `unshare --time --boottime`, the views are of a namespace tree that is not in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.harness import scenario
from tests.differential.test_views import views

pytestmark = [
    pytest.mark.root,
    pytest.mark.fuse,
    pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare"),
    pytest.mark.skipif(not os.path.exists("/proc/self/ns/time"), reason="no time namespaces"),
]

ROOT = Path(__file__).resolve().parents[2]
# In the reader: every task's start time, btime, uptime through both views, and the whole walk.
READER = """
import json, sys
from pathlib import Path
from tests.differential.harness import compare, stat_fields
fuse, kernel = sys.argv[1:3]
def times(view):
    starts = {p: stat_fields(f"{p}/stat")[8] for p in Path(view).iterdir()
              if p.name.isdigit() and (p / "stat").exists()}
    btime = next(l for l in Path(f"{view}/stat").read_text().splitlines() if l.startswith("btime"))
    return {"starts": {p.name: s for p, s in starts.items()}, "btime": btime,
            "uptime": float(Path(f"{view}/uptime").read_text().split()[0])}
offset = Path("/proc/self/timens_offsets").read_text()
print(json.dumps({"fuse": times(fuse), "kernel": times(kernel), "offsets": offset,
                  "problems": compare(fuse, kernel, 0.15)}))
"""


def read_as_timens_reader(fuse: str, kernel: str, boottime: int) -> dict[str, object]:
    out = subprocess.run(
        ["unshare", "--time", "--fork", "--boottime", str(boottime), "--",
         sys.executable, "-c", READER, fuse, kernel],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    boottime=st.sampled_from([-1000, -1, 7, 86400 * 400]),
    levels=st.integers(1, 3),
    sleepers=st.integers(0, 2),
)
def test_a_readers_clock_is_the_kernels(boottime: int, levels: int, sleepers: int) -> None:
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    if host_uptime + boottime <= 2:
        boottime = 1 - int(host_uptime)  # the reader's clock must not start below 0
    spec = {"levels": [{"sleepers": sleepers}] * levels, "joined": False}
    with scenario(spec) as info:
        member = info["members"][info["ns"][-1]]
        with views(member) as (fuse, kernel):
            got = read_as_timens_reader(fuse, kernel, boottime)
    assert f"boottime {boottime} 0" in " ".join(str(got["offsets"]).split())
    fuse_times, kernel_times = got["fuse"], got["kernel"]
    assert isinstance(fuse_times, dict) and isinstance(kernel_times, dict)
    assert fuse_times["starts"] == kernel_times["starts"]
    assert fuse_times["btime"] == kernel_times["btime"]
    assert abs(fuse_times["uptime"] - kernel_times["uptime"]) < 1.0
    assert abs(kernel_times["uptime"] - (host_uptime + boottime)) < 60  # the reader's clock
    assert not got["problems"], "\n".join(got["problems"])  # type: ignore[arg-type]
