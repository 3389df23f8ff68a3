"""/proc/PID/stat as the namespace sees it (docs/kernel-proc.md §9, §14b, §25).

Fields 1 (pid), 4 (ppid), 5 (pgrp), 6 (session) in the namespace's numbers, 0 when invisible; field 8
(tpgid) stays -1 without a controlling tty and is 0 when the foreground group is invisible. For a
reader without ptrace-read access the kernel hides the address fields; the daemon reads them with its
own rights, so they are masked here the same way. Field 22 (starttime) is in the reader's time
namespace's CLOCK_BOOTTIME; the daemon reads it in its own, so it is moved by the reader's offset.
"""

from __future__ import annotations

from collections.abc import Callable

from pidns.view.files.ids import TaskIds, ToNs

# 1-based field numbers, counted over the whole line (pid is 1, comm 2, state 3).
_ONE_WHEN_HIDDEN = (26, 27)  # startcode, endcode: 1 when the task has an mm, else 0
_ZERO_WHEN_HIDDEN = (28, 29, 30, 45, 46, 47, 48, 49, 50, 51, 52)


def render_stat(host_stat: bytes, ids: TaskIds, to_ns: ToNs, permitted: bool = True) -> bytes:
    close_at = host_stat.rfind(b")")
    if close_at < 0:
        raise ValueError("stat has no (comm)")
    open_at = host_stat.find(b"(")
    head = b"%d " % ids.pid + host_stat[open_at : close_at + 1]
    tail = host_stat[close_at + 2 :]
    newline = tail.endswith(b"\n")
    rest = tail.split()
    # rest[0] is field 3; field N is rest[N - 3].
    rest[1] = b"%d" % ids.ppid
    rest[2] = b"%d" % ids.pgrp
    rest[3] = b"%d" % ids.sid
    rest[5] = b"%d" % _tpgid(int(rest[5]), ids, to_ns)
    if not permitted:
        for field in _ONE_WHEN_HIDDEN:
            if len(rest) > field - 3 and rest[field - 3] != b"0":
                rest[field - 3] = b"1"
        for field in _ZERO_WHEN_HIDDEN:
            if len(rest) > field - 3:
                rest[field - 3] = b"0"
    return head + b" " + b" ".join(rest) + (b"\n" if newline else b"")


def _tpgid(host_tpgid: int, ids: TaskIds, to_ns: ToNs) -> int:
    if host_tpgid <= 0:
        return host_tpgid
    if host_tpgid == ids.host_pgrp:
        return ids.pgrp
    if host_tpgid == ids.host_sid:
        return ids.sid
    return to_ns(host_tpgid)


def translate_stat(
    host_stat: bytes,
    ns_pid: int,
    to_ns: ToNs,
    ids: Callable[[], TaskIds],
    leader_alive: Callable[[int], bool],
    permitted: bool = True,
) -> bytes:
    """render_stat without reading status when the kernel can translate: ppid, pgrp and session
    by the namespace's ioctl, which asks about the group's leader. A group whose leader is alive
    and has no number in the namespace shows 0 there; one whose leader has exited keeps its
    number with no task to ask about: then `ids()` (the status chains) decide, as in render_stat."""
    close_at = host_stat.rfind(b")")
    if close_at < 0:
        raise ValueError("stat has no (comm)")
    rest = host_stat[close_at + 2 :].split(maxsplit=6)
    if len(rest) < 7:
        raise ValueError("stat is too short")
    host_ppid, host_pgrp, host_sid = int(rest[1]), int(rest[2]), int(rest[3])
    pgrp = to_ns(host_pgrp) if host_pgrp else 0
    # a session's leader often leads its group too: the kernel is asked once
    sid = pgrp if host_sid == host_pgrp else to_ns(host_sid) if host_sid else 0
    unknown = (host_pgrp and not pgrp and not leader_alive(host_pgrp)) or (
        host_sid != host_pgrp and host_sid and not sid and not leader_alive(host_sid)
    )
    if unknown or not permitted:
        return render_stat(host_stat, ids(), to_ns, permitted)
    ppid = to_ns(host_ppid) if host_ppid else 0
    host_tpgid = int(rest[5])
    if host_tpgid <= 0:
        tpgid = host_tpgid
    elif host_tpgid == host_pgrp:
        tpgid = pgrp
    elif host_tpgid == host_sid:
        tpgid = sid
    else:
        tpgid = to_ns(host_tpgid)
    head = b"%d " % ns_pid + host_stat[host_stat.find(b"(") : close_at + 1]
    return b"%s %s %d %d %d %s %d %s" % (head, rest[0], ppid, pgrp, sid, rest[4], tpgid, rest[6])


_START_TIME = 22
_U64 = 1 << 64


def shift_start_time(stat: bytes, offset_ns: int, hz: int) -> bytes:
    """stat as a reader whose CLOCK_BOOTTIME runs offset_ns ahead of the host's reads it: the
    kernel adds its time namespace's offset to the task's start (u64 nanoseconds, wrapping for a
    task older than that clock's zero) before turning it into ticks (fs/proc/array.c). The host's
    ticks lose the start's fraction of a tick: exact when the offset is whole ticks (pidns run
    writes whole seconds), else at most one tick early."""
    if not offset_ns:
        return stat
    close_at = stat.rfind(b")")
    if close_at < 0:
        raise ValueError("stat has no (comm)")
    fields = stat[close_at + 2 :].split(b" ")
    at = _START_TIME - 3
    if len(fields) <= at:
        raise ValueError("stat is too short")
    tick_ns = 1_000_000_000 // hz
    start_ns = (int(fields[at]) * tick_ns + offset_ns) % _U64
    fields[at] = b"%d" % (start_ns // tick_ns)
    return stat[: close_at + 2] + b" ".join(fields)


def stat_running(stat: bytes) -> bytes:
    """stat as its own task reads it: state R, as the kernel shows a reader reading itself
    (docs/kernel-proc.md §12b); the daemon read it while the reader waited for the answer."""
    close = stat.rfind(b")")
    if close < 0 or len(stat) < close + 3:
        return stat
    return stat[: close + 2] + b"R" + stat[close + 3 :]
