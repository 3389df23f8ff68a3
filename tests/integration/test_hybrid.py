"""The hybrid (`--backend kernel --virtualize`): the kernel's procfs of NS with only the
virtualised files bound over it from a FUSE view. Per-task files are the kernel's own (ps reads
exactly what it reads without --virtualize), the resource files show NS's cgroup, and nothing
stays mounted after."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runtime_util import Background, pidns

pytestmark = [pytest.mark.root, pytest.mark.fuse]

PS = "ps -eo pid,ppid,pgid,sid,uid,stat,lstart,comm,args"


@pytest.fixture(scope="module")
def limited() -> Iterator[int]:
    """A namespace with a 64M cgroup of its own; its init's host pid."""
    run = Background("--memory", "64M", "--", "sh", "-c", "sleep 300 & sleep 300 & wait")
    try:
        yield int(run.started["inits"][-1])
    finally:
        run.close()


def _own_lines(ps: str) -> list[str]:
    """ps's lines of the namespace's own tasks (not the exec'd shell and ps themselves)."""
    return [line for line in ps.splitlines() if " sh -c " not in line and " ps -eo " not in line]


def test_exec_hybrid_ps_is_the_kernels(limited: int) -> None:
    hybrid = pidns(
        "exec", "--ns", f"@{limited}", "--backend", "kernel", "--virtualize", "--",
        "sh", "-c", f"{PS}; echo ---; cat /proc/meminfo; echo ---; cat /proc/self/mountinfo",
    )  # fmt: skip
    kernel = pidns("exec", "--ns", f"@{limited}", "--backend", "kernel", "--", "sh", "-c", PS)
    assert hybrid.returncode == 0, hybrid.stderr
    assert kernel.returncode == 0, kernel.stderr
    ps, meminfo, mountinfo = hybrid.stdout.split("---\n")
    assert _own_lines(ps) == _own_lines(kernel.stdout)
    assert len(_own_lines(ps)) == 4  # header, init, two sleeps
    assert re.search(r"^MemTotal:\s+65536 kB$", meminfo, re.M), meminfo
    over = {line.split()[4] for line in mountinfo.splitlines() if "fuse.pidns" in line}
    assert {"/proc/meminfo", "/proc/stat", "/proc/cpuinfo", "/proc/loadavg"} <= over
    assert not any(re.match(r"/proc/\d", path) for path in over)


def test_mount_hybrid_then_umount(limited: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pidns-hybrid-") as hybrid_dir, \
            tempfile.TemporaryDirectory(prefix="pidns-kernel-") as kernel_dir:  # fmt: skip
        made = pidns("mount", f"@{limited}", hybrid_dir, "--backend", "kernel", "--virtualize")
        assert made.returncode == 0, made.stderr
        plain = pidns("mount", f"@{limited}", kernel_dir, "--backend", "kernel")
        assert plain.returncode == 0, plain.stderr
        try:
            meminfo = Path(hybrid_dir, "meminfo").read_text()
            assert re.search(r"^MemTotal:\s+65536 kB$", meminfo, re.M)
            assert Path(kernel_dir, "meminfo").read_text() != meminfo
            for rel in ("1/status", "1/stat", "1/cmdline"):
                assert Path(hybrid_dir, rel).read_bytes() == Path(kernel_dir, rel).read_bytes()
            assert sorted(os.listdir(hybrid_dir)) == sorted(os.listdir(kernel_dir))
            listed = pidns("mounts", "--json")
            assert hybrid_dir in listed.stdout
        finally:
            gone = pidns("umount", hybrid_dir)
            pidns("umount", kernel_dir)
        assert gone.returncode == 0, gone.stderr
        with open("/proc/self/mountinfo") as f:
            mounts = f.read()
        assert hybrid_dir not in mounts and "pidns-virtual-" not in mounts
