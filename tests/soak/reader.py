"""One soak reader: walks a view of a namespace until WORKDIR/stop exists, then prints a JSON
report of what it read and every answer that breaks the rules.

    reader.py VIEW NS_INIT_HOST_PID SEED

Allowed failures are ENOENT and ESRCH (a task that exited meanwhile). A task's identity is checked
whenever it provably stayed the same task across the read: its host pid is pinned by a pidfd
before the view is read and still translates to the same number, alive, afterwards. Then the
view's stat must name the namespace's pid and carry the host's start time for that task.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

from pidns.kernel.nsfs import NS_GET_PID_FROM_PIDNS

ALLOWED = (errno.ENOENT, errno.ESRCH)
FILES = ("stat", "status", "cmdline", "environ", "maps", "io", "wchan", "statm", "comm")
LINKS = ("exe", "cwd", "root")
DIRS = ("task", "fd", "ns")


class Report:
    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.allowed: Counter[str] = Counter()
        self.bad: list[str] = []
        self.checked = 0  # identity checks made
        self.mismatches: list[str] = []

    def failed(self, what: str, err: OSError) -> None:
        if err.errno in ALLOWED:
            self.allowed[errno.errorcode[err.errno]] += 1
        elif len(self.bad) < 50:
            self.bad.append(f"{what}: {err!r}")
        else:
            self.bad[-1] = f"... and more; last {what}: {err!r}"


def host_pid(ns_fd: int, pid: int) -> int:
    try:
        return int(fcntl.ioctl(ns_fd, NS_GET_PID_FROM_PIDNS, pid))
    except OSError:
        return 0


def alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    return True


def start_time(stat: bytes) -> tuple[int, int]:
    """(pid, start time) from a stat line."""
    tail = stat[stat.rfind(b")") + 2 :].split()
    return int(stat.split(b" ", 1)[0]), int(tail[19])


def read_task(view: Path, name: str, report: Report) -> bytes | None:
    """Everything a tool reads of /N; the stat read first."""
    base = view / name
    stat = None
    for file in FILES:
        report.ops[file] += 1
        try:
            data = (base / file).read_bytes()
        except OSError as err:
            report.failed(f"{name}/{file}", err)
            continue
        if file == "stat":
            stat = data
    for link in LINKS:
        report.ops[link] += 1
        try:
            os.readlink(base / link)
        except OSError as err:
            report.failed(f"{name}/{link}", err)
    for d in DIRS:
        report.ops[d] += 1
        try:
            entries = os.listdir(base / d)
        except OSError as err:
            report.failed(f"{name}/{d}", err)
            continue
        if d == "task":
            for tid in entries[:3]:
                report.ops["task/stat"] += 1
                try:
                    (base / "task" / tid / "stat").read_bytes()
                except OSError as err:
                    report.failed(f"{name}/task/{tid}/stat", err)
    return stat


def check(view: Path, ns_fd: int, name: str, report: Report) -> None:
    pid = int(name)
    host = host_pid(ns_fd, pid)
    pidfd = -1
    if host:
        try:
            pidfd = os.pidfd_open(host)
        except OSError:
            pidfd = -1
    try:
        expected = None
        if pidfd >= 0 and host_pid(ns_fd, pid) == host:  # pinned: host is this task
            try:
                expected = start_time(Path(f"/proc/{host}/stat").read_bytes())[1]
            except OSError:
                expected = None
        stat = read_task(view, name, report)
        if expected is None or stat is None or not alive(pidfd):
            return
        report.checked += 1
        seen = start_time(stat)
        if seen != (pid, expected):
            report.mismatches.append(f"/{name}: view stat says {seen}, task is {(pid, expected)}")
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def main() -> None:
    view, init, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    stop = Path(sys.argv[4]) / "stop"
    rng = random.Random(seed)
    ns_fd = os.open(f"/proc/{init}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    report = Report()
    rounds = 0
    while not stop.exists():
        rounds += 1
        report.ops["listdir"] += 1
        try:
            names = [n for n in os.listdir(view) if n.isdigit()]
        except OSError as err:
            report.failed("/", err)
            continue
        sample = rng.sample(names, min(len(names), 25))
        top = max((int(n) for n in names), default=1)
        sample += [str(rng.randint(1, top + 50)) for _ in range(5)]  # some vanished ones
        for name in sample:
            check(view, ns_fd, name, report)
    json.dump(
        {
            "rounds": rounds,
            "ops": sum(report.ops.values()),
            "allowed": dict(report.allowed),
            "bad": report.bad,
            "checked": report.checked,
            "mismatches": report.mismatches,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
