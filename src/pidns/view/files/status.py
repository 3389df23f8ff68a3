"""/proc/PID/status as the namespace sees it (docs/kernel-proc.md §6-§8): ids in its numbers, chains from its level."""

from __future__ import annotations

import re

from pidns.view.files.ids import TaskIds, ToNs, task_ids


def _chain(values: tuple[int, ...]) -> bytes:
    return b"".join(b"\t%d" % v for v in values)


def render_status(host_status: bytes, ids: TaskIds) -> bytes:
    """Rewrite the pid lines; every other line (Ngid included, a global id) stays as the host's."""
    single = {
        b"Tgid": ids.tgid,
        b"Pid": ids.pid,
        b"PPid": ids.ppid,
        b"TracerPid": ids.tracer_pid,
    }
    chains = {
        b"NStgid": ids.nstgid,
        b"NSpid": ids.nspid,
        b"NSpgid": ids.nspgid,
        b"NSsid": ids.nssid,
    }
    out = []
    for line in host_status.split(b"\n"):
        key, sep, _ = line.partition(b":")
        if sep:
            if key in single:
                line = b"%s:\t%d" % (key, single[key])
            elif key in chains:
                line = key + b":" + _chain(chains[key])
        out.append(line)
    return b"\n".join(out)


# The identity block as fs/proc/array.c prints it (Ngid only with NUMA balancing); between TracerPid
# and NStgid come Uid, Gid, FDSize and Groups. Chains keep their leading tab in the group.
_IDS = re.compile(
    rb"\nTgid:\t(\d+)\n(?:Ngid:\t\d+\n)?Pid:\t(\d+)\nPPid:\t(\d+)\nTracerPid:\t(\d+)\n"
    rb"(?:[^\n]*\n)*?"
    rb"NStgid:(\t[^\n]*)\nNSpid:(\t[^\n]*)\nNSpgid:(\t[^\n]*)\nNSsid:(\t[^\n]*)\n"
)


def translate_status(host_status: bytes, level: int, to_ns: ToNs) -> bytes:
    """render_status(host_status, task_ids(host_status, level, to_ns)) in one pass: the same bytes,
    spliced around one regex match instead of rebuilt line by line (status opens are half of a
    `ps`). ValueError when the task has no number at `level`."""
    m = _IDS.search(host_status, 0, 2048)
    if m is None:
        return render_status(host_status, task_ids(host_status, level, to_ns))
    _tgid, _pid, ppid, tracer, nstgid, nspid, nspgid, nssid = m.groups()
    chains = [c[1:].split(b"\t")[level:] for c in (nstgid, nspid, nspgid, nssid)]
    if not chains[0] or not chains[1]:
        raise ValueError("the task has no number in this namespace")
    values = [
        chains[0][0],
        chains[1][0],
        b"%d" % (to_ns(int(ppid)) if ppid != b"0" else 0),
        b"%d" % (to_ns(int(tracer)) if tracer != b"0" else 0),
        *(b"".join(b"\t" + v for v in chain) for chain in chains),
    ]
    out = [host_status[: m.start(1)]]
    for i, value in enumerate(values, 1):
        out.append(value)
        out.append(host_status[m.end(i) : m.start(i + 1)] if i < 8 else host_status[m.end(8) :])
    return b"".join(out)


_STATE = b"\nState:\t"


def status_running(status: bytes) -> bytes:
    """status as its own task reads it: running (docs/kernel-proc.md §12b); the daemon read it
    while the reader waited for the answer."""
    start = status.find(_STATE)
    if start < 0:
        return status
    start += len(_STATE)
    end = status.find(b"\n", start)
    return status[:start] + b"R (running)" + status[end if end >= 0 else len(status) :]
