"""/proc/loadavg: the last field is the last pid of the *reader's* namespace (docs/kernel-proc.md §14)."""

from __future__ import annotations


def render_loadavg(host_loadavg: bytes, last_pid: int) -> bytes:
    fields = host_loadavg.split()
    if len(fields) < 5:
        return host_loadavg
    fields[4] = b"%d" % last_pid
    return b" ".join(fields) + b"\n"


def render_virtual_loadavg(host_loadavg: bytes, running: int, total: int, last_pid: int) -> bytes:
    """--virtualize: the running/total counts are the namespace's own tasks (LXCFS-style)."""
    fields = host_loadavg.split()
    if len(fields) < 5:
        return host_loadavg
    fields[3] = b"%d/%d" % (running, total)
    fields[4] = b"%d" % last_pid
    return b" ".join(fields) + b"\n"
