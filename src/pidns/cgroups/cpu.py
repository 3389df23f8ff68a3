"""A cgroup's CPUs: the cpuset it may run on, its CFS quota, and its CPU time.

cpuset: v1 cpuset.effective_cpus (cpuset.cpus where there is none), v2 cpuset.cpus.effective; an
empty one (v1 before it is set) takes the nearest ancestor's. Quota: v1 cpu.cfs_quota_us and
cpu.cfs_period_us, v2 cpu.max ("max 100000" or "50000 100000"). Time: v1 cpuacct.usage_all
(per CPU, user and system, ns), or cpuacct.usage_percpu (per CPU, no split); v2 cpu.stat
(user_usec, system_usec: totals only, v2 keeps no per-CPU figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pidns.cgroups.layout import Cgroup, read_text
from pidns.cgroups.memory import parse_flat_keyed


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """ "0-3,8,10-11" -> (0, 1, 2, 3, 8, 10, 11); ValueError for anything else."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        lo = int(first)
        hi = int(last) if dash else lo
        if lo < 0 or hi < lo:
            raise ValueError(f"not a CPU list: {text!r}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...] | list[int]) -> str:
    """parse_cpu_list's inverse, in the kernel's shortest form."""
    out: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def cpuset(cg: Cgroup) -> tuple[int, ...] | None:
    """The CPUs the cgroup may run on, None without a cpuset controller."""
    d = cg.get("cpuset")
    if d is None:
        return None
    names = (
        ("cpuset.cpus.effective", "cpuset.cpus")
        if d.v2
        else ("cpuset.effective_cpus", "cpuset.cpus")
    )
    for at in d.up():
        for name in names:
            text = read_text(at.file(name))
            if text and text.strip():
                try:
                    return parse_cpu_list(text)
                except ValueError:
                    return None
    return None


@dataclass(frozen=True, slots=True)
class Quota:
    quota_us: int
    period_us: int

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us

    @property
    def whole_cpus(self) -> int:
        """CPUs the quota lets run at once, a part counting as one (LXCFS's rule, lxc/lxcfs#600)."""
        return math.ceil(self.quota_us / self.period_us)


def quota(cg: Cgroup) -> Quota | None:
    """The tightest CFS quota on the path to the root, None when no cgroup on it has one."""
    d = cg.get("cpu")
    if d is None:
        return None
    best: Quota | None = None
    for at in d.up():
        q = _quota_at(at.file("cpu.max")) if d.v2 else _quota_v1(at.file(""))
        if q is not None and (best is None or q.cpus < best.cpus):
            best = q
    return best


def _quota_at(path: str) -> Quota | None:
    words = (read_text(path) or "").split()
    if len(words) != 2 or words[0] == "max":
        return None
    try:
        q, p = int(words[0]), int(words[1])
    except ValueError:
        return None
    return Quota(q, p) if q > 0 and p > 0 else None


def _quota_v1(prefix: str) -> Quota | None:
    try:
        q = int((read_text(prefix + "cpu.cfs_quota_us") or "").strip())
        p = int((read_text(prefix + "cpu.cfs_period_us") or "").strip())
    except ValueError:
        return None
    return Quota(q, p) if q > 0 and p > 0 else None


@dataclass(frozen=True, slots=True)
class CpuTime:
    """Nanoseconds of CPU time the cgroup's tasks used: per CPU when the kernel keeps that."""

    user_ns: int
    system_ns: int
    per_cpu: dict[int, tuple[int, int]] | None  # cpu -> (user, system)


def cpu_time(cg: Cgroup) -> CpuTime | None:
    d = cg.get("cpuacct")
    if d is not None and not d.v2:
        per_cpu = parse_usage_all(read_text(d.file("cpuacct.usage_all")))
        if per_cpu is None:
            per_cpu = parse_usage_percpu(read_text(d.file("cpuacct.usage_percpu")))
        if per_cpu is None:
            return None
        return CpuTime(
            sum(u for u, _ in per_cpu.values()), sum(s for _, s in per_cpu.values()), per_cpu
        )
    d = d or cg.unified
    if d is None or not d.v2:
        return None
    stat = parse_flat_keyed(read_text(d.file("cpu.stat")))
    if "user_usec" not in stat:
        return None
    return CpuTime(stat["user_usec"] * 1000, stat.get("system_usec", 0) * 1000, None)


def parse_usage_all(text: str | None) -> dict[int, tuple[int, int]] | None:
    """cpuacct.usage_all: "cpu user system" then one "N user system" line per CPU."""
    lines = (text or "").splitlines()
    if not lines or lines[0].split() != ["cpu", "user", "system"]:
        return None
    out = {}
    for line in lines[1:]:
        words = line.split()
        if len(words) == 3:
            try:
                out[int(words[0])] = (int(words[1]), int(words[2]))
            except ValueError:
                return None
    return out


def parse_usage_percpu(text: str | None) -> dict[int, tuple[int, int]] | None:
    """cpuacct.usage_percpu: one total per CPU; counted as user time (the kernel has no split)."""
    if not text or not text.strip():
        return None
    try:
        return {i: (int(w), 0) for i, w in enumerate(text.split())}
    except ValueError:
        return None
