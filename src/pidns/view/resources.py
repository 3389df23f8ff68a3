"""Whose resources a virtualised file shows: a cgroup, and the namespace whose tasks count.

A view shows the cgroup of its namespace's init; `pidns lxcfs` shows each reader the cgroup of
its own namespace's init (the reader's own cgroup when it shares the daemon's namespace), as
LXCFS decides. Each read takes the cgroup anew from /proc/PID/cgroup (a task may be moved) and
reads only that cgroup's files (its ancestors' for limits): nothing host-wide per container.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass

from pidns.cgroups import cpu, io, memory, psi
from pidns.cgroups.layout import Cgroup, System
from pidns.procfs.parse import stat_start_time, stat_state, stat_state_threads
from pidns.procfs.reader import read_at
from pidns.view.files.cpuinfo import visible_cpus
from pidns.view.files.procstat import TaskCounts
from pidns.view.nsmap import NsMap

_system: System | None = None
_lock = threading.Lock()

# How old the counts of a namespace's running and blocked tasks may be when a file shows them
# (its number of tasks is always the current one). Counting reads every task's stat (about 10 ms
# for 1,000 tasks), and `ps` reads /proc/stat once per run; LXCFS samples its loadavg every 5 s.
SAMPLE_SECONDS = 1.0


def system() -> System:
    """The cgroup mounts as this process sees them, read once."""
    global _system
    with _lock:
        if _system is None:
            _system = System()
        return _system


class Subject:
    """One cgroup and, when known, the namespace whose tasks and age a file shows."""

    def __init__(
        self,
        cgroup: Cgroup,
        init_host: int,
        nsmap: NsMap | None,
        proc_fd: int,
        cpus_from_quota: bool = False,
    ) -> None:
        self.cgroup = cgroup
        self.init_host = init_host
        self.nsmap = nsmap
        self.proc_fd = proc_fd
        self.cpus_from_quota = cpus_from_quota

    @classmethod
    def of(
        cls, pid: int, nsmap: NsMap | None, proc_fd: int, cpus_from_quota: bool = False
    ) -> Subject:
        """The subject of the process pid (a namespace's init, or a reader); OSError when gone."""
        cgroup = system().of_text(read_at(proc_fd, f"{pid}/cgroup"))
        return cls(cgroup, pid, nsmap, proc_fd, cpus_from_quota)

    def host(self, name: str) -> bytes:
        return read_at(self.proc_fd, name)

    def memory(self) -> memory.Memory | None:
        return memory.memory(self.cgroup)

    def cpus(self) -> tuple[int, ...] | None:
        """The host CPUs shown, in order; None without a cpuset (the host's then)."""
        cpuset = cpu.cpuset(self.cgroup)
        if cpuset is None:
            return None
        quota = cpu.quota(self.cgroup) if self.cpus_from_quota else None
        return visible_cpus(cpuset, quota, self.cpus_from_quota)

    def cpu_time(self) -> cpu.CpuTime | None:
        return cpu.cpu_time(self.cgroup)

    def disk_io(self) -> dict[io.Device, io.DiskIo] | None:
        return io.disk_io(self.cgroup)

    def pressure(self, resource: str) -> bytes | None:
        return psi.pressure(self.cgroup, resource)

    def age(self) -> float | None:
        """Seconds since the init (the subject's process) started, None when it is gone."""
        try:
            start = stat_start_time(read_at(self.proc_fd, f"{self.init_host}/stat"))
        except (OSError, ValueError):
            return None
        boot = time_boottime()
        return max(0.0, boot - start / os.sysconf("SC_CLK_TCK"))

    def counts(self) -> tuple[int, int]:
        """(running, total) thread-group leaders of the namespace, for loadavg."""
        if self.nsmap is None:
            return 0, 0
        return task_states(self.nsmap).processes_running, len(self.nsmap.leaders())

    def tasks(self) -> TaskCounts | None:
        """The namespace's threads in R and D, and the pids it allocated; None outside one."""
        if self.nsmap is None:
            return None
        states = task_states(self.nsmap)
        return TaskCounts(self.nsmap.last_pid(), states.threads_running, states.threads_blocked)


@dataclass(frozen=True)
class TaskStates:
    """How many of a namespace's tasks run or wait on I/O, from one pass over them."""

    processes_running: int  # thread-group leaders in R
    threads_running: int
    threads_blocked: int


_samples: weakref.WeakKeyDictionary[NsMap, tuple[float, TaskStates]] = weakref.WeakKeyDictionary()


def task_states(nsmap: NsMap) -> TaskStates:
    """The namespace's tasks by state, counted at most SAMPLE_SECONDS ago."""
    now = time.monotonic()
    with _lock:
        sample = _samples.get(nsmap)
    if sample is not None and now - sample[0] < SAMPLE_SECONDS:
        return sample[1]
    states = _count(nsmap)
    with _lock:
        _samples[nsmap] = (now, states)
    return states


def _count(nsmap: NsMap) -> TaskStates:
    """One read of each leader's stat; a thread's only where the process has more than one (or
    its leader has exited: a zombie leader's threads may still run)."""
    proc_fd = nsmap.proc_fd
    running = threads_running = threads_blocked = 0
    for _pid, host in nsmap.leaders():
        try:
            state, threads = stat_state_threads(read_at(proc_fd, f"{host}/stat"))
        except (OSError, ValueError):
            continue
        running += state == "R"
        if threads == 1 and state != "Z":
            threads_running += state == "R"
            threads_blocked += state == "D"
            continue
        try:
            tids = os.listdir(f"/proc/{host}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                thread_state = stat_state(read_at(proc_fd, f"{host}/task/{tid}/stat"))
            except (OSError, ValueError):
                continue
            threads_running += thread_state == "R"
            threads_blocked += thread_state == "D"
    return TaskStates(running, threads_running, threads_blocked)


def time_boottime() -> float:
    import time

    return time.clock_gettime(time.CLOCK_BOOTTIME)
