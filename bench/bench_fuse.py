"""The FUSE view against its peers: LXCFS (a C FUSE proc server) and the kernel's procfs.

fuse_status_vs_lxcfs   open+read+close of /<pid>/status through the view / LXCFS's /proc/loadavg
fuse_status_vs_kernel  the same / the kernel view's /<pid>/status
fuse_ps_vs_kernel_1k   `ps -ef` inside a namespace of 1,000 tasks, view / kernel view at /proc
  ..._pinned           each of the three above with the client and every server thread (the view
                       daemon's, LXCFS's) on one CPU: no wake-up crosses CPUs (on these VMs one
                       that wakes the other, halted CPU costs more than the daemon's work)
fuse_ps_requests_per_row  requests the daemon reads per row of a warm `ps -ef` through the view
fuse_ps_waits_per_row     of those, the ones `ps` waits for (not RELEASE, FORGET, INTERRUPT)
exit_flush_p99_ms      task exit -> its /<pid> gone from the view, p99 over 1,000 exits (ms)
daemon_rss_mb_1k       the daemon's RSS after a full `ps -ef` of 1,000 tasks (MB)
daemon_rss_mb_10k      a fresh daemon's RSS after a full `ps -ef` through a view of 10,000 tasks (MB)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.tasks import live_tasks
from bench.timing import interleaved_ratio, run_quiet


def _open_read(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 65536)
    os.close(fd)


def _loop(path: str, n: int = 300) -> Callable[[], object]:
    def call() -> None:
        for _ in range(n):
            _open_read(path)

    return call


@contextlib.contextmanager
def _namespace(tasks: int) -> Iterator[int]:
    """A namespace whose init is a shell with `tasks - 1` sleeping children; yields the init's host pid."""
    script = f"for i in $(seq {tasks - 1}); do sleep 100000 & done; wait"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script])
    try:
        init = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                init = int(kids[0])
                n = len(Path(f"/proc/{init}/task/{init}/children").read_text().split())
                if n >= tasks - 1:
                    break
            time.sleep(0.05)
        yield init
    finally:
        with contextlib.suppress(OSError, IndexError):
            os.kill(
                int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0]), 9
            )
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _views(init: int) -> Iterator[tuple[str, str]]:
    from pidns.view.api import open_view

    with tempfile.TemporaryDirectory() as tmp:
        fuse, kernel = f"{tmp}/fuse", f"{tmp}/kernel"
        os.mkdir(fuse)
        os.mkdir(kernel)
        with (
            open_view(f"@{init}", fuse, backend="fuse"),
            open_view(f"@{init}", kernel, backend="kernel"),
        ):
            yield fuse, kernel


@contextlib.contextmanager
def _lxcfs() -> Iterator[str | None]:
    if shutil.which("lxcfs") is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["lxcfs", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(200):
                if os.path.exists(f"{tmp}/proc/loadavg"):
                    break
                time.sleep(0.05)
            yield f"{tmp}/proc/loadavg"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            subprocess.run(["umount", "-l", tmp], stderr=subprocess.DEVNULL, check=False)


def _inside(init: int | None, proc_dir: str, argv: list[str]) -> list[str]:
    """argv with proc_dir at /proc in a private mount namespace, in init's pid namespace if given."""
    enter = ["nsenter", f"--pid=/proc/{init}/ns/pid", "--"] if init is not None else []
    return [
        *enter,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /proc && exec "$@"',
        proc_dir,
        *argv,
    ]


@contextlib.contextmanager
def _pinned(servers: list[int], cpu: int = 0) -> Iterator[None]:
    """This process (and so the clients it starts) and every thread of the servers on one CPU."""
    every = os.sched_getaffinity(0)

    def pin(cpus: set[int]) -> None:
        os.sched_setaffinity(0, cpus)
        for pid in servers:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    os.sched_setaffinity(int(tid), cpus)

    pin({cpu})
    try:
        yield
    finally:
        pin(every)


_ASYNC = ("RELEASE", "RELEASEDIR", "FORGET", "BATCH_FORGET", "INTERRUPT")


def _requests(fuse: str) -> dict[str, int]:
    from pidns.view.api import list_views

    for view in list_views():
        if view.get("mountpoint") == fuse:
            requests: dict[str, int] = view.get("fuse", {}).get("requests", {})
            return requests
    return {}


def _per_row(init: int, fuse: str) -> tuple[float, float]:
    """(requests, waited-for requests) per row of one warm `ps -ef` through the view."""
    before = _requests(fuse)
    out = subprocess.run(
        _inside(init, fuse, ["ps", "-ef"]), capture_output=True, check=True, text=True
    ).stdout
    time.sleep(0.5)  # the RELEASEs of the last files arrive after ps has exited
    after = _requests(fuse)
    rows = max(1, len(out.splitlines()) - 1)
    spent = {op: n - before.get(op, 0) for op, n in after.items()}
    total = sum(spent.values())
    waited = sum(n for op, n in spent.items() if op not in _ASYNC)
    return total / rows, waited / rows


def _lxcfs_pid(loadavg: str) -> int | None:
    mountpoint = str(Path(loadavg).parent.parent)
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"lxcfs") and mountpoint.encode() in argv:
                return int(pid)
    return None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _exit_flush(init: int, fuse: str, n: int) -> list[float]:
    """Kill a child of the namespace's init and time until its entry is gone from the view."""
    from pidns.kernel import nsfs

    fd = nsfs.open_ns(f"/proc/{init}/ns/pid")
    delays = []
    try:
        # One child is spared: the init's `wait` returns, and the namespace dies, when the last exits.
        kids = [int(k) for k in Path(f"/proc/{init}/task/{init}/children").read_text().split()][
            :-1
        ][:n]
        for host in kids:
            ns_pid = nsfs.pid_in_pidns(fd, host)
            path = f"{fuse}/{ns_pid}"
            os.stat(path)  # cached in the kernel, as a client's earlier walk leaves it
            start = time.perf_counter()
            os.kill(host, signal.SIGKILL)
            while os.path.exists(path):
                pass
            delays.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
    return delays


