"""Resource virtualisation against LXCFS.

lxcfs_meminfo_vs_lxcfs   open+read+close of proc/meminfo through `pidns lxcfs` / through LXCFS
                         (the same reader, in its own memory cgroup; both render from it)
hybrid_ps_vs_kernel_1k   `ps -ef` inside a namespace of 1,000 tasks (made by `pidns run --memory`)
                         with the hybrid (`--backend kernel --virtualize`) at /proc / with the
                         plain kernel procfs of the same namespace at /proc
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from bench.timing import interleaved_ratio, run_quiet


def _loop(path: str, n: int = 300) -> Callable[[], object]:
    def call() -> None:
        for _ in range(n):
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 65536)
            os.close(fd)

    return call


@contextlib.contextmanager
def _lxcfs(base: str) -> Iterator[str]:
    mnt = f"{base}/lxcfs"
    os.mkdir(mnt)
    proc = subprocess.Popen(
        ["lxcfs", "-f", "-p", f"{base}/lxcfs.pid", mnt],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if os.path.exists(f"{mnt}/proc/meminfo"):
                break
            time.sleep(0.05)
        yield f"{mnt}/proc/meminfo"
    finally:
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL, check=False)
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _pidns_lxcfs(base: str) -> Iterator[str]:
    from pidns.view.api import close_view, open_lxcfs

    mnt = f"{base}/pidns"
    os.mkdir(mnt)
    open_lxcfs(mnt)
    try:
        yield f"{mnt}/proc/meminfo"
    finally:
        close_view(mnt)


@contextlib.contextmanager
def _limited_namespace(tasks: int) -> Iterator[int]:
    """`pidns run --memory 2G` of a shell with tasks - 1 sleeping children; the init's host pid."""
    import json
    import sys

    script = f"for i in $(seq {tasks - 1}); do sleep 100000 & done; echo ready; wait"
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pidns.cli.main", "run", "--status-json", f"/dev/fd/{write}",
         "--memory", "2G", "--", "sh", "-c", script],
        pass_fds=(write,), stdout=subprocess.PIPE,
    )  # fmt: skip
    os.close(write)
    try:
        with os.fdopen(read) as status:
            init = int(json.loads(status.readline())["inits"][-1])
        assert proc.stdout is not None
        proc.stdout.readline()  # ready: every child forked
        yield init
    finally:
        proc.terminate()  # forwarded: the namespace ends, its cgroup is removed
        proc.wait(timeout=30)


def _hybrid_ps() -> float:
    from bench.bench_fuse import _inside
    from pidns.view.api import open_view

    with (
        _limited_namespace(1000) as init,
        tempfile.TemporaryDirectory() as tmp,
    ):
        hybrid, kernel = f"{tmp}/hybrid", f"{tmp}/kernel"
        os.mkdir(hybrid)
        os.mkdir(kernel)
        with (
            open_view(f"@{init}", hybrid, backend="kernel", virtualize=True),
            open_view(f"@{init}", kernel, backend="kernel"),
        ):
            mine, peer, ratio = interleaved_ratio(
                run_quiet(_inside(init, hybrid, ["ps", "-ef"])),
                run_quiet(_inside(init, kernel, ["ps", "-ef"])),
                rounds=9,
                warmup=1,
            )
    print(f"  ps -ef, 1,000 tasks: hybrid {mine * 1e3:.0f} ms, kernel {peer * 1e3:.0f} ms")
    return ratio


def run() -> dict[str, float]:
    if os.geteuid() != 0:
        print("  skipped: needs root")
        return {}
    results = {"hybrid_ps_vs_kernel_1k": _hybrid_ps()}
    if shutil.which("lxcfs") is None:
        print("  lxcfs skipped: needs lxcfs")
        return results
    with (
        tempfile.TemporaryDirectory() as base,
        _lxcfs(base) as theirs,
        _pidns_lxcfs(base) as ours,
    ):
        mine, peer, ratio = interleaved_ratio(_loop(ours), _loop(theirs))
    print(f"  pidns lxcfs {mine / 300 * 1e6:.0f} us, LXCFS {peer / 300 * 1e6:.0f} us per read")
    results["lxcfs_meminfo_vs_lxcfs"] = ratio
    return results
