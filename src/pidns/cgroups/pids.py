"""A cgroup's task limit: pids.max ("max" for none) and pids.current, v1 and v2 alike."""

from __future__ import annotations

from dataclasses import dataclass

from pidns.cgroups.layout import Cgroup, read_text
from pidns.cgroups.memory import parse_limit


@dataclass(frozen=True, slots=True)
class Pids:
    limit: int | None  # the tightest on the path to the root
    current: int


def pids(cg: Cgroup) -> Pids | None:
    d = cg.get("pids")
    if d is None:
        return None
    try:
        current = int((read_text(d.file("pids.current")) or "").strip())
    except ValueError:
        return None
    best: int | None = None
    for at in d.up():
        value = parse_limit(read_text(at.file("pids.max")))
        if value is not None and (best is None or value < best):
            best = value
    return Pids(best, current)
