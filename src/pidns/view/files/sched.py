"""/proc/PID/sched: the first line names the task as `comm (PID, #threads: N)` in the namespace's numbers."""

from __future__ import annotations


def render_sched(host_sched: bytes, ns_pid: int) -> bytes:
    first, sep, rest = host_sched.partition(b"\n")
    open_at = first.rfind(b" (")
    comma = first.find(b",", open_at)
    if open_at < 0 or comma < 0:
        return host_sched
    return first[: open_at + 2] + b"%d" % ns_pid + first[comma:] + sep + rest
