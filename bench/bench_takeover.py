"""A daemon restart nobody notices, timed: SIGKILL of the view daemon -> the first request answered.

takeover_p50_s, takeover_p99_s    over 20 kills, each once the holder's spare successor has loaded
takeover_cold_p50_s, ..._p99_s    the same kills after the spare was ended: a successor started
                                  at the kill, as before spares (alternating with the above)
..._loaded                        each of the four with two busy processes per CPU beside it

Root only (a FUSE view of another namespace); a state directory of its own, so no other view
daemon is touched.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KILLS = 20  # of each kind


def _wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench_takeover: {what}")
        time.sleep(0.02)


def _daemon() -> int:
    from pidns.view import control, state

    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(control.request(str(state.socket_path()), {"op": "ping"}, timeout=1)["pid"])
    return 0


def _holder() -> dict[str, Any]:
    from pidns.view import holding

    return holding.status() or {}


@contextlib.contextmanager
def _view() -> Iterator[Path]:
    """A FUSE view of a small namespace, served by a daemon of a state directory of its own."""
    from pidns.view.api import open_view

    old = os.environ.get("PIDNS_STATE_DIR")
    with tempfile.TemporaryDirectory(prefix="pidns-bench-") as tmp:
        os.environ["PIDNS_STATE_DIR"] = f"{tmp}/state"
        ns = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", "sleep 1000 & wait"],
            start_new_session=True,
        )
        try:
            children = Path(f"/proc/{ns.pid}/task/{ns.pid}/children")
            _wait(lambda: children.read_text().split(), 10, "the namespace did not start")
            init = int(children.read_text().split()[0])
            os.mkdir(f"{tmp}/view")
            with open_view(f"@{init}", f"{tmp}/view", backend="fuse"):
                yield Path(f"{tmp}/view")
            holder = int(_holder().get("holder") or 0)
            if holder:  # not 0: that would signal this process's own group
                with contextlib.suppress(OSError):
                    os.kill(holder, signal.SIGTERM)
        finally:
            os.killpg(ns.pid, signal.SIGKILL)
            ns.wait()
            subprocess.run(["umount", "-l", f"{tmp}/view"], capture_output=True, check=False)
            if old is None:
                del os.environ["PIDNS_STATE_DIR"]
            else:
                os.environ["PIDNS_STATE_DIR"] = old


@contextlib.contextmanager
def _busy(per_cpu: int) -> Iterator[None]:
    """per_cpu processes per CPU that only burn it."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(per_cpu * len(os.sched_getaffinity(0)))
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def _kill_once(view: Path, spare: bool, rng: random.Random) -> float:
    """One SIGKILL, with the holder's spare loaded or ended; s to the first answer after it."""
    if spare:
        _wait(lambda: _holder().get("spare_loaded"), 60, "the holder keeps no spare")
    else:
        _wait(lambda: _holder().get("spare"), 60, "the holder keeps no spare")
        pid = int(_holder()["spare"])
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _holder().get("spare"), 10, f"the spare {pid} was not reaped")
    old = _daemon()
    time.sleep(rng.uniform(0.1, 0.3))
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    (view / "1" / "status").read_bytes()
    taken = time.monotonic() - killed
    _wait(lambda: _daemon() not in (0, old), 30, f"no daemon took over from {old}")
    return taken


def _figures(results: dict[str, float], suffix: str) -> None:
    rng = random.Random(7)
    times: dict[bool, list[float]] = {True: [], False: []}
    with _view() as view:
        for i in range(2 * KILLS):
            spare = i % 2 == 0
            times[spare].append(_kill_once(view, spare, rng))
    for spare, label in ((True, ""), (False, "_cold")):
        ranked = sorted(times[spare])
        results[f"takeover{label}_p50_s{suffix}"] = statistics.median(ranked)
        results[f"takeover{label}_p99_s{suffix}"] = ranked[-1]  # of 20: the slowest
        print(
            f"  SIGKILL -> first answer, {'spare loaded' if spare else 'no spare'}"
            f"{', 2 busy processes per CPU' if suffix else ''}: "
            f"p50 {statistics.median(ranked):.3f} s, p99 {ranked[-1]:.3f} s"
        )


def run() -> dict[str, float]:
    if os.geteuid() != 0:
        print("  (skipped: a view of another namespace needs root)")
        return {}
    results: dict[str, float] = {}
    _figures(results, "")
    with _busy(2):
        _figures(results, "_loaded")
    return results
