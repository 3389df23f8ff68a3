"""/proc/PID/status as the namespace sees it (KERNEL-PROC 6-8): ids in its numbers, chains from its level."""

from __future__ import annotations

from pidns.view.files.ids import TaskIds


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
