"""What the kernel says now: cgroups of live tasks, and the check every recorded pid must pass.

A pid from a state file, a runtime's CLI or a machine record is a claim. It resolves only when,
read through one pinned /proc/PID directory (so every answer is about the same process):
  - the process started no later than the file recording it was written (a reused pid started
    after), and
  - its cgroup is the container's (the id in a runtime's layout, or the cgroupsPath its spec
    asked for), and
  - its ns/pid link gives the namespace inode that is returned.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pidns.containers.cgroup import CgroupMatch, match
from pidns.kernel import nsfs
from pidns.procfs.parse import parse_stat
from pidns.procfs.reader import read_at

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ESRCH)
SLACK = 2.0  # seconds: btime is whole seconds, start times are clock ticks


def boot_time(proc: str = "/proc") -> float:
    with open(f"{proc}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError(errno.ENOENT, "no btime in stat")


_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Verified:
    pid: int
    ns: int
    start_time: int  # clock ticks after boot


def verify(
    proc: str, pid: int, written: float | None, in_container: Callable[[bytes], bool]
) -> Verified | str:
    """The namespace of `pid` when it is still the recorded container's process, else why not."""
    try:
        dir_fd = os.open(f"{proc}/{pid}", _DIR)
    except OSError as err:
        if err.errno in _GONE:
            return f"its recorded pid {pid} is gone"
        return f"pid {pid}: {err.strerror}"
    try:
        try:
            stat = parse_stat(read_at(dir_fd, "stat"))
            if written is not None:
                started = boot_time(proc) + stat.start_time / _TICKS
                if started > written + SLACK:
                    return f"its recorded pid {pid} now belongs to a process started later"
            if stat.state == "Z":
                return f"its recorded pid {pid} has exited"
            if not in_container(read_at(dir_fd, "cgroup")):
                return f"its recorded pid {pid} is not in the container's cgroup"
            ino = os.stat("ns/pid", dir_fd=dir_fd).st_ino
        except OSError as err:
            if err.errno in _GONE:
                return f"its recorded pid {pid} is gone"
            if err.errno == errno.EACCES:
                return f"pid {pid}'s namespace is not readable (needs ptrace access: run as root)"
            raise
        except ValueError:
            return f"its recorded pid {pid} is gone"
        return Verified(pid, ino, stat.start_time)
    finally:
        os.close(dir_fd)


@dataclass(slots=True)
class LiveContainer:
    """A container as the cgroups of its live tasks show it."""

    match: CgroupMatch
    pids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Scan:
    """One pass over /proc/*/cgroup. The namespace of a container is found only when asked."""

    proc: str
    containers: dict[tuple[str, str], LiveContainer]
    tasks: int  # how many tasks' cgroups were read
    cgroups: dict[int, bytes]  # pid -> the bytes of its cgroup file

    def namespace_of(self, live: LiveContainer) -> int | str:
        """The container's PID namespace: the innermost one holding all its tasks (a nested
        `pidns run` inside a container does not move the container), or why it is unknown."""
        return common_namespace(self.proc, live.pids)


def scan(proc: str = "/proc") -> Scan:
    found: dict[tuple[str, str], LiveContainer] = {}
    cgroups: dict[int, bytes] = {}
    try:
        names = os.listdir(proc)
    except OSError as err:
        raise OSError(err.errno, f"{proc}: {err.strerror}") from None
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/cgroup", "rb") as f:
                data = f.read()
        except OSError:
            continue
        pid = int(name)
        cgroups[pid] = data
        m = match(data)
        if m is None:
            continue
        key = (m.runtime, m.id)
        live = found.get(key)
        if live is None:
            live = found[key] = LiveContainer(m)
        live.pids.append(pid)
    return Scan(proc, found, len(cgroups), cgroups)


def common_namespace(proc: str, pids: list[int]) -> int | str:
    """The innermost PID namespace that holds every one of `pids` (inode), or why not known."""
    first: dict[int, int] = {}  # namespace inode -> a pid in it
    denied = 0
    for pid in pids:
        try:
            ino = os.stat(f"{proc}/{pid}/ns/pid").st_ino
        except OSError as err:
            if err.errno == errno.EACCES:
                denied += 1
            continue
        first.setdefault(ino, pid)
    if not first:
        if denied:
            return "its tasks' namespaces are not readable (needs ptrace access: run as root)"
        return "it has no live task"
    if len(first) == 1:
        return next(iter(first))
    chains = {ino: _ancestry(f"{proc}/{pid}/ns/pid") for ino, pid in first.items()}
    chains = {ino: c for ino, c in chains.items() if c and c[0] == ino}  # not a reused pid's
    lists = [c for c in chains.values() if c]
    common = set(lists[0]).intersection(*lists[1:]) if lists else set()
    # The chains run from the namespace upward: the first common entry is the innermost.
    for ino in lists[0]:
        if ino in common:
            return ino
    return "its tasks share no namespace the caller can see"


def _ancestry(path: str) -> list[int]:
    """Inodes from the namespace of an nsfs path up to the highest the caller may see."""
    try:
        fd = nsfs.open_ns(path)
    except OSError:
        return []
    chain = []
    try:
        while True:
            chain.append(os.fstat(fd).st_ino)
            try:
                parent = nsfs.parent(fd)
            except OSError:
                break
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)
    return chain
