"""Resource bounds: one daemon serves views of 100 namespaces at once, each answering, and gives
back every fd when they are unmounted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pidns.view.api import open_view
from tests.soak.support import (
    daemon_figures,
    daemon_pid,
    end_namespace,
    first_child,
    private_daemon,
    wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.fuse]

VIEWS = 100


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[int]]:
    """`count` namespaces, each a sleeping init (util-linux's unshare); yields their host pids."""
    procs = [
        subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "1000"], start_new_session=True)
        for _ in range(count)
    ]
    inits: list[int] = []
    try:
        for proc in procs:
            wait_for(lambda p=proc: first_child(p.pid), 10, "a namespace did not start")  # type: ignore[misc]
            inits.append(first_child(proc.pid))
        yield inits
    finally:
        for proc, init in zip(procs, inits + [0] * (len(procs) - len(inits)), strict=True):
            end_namespace(proc, init or first_child(proc.pid))


def test_hundred_views_answer_and_unmount_cleanly(tmp_path: Path) -> None:
    with private_daemon(tmp_path), namespaces(VIEWS) as inits:
        daemon = daemon_pid()
        fds_before, _ = daemon_figures(daemon)
        handles = []
        try:
            for i, init in enumerate(inits):
                mp = tmp_path / f"v{i}"
                mp.mkdir()
                handles.append(open_view(f"@{init}", str(mp), backend="fuse"))
            assert daemon_pid() == daemon  # one daemon serves them all
            fds_open, _ = daemon_figures(daemon)
            for i, handle in enumerate(handles):
                root = Path(handle.mountpoint)
                assert os.listdir(root).count("1") == 1
                status = (root / "1" / "status").read_bytes()
                assert b"\nPid:\t1\n" in status and b"sleep" in status
                assert os.readlink(root / "1" / "ns" / "pid") == (
                    f"pid:[{os.stat(f'/proc/{inits[i]}/ns/pid').st_ino}]"
                )
            print(f"\ndaemon fds: {fds_before} -> {fds_open} with {VIEWS} views")
            assert fds_open > fds_before  # each view holds its connection and namespace
            # Idle views cost no wake-ups of their own: only daemon-wide threads run (the control
            # loop, the watchdog, the exit watcher woken by the host's forks and exits), whatever
            # the view count; none of the views' own threads.
            before = _wakeups(daemon)
            time.sleep(1)
            after = _wakeups(daemon)
            woken = [tid for tid, count in after.items() if count != before.get(tid)]
            print(
                f"daemon threads woken while idle with {VIEWS} views: {len(woken)} of {len(after)}"
            )
            assert len(woken) <= 4
        finally:
            for handle in handles:
                handle.close()
        # every view's fds are given back (the daemon lingers a moment after its last view)
        wait_for(
            lambda: not Path(f"/proc/{daemon}").exists() or daemon_figures(daemon)[0] <= fds_before,
            10,
            "the daemon kept fds of unmounted views",
        )
        assert not any(p.startswith(str(tmp_path)) for p in _mountpoints())


def _wakeups(pid: int) -> dict[str, int]:
    """Context switches so far of each of the process's threads (each sleep that ended is one)."""
    counts = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
            counts[tid] = sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)
    return counts


def _mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f]