def _daemon_gone(timeout: float = 30) -> None:
    """Wait until this user's view daemon has left (it does once it serves no view)."""
    from pidns.view import control, state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            control.request(str(state.socket_path()), {"op": "ping"}, timeout=1)
        except OSError:
            return
        time.sleep(0.1)


def _rss_10k() -> float:
    """The host's namespace with 10,000 more tasks, viewed whole: `ps -ef` (in the host's pid
    namespace, the view at /proc) touches every task's directory and files."""
    from pidns.view.api import open_view

    _daemon_gone()
    with live_tasks(10_000), tempfile.TemporaryDirectory() as tmp:
        view = f"{tmp}/fuse"
        os.mkdir(view)
        with open_view(f"@{os.getpid()}", view, backend="fuse") as handle:
            assert handle.daemon_pid is not None
            run_quiet(_inside(None, view, ["ps", "-ef"]))()
            return _rss_mb(handle.daemon_pid)


def _ratios(
    results: dict[str, float], suffix: str, init: int, fuse: str, kernel: str, pid: int,
    loadavg: str | None,
) -> None:  # fmt: skip
    status_fuse = _loop(f"{fuse}/{pid}/status")
    _, _, results[f"fuse_status_vs_kernel{suffix}"] = interleaved_ratio(
        status_fuse, _loop(f"{kernel}/{pid}/status")
    )
    if loadavg is not None:
        _, _, results[f"fuse_status_vs_lxcfs{suffix}"] = interleaved_ratio(
            status_fuse, _loop(loadavg)
        )
    _, _, results[f"fuse_ps_vs_kernel_1k{suffix}"] = interleaved_ratio(
        run_quiet(_inside(init, fuse, ["ps", "-ef"])),
        run_quiet(_inside(init, kernel, ["ps", "-ef"])),
        rounds=7,
        warmup=1,
    )


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    with _namespace(1002) as init, _views(init) as (fuse, kernel):
        from pidns.view import control, state

        daemon = int(control.request(str(state.socket_path()), {"op": "ping"})["pid"])
        pid = sorted(int(n) for n in os.listdir(kernel) if n.isdigit())[1]
        with _lxcfs() as loadavg:
            _ratios(results, "", init, fuse, kernel, pid, loadavg)
            lxcfs = _lxcfs_pid(loadavg) if loadavg is not None else None
            with _pinned([daemon] + ([lxcfs] if lxcfs else [])):
                _ratios(results, "_pinned", init, fuse, kernel, pid, loadavg)
        per_row, waits = _per_row(init, fuse)
        results["fuse_ps_requests_per_row"] = per_row
        results["fuse_ps_waits_per_row"] = waits
        results["daemon_rss_mb_1k"] = _rss_mb(daemon)
        delays = _exit_flush(init, fuse, 1000)
        results["exit_flush_p99_ms"] = (
            statistics.quantiles(delays, n=100)[98] if len(delays) > 2 else float("nan")
        )
        results["exit_flush_median_ms"] = statistics.median(delays) if delays else float("nan")
    results["daemon_rss_mb_10k"] = _rss_10k()
    return results
