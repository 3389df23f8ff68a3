"""/proc/uptime of a namespace (--virtualize): seconds since its init started, and idle time as
the kernel counts it (summed over CPUs): the namespace's CPUs times its age less the CPU time its
cgroup used. LXCFS counts one CPU (age less busy time), which agrees for a single-CPU cgroup."""

from __future__ import annotations


def render_uptime(host_uptime: bytes, age: float, busy: float | None, ncpus: int) -> bytes:
    fields = host_uptime.split()
    if len(fields) < 2:
        return host_uptime
    age = max(0.0, age)
    idle = float(fields[1]) if busy is None else max(0.0, age * max(1, ncpus) - busy)
    return b"%.2f %.2f\n" % (age, idle)
