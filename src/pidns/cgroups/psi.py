"""A cgroup's pressure stall information: cpu.pressure, memory.pressure, io.pressure of its v2
directory (on a hybrid machine too: the v2 hierarchy keeps them without controllers). Same text
as /proc/pressure/*; absent when the kernel has no PSI or the cgroup turned it off
(cgroup.pressure 0: the files then fail with EOPNOTSUPP)."""

from __future__ import annotations

from pidns.cgroups.layout import Cgroup

RESOURCES = ("cpu", "memory", "io")


def pressure(cg: Cgroup, resource: str) -> bytes | None:
    """The bytes of the cgroup's <resource>.pressure, None where it has none."""
    if resource not in RESOURCES:
        raise ValueError(f"no pressure file for {resource!r}")
    d = cg.unified
    if d is None:
        return None
    try:
        with open(d.file(f"{resource}.pressure"), "rb") as f:
            text = f.read()
    except OSError:
        return None
    return text if text.startswith(b"some ") else None
