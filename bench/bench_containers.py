"""Container naming: `ls`/`ps --json` with naming ÷ without (--no-containers) on a host running
50 podman containers, and what resolving `--ns podman:NAME` costs over `--ns @PID`.

Needs root and podman (runc, cgroupfs, as tests/integration/test_containers_podman.py runs it);
skipped with a message otherwise. Every container it starts is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.timing import interleaved_ratio, run_quiet

BIN = Path(sys.executable).parent
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
COUNT = 50


def _image(prefix: str) -> str:
    image = f"localhost/{prefix}:1"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy("/bin/busybox", root / "bin/busybox")
        (root / "bin/sleep").symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [*PODMAN, "import", "-", image], stdin=tar.stdout, check=True, capture_output=True
        )
        tar.wait()
    return image


def run() -> dict[str, float]:
    if os.geteuid() != 0 or shutil.which("podman") is None or not os.path.exists("/bin/busybox"):
        print("  skipped: needs root, podman and busybox-static")
        return {}
    prefix = f"pidnsb-{uuid.uuid4().hex[:8]}"
    image = _image(prefix)
    names = [f"{prefix}-{i}" for i in range(COUNT)]
    try:
        for name in names:
            subprocess.run([*PODMAN, "run", "-d", "--name", name, *RUN, image, "/bin/sleep", "600"],
                           check=True, capture_output=True)  # fmt: skip
        pid = subprocess.run([*PODMAN, "inspect", "--format", "{{.State.Pid}}", names[0]],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
        pidns = str(BIN / "pidns")
        results: dict[str, float] = {}
        for cmd in (["ls", "--json"], ["ps", "--json"]):
            a, b, r = interleaved_ratio(
                run_quiet([pidns, *cmd]), run_quiet([pidns, *cmd, "--no-containers"]), 11
            )
            print(
                f"  pidns {' '.join(cmd)} {a * 1e3:.0f} ms, with --no-containers {b * 1e3:.0f} ms"
            )
            results[f"{cmd[0]}_naming_{COUNT}_containers"] = r
        a, b, _r = interleaved_ratio(
            run_quiet([pidns, "ps", "--ns", f"podman:{names[0]}", "--json"]),
            run_quiet([pidns, "ps", "--ns", f"@{pid}", "--json"]),
            15,
        )
        print(f"  ps --ns podman:NAME {a * 1e3:.1f} ms, --ns @PID {b * 1e3:.1f} ms")
        results["resolve_podman_name_extra_ms"] = (a - b) * 1e3
        return results
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", *names], capture_output=True)
        subprocess.run([*PODMAN, "rmi", "-f", image], capture_output=True)
