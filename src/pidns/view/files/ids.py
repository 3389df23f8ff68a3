"""The pid numbers of one task as a namespace at `level` (below the daemon's) numbers them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pidns.procfs.parse import parse_status

ToNs = Callable[[int], int]
"""Maps a pid as the daemon numbers it to the namespace's number for it; 0 when invisible there."""


@dataclass(slots=True, frozen=True)
class TaskIds:
    tgid: int
    pid: int
    ppid: int
    tracer_pid: int
    pgrp: int
    sid: int
    host_pgrp: int
    host_sid: int
    nstgid: tuple[int, ...]
    nspid: tuple[int, ...]
    nspgid: tuple[int, ...]
    nssid: tuple[int, ...]


def task_ids(host_status: bytes, level: int, to_ns: ToNs) -> TaskIds:
    """Numbers from the host's status. ValueError when the task has no number at `level`.

    Pgrp and session come from the NS* chains, not from a lookup: a group whose leader has exited
    keeps its number, which a pid lookup would no longer find.
    """
    st = parse_status(host_status)
    if len(st.nspid) <= level or len(st.nstgid) <= level:
        raise ValueError("the task has no number in this namespace")
    nspgid = st.nspgid[level:]
    nssid = st.nssid[level:]
    return TaskIds(
        tgid=st.nstgid[level],
        pid=st.nspid[level],
        ppid=to_ns(st.ppid) if st.ppid else 0,
        tracer_pid=to_ns(st.tracer_pid) if st.tracer_pid else 0,
        pgrp=nspgid[0] if nspgid else 0,
        sid=nssid[0] if nssid else 0,
        host_pgrp=st.nspgid[0] if st.nspgid else 0,
        host_sid=st.nssid[0] if st.nssid else 0,
        nstgid=st.nstgid[level:],
        nspid=st.nspid[level:],
        nspgid=nspgid,
        nssid=nssid,
    )
