"""Resource virtualisation against LXCFS.

lxcfs_meminfo_vs_lxcfs   open+read+close of proc/meminfo through `pidns lxcfs` / through LXCFS
                         (the same reader, in its own memory cgroup; both render from it)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from bench.timing import interleaved_ratio


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


def run() -> dict[str, float]:
    if shutil.which("lxcfs") is None or os.geteuid() != 0:
        print("  skipped: needs root and lxcfs")
        return {}
    with (
        tempfile.TemporaryDirectory() as base,
        _lxcfs(base) as theirs,
        _pidns_lxcfs(base) as ours,
    ):
        mine, peer, ratio = interleaved_ratio(_loop(ours), _loop(theirs))
    print(f"  pidns lxcfs {mine / 300 * 1e6:.0f} us, LXCFS {peer / 300 * 1e6:.0f} us per read")
    return {"lxcfs_meminfo_vs_lxcfs": ratio}
