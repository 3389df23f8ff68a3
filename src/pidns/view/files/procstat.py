"""/proc/stat of a cgroup (--virtualize).

cpu lines: only the CPUs of the cgroup's cpuset, under their host numbers (renumbered from 0 with
the quota option, as LXCFS does). With per-CPU accounting (v1 cpuacct.usage_all) each line is
the cgroup's user and system time on that CPU in USER_HZ ticks, every other field 0, and idle the
host's idle plus what other cgroups used there (LXCFS's rule: time the cgroup did not use is
idle to it). v2 keeps only totals: the cgroup's user and system time are shared evenly among its
CPUs. Without CPU accounting the host's lines of those CPUs. The `cpu` line sums the shown ones.

processes, procs_running, procs_blocked: the namespace's own (pids it allocated, its tasks in R
and D), where LXCFS shows the host's. Everything else is the host's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pidns.cgroups.cpu import CpuTime

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TaskCounts:
    forks: int  # pids allocated in the namespace (its last pid): forks since its birth
    running: int
    blocked: int


def _fields(line: bytes) -> list[int]:
    return [int(w) for w in line.split()[1:]]


def render_proc_stat(
    host_stat: bytes,
    cpus: tuple[int, ...] | None,
    time: CpuTime | None,
    ticks_per_second: int,
    tasks: TaskCounts | None,
    renumber: bool = False,
) -> bytes:
    lines = host_stat.splitlines(keepends=True)
    per_cpu: dict[int, list[int]] = {}
    rest: list[bytes] = []
    for line in lines:
        if line.startswith(b"cpu") and line[3:4].isdigit():
            name = line.split(None, 1)[0]
            per_cpu[int(name[3:])] = _fields(line)
        elif not line.startswith(b"cpu "):
            rest.append(line)
    shown = [c for c in (cpus if cpus is not None else sorted(per_cpu)) if c in per_cpu]
    rendered: list[tuple[int, list[int]]] = []
    for index, cpu in enumerate(shown):
        host = per_cpu[cpu] + [0] * (10 - len(per_cpu[cpu]))
        if time is None:
            values = host
        else:
            if time.per_cpu is not None:
                user_ns, system_ns = time.per_cpu.get(cpu, (0, 0))
            else:
                user_ns, system_ns = time.user_ns // len(shown), time.system_ns // len(shown)
            user = user_ns * ticks_per_second // _NS
            system = system_ns * ticks_per_second // _NS
            idle = host[3]
            all_used = sum(host) - host[3]
            if all_used >= user + system:
                idle += all_used - (user + system)
            values = [user, 0, system, idle, 0, 0, 0, 0, 0, 0]
        rendered.append((index if renumber else cpu, values))
    total = [sum(v[i] for _, v in rendered) for i in range(10)]
    out = [b"cpu  " + b" ".join(b"%d" % v for v in total) + b"\n"]
    out += [b"cpu%d " % n + b" ".join(b"%d" % v for v in values) + b"\n" for n, values in rendered]
    for line in rest:
        if tasks is not None:
            key = line.split(None, 1)[0] if line.strip() else b""
            if key == b"processes":
                line = b"processes %d\n" % tasks.forks
            elif key == b"procs_running":
                line = b"procs_running %d\n" % tasks.running
            elif key == b"procs_blocked":
                line = b"procs_blocked %d\n" % tasks.blocked
        out.append(line)
    return b"".join(out)


def boottime_offset(timens_offsets: bytes) -> int:
    """Whole seconds a time namespace adds to CLOCK_BOOTTIME (/proc/PID/timens_offsets); 0 when
    the file says nothing (no time namespace, or a kernel without them)."""
    return boottime_offset_ns(timens_offsets) // 1_000_000_000


def boottime_offset_ns(timens_offsets: bytes) -> int:
    """The same offset in nanoseconds ("boottime SECONDS NANOSECONDS")."""
    for line in timens_offsets.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == b"boottime":
            try:
                return int(words[1]) * 1_000_000_000 + int(words[2])
            except ValueError:
                return 0
    return 0


def shift_btime(stat: bytes, offset: int) -> bytes:
    """/proc/stat as a reader whose CLOCK_BOOTTIME runs `offset` seconds ahead of the host's
    sees it: the kernel moves btime back by the offset (a time namespace born at T, with offset
    -T, has its boot at T)."""
    if not offset:
        return stat
    out = []
    for line in stat.splitlines(keepends=True):
        if line.startswith(b"btime "):
            words = line.split()
            if len(words) == 2 and words[1].isdigit():
                line = b"btime %d\n" % (int(words[1]) - offset)
        out.append(line)
    return b"".join(out)
