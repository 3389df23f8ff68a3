"""/proc/cpuinfo and sys/devices/system/cpu/online of a cgroup (--virtualize): only the CPUs of
its cpuset, numbered from 0 in order (LXCFS's rule), and with the quota option only as many as
the CPU quota lets run at once (ceil(quota / period), lxc/lxcfs#600), never more than the
cpuset has."""

from __future__ import annotations

import re

from pidns.cgroups.cpu import Quota, format_cpu_list

_PROCESSOR = re.compile(rb"^processor\s*:\s*(\d+)\s*$")


def visible_cpus(cpuset: tuple[int, ...], quota: Quota | None, from_quota: bool) -> tuple[int, ...]:
    """The host CPUs a cgroup's files show, in order."""
    if from_quota and quota is not None:
        return cpuset[: max(1, quota.whole_cpus)]
    return cpuset


def render_cpuinfo(host_cpuinfo: bytes, cpus: tuple[int, ...] | None) -> bytes:
    """The host's cpuinfo with only the blocks of `cpus`, renumbered 0, 1, …"""
    if cpus is None:
        return host_cpuinfo
    keep = set(cpus)
    out: list[bytes] = []
    printing = True
    shown = 0
    for line in host_cpuinfo.splitlines(keepends=True):
        m = _PROCESSOR.match(line.rstrip(b"\n"))
        if m is not None:
            printing = int(m[1]) in keep
            if printing:
                out.append(b"processor\t: %d\n" % shown)
                shown += 1
            continue
        if printing:
            out.append(line)
    return b"".join(out)


def render_online(host_online: bytes, cpus: tuple[int, ...] | None, renumbered: bool) -> bytes:
    """sys/devices/system/cpu/online: the cpuset (LXCFS prints it as it is), or 0-(N-1) when
    the CPUs are renumbered by the quota option."""
    if cpus is None:
        return host_online
    if renumbered:
        return b"%s\n" % format_cpu_list(list(range(len(cpus)))).encode()
    return b"%s\n" % format_cpu_list(cpus).encode()
