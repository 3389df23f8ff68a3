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


def shift_uptime(host_uptime: bytes, offset_ns: int) -> bytes:
    """/proc/uptime as a reader whose CLOCK_BOOTTIME runs offset_ns ahead of the host's reads it:
    the kernel adds the offset to the first field (truncated to hundredths, as it prints them);
    idle, summed over CPUs, stays the host's (docs/kernel-proc.md §14b)."""
    fields = host_uptime.split()
    if not offset_ns or len(fields) < 2:
        return host_uptime
    up, _, frac = fields[0].partition(b".")
    try:
        centis = int(up) * 100 + int((frac + b"00")[:2])
    except ValueError:
        return host_uptime
    centis = max(0, centis + offset_ns // 10_000_000)
    return b"%d.%02d %s\n" % (centis // 100, centis % 100, fields[1])
