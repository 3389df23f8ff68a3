"""/proc/locks in a namespace's instance: owners in its numbers; locks of invisible owners are dropped,
and the remaining lines keep their numbers (with gaps), as the kernel does (docs/kernel-proc.md §16)."""

from __future__ import annotations

from pidns.view.files.ids import ToNs


def render_locks(host_locks: bytes, to_ns: ToNs) -> bytes:
    out = []
    for line in host_locks.splitlines(keepends=True):
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 00:1f:123 0 EOF"; blocked waiters have "->" before POSIX.
        at = 5 if len(fields) > 1 and fields[1] == b"->" else 4
        if len(fields) <= at or not fields[at].lstrip(b"-").isdigit():
            out.append(line)
            continue
        host_pid = int(fields[at])
        pid = to_ns(host_pid) if host_pid > 0 else host_pid
        if pid == 0:
            continue
        old = b" %s " % fields[at]
        out.append(line.replace(old, b" %d " % pid, 1))
    return b"".join(out)
