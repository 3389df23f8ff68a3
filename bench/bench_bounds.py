"""Resource bounds of the view daemon: many views, many tasks.

daemon_rss_mb_1_view       the daemon's RSS serving one view (MB)
daemon_rss_mb_100_views    the same daemon's RSS serving views of 100 namespaces (MB)
daemon_fds_per_view        fds the daemon holds per added view
status_read_100_vs_1_view  open+read+close of /1/status in one view with 100 views mounted
                           / the same with one view mounted (medians): flat is 1.0
daemon_rss_mb_10k_tasks    the daemon's RSS after a walk of every /N/stat of a 10,000-task view
status_read_10k_vs_10_tasks  /1/status in a view of 10,000 tasks / in a view of 10 tasks
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.tasks import live_tasks
from bench.timing import interleaved_ratio


def _figures(pid: int) -> tuple[int, float]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return fds, int(line.split()[1]) / 1024
    return fds, 0.0


def _read_status(path: str, n: int = 400) -> float:
    """Median seconds of one open+read+close of path, over n."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 65536)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _child(pid: int) -> int:
    for _ in range(500):
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise RuntimeError("a namespace did not start")


@contextlib.contextmanager
def _namespaces(count: int, script: str = "sleep 100000") -> Iterator[list[int]]:
    procs = [
        # unshare complains on stderr when its namespace is torn down under it: not ours to report
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "sh", "-c", script],
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    inits: list[int] = []
    try:
        inits = [_child(p.pid) for p in procs]
        yield inits
    finally:
        for init in inits:
            with contextlib.suppress(OSError):
                os.kill(init, 9)  # the namespace dies with its init
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()


@contextlib.contextmanager
def _private_daemon() -> Iterator[Path]:
    """Views served by a daemon of the benchmark's own (its own state directory)."""
    old = os.environ.get("PIDNS_STATE_DIR")
    with tempfile.TemporaryDirectory(prefix="pidns-bench-") as tmp:
        os.environ["PIDNS_STATE_DIR"] = f"{tmp}/state"
        try:
            yield Path(tmp)
        finally:
            if old is None:
                del os.environ["PIDNS_STATE_DIR"]
            else:
                os.environ["PIDNS_STATE_DIR"] = old


def run() -> dict[str, float]:
    from pidns.view.api import ensure_daemon, open_view

    out: dict[str, float] = {}
    with _private_daemon() as tmp, _namespaces(100) as inits:
        handles = []
        try:
            for i, init in enumerate(inits):
                mp = tmp / f"v{i}"
                mp.mkdir()
                handles.append(open_view(f"@{init}", str(mp), backend="fuse"))
                if i == 0:
                    daemon = ensure_daemon()
                    status = f"{mp}/1/status"
                    _read_status(status, 100)  # warm
                    one = _read_status(status)
                    fds_1, out["daemon_rss_mb_1_view"] = _figures(daemon)
            for handle in handles:  # every view used once
                _read_status(f"{handle.mountpoint}/1/status", 5)
            hundred = _read_status(status)
            fds_100, out["daemon_rss_mb_100_views"] = _figures(daemon)
            out["daemon_fds_per_view"] = (fds_100 - fds_1) / (len(handles) - 1)
            out["status_read_100_vs_1_view"] = hundred / one
        finally:
            for handle in handles:
                with contextlib.suppress(Exception):
                    handle.close()

    with (
        _private_daemon() as tmp,
        live_tasks(10_000) as spawner,
        _namespaces(1, "sleep 100000 & sleep 100000 & sleep 100000 & wait") as small,
    ):
        (tmp / "big").mkdir()
        (tmp / "small").mkdir()
        with (
            open_view(f"@{spawner}", str(tmp / "big"), backend="fuse"),
            open_view(f"@{small[0]}", str(tmp / "small"), backend="fuse"),
        ):
            daemon = ensure_daemon()
            big = f"{tmp}/big/1/status"
            for name in os.listdir(tmp / "big"):  # every task looked up and read once
                if name.isdigit():
                    with contextlib.suppress(OSError):
                        (tmp / "big" / name / "stat").read_bytes()
            _fds, out["daemon_rss_mb_10k_tasks"] = _figures(daemon)
            _a, _b, out["status_read_10k_vs_10_tasks"] = interleaved_ratio(
                lambda: _read_status(big, 200), lambda: _read_status(f"{tmp}/small/1/status", 200)
            )
    return out
