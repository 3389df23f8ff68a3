"""Pure parsers over the bytes of /proc files. No I/O here: everything is testable on captured bytes."""

from __future__ import annotations

from pidns.plain import Plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re

# status keys we translate or report; everything after NSsid is ignored for speed.
_WANTED = {
    b"State": "state",
    b"Tgid": "tgid",
    b"Pid": "pid",
    b"PPid": "ppid",
    b"TracerPid": "tracer_pid",
    b"Uid": "uid",
    b"Gid": "gid",
    b"NStgid": "nstgid",
    b"NSpid": "nspid",
    b"NSpgid": "nspgid",
    b"NSsid": "nssid",
}


class Status(Plain):
    """The identity part of /proc/PID/status. Chains start at the proc tree owner's level."""

    __slots__ = (
        "gid",
        "nspgid",
        "nspid",
        "nssid",
        "nstgid",
        "pid",
        "ppid",
        "state",
        "tgid",
        "tracer_pid",
        "uid",
    )

    def __init__(
        self,
        state: str,
        tgid: int,
        pid: int,
        ppid: int,
        tracer_pid: int,
        uid: tuple[int, int, int, int],
        gid: tuple[int, int, int, int],
        nstgid: tuple[int, ...],
        nspid: tuple[int, ...],
        nspgid: tuple[int, ...],
        nssid: tuple[int, ...],
    ) -> None:
        self.state = state
        self.tgid = tgid
        self.pid = pid
        self.ppid = ppid
        self.tracer_pid = tracer_pid
        self.uid = uid
        self.gid = gid
        self.nstgid = nstgid
        self.nspid = nspid
        self.nspgid = nspgid
        self.nssid = nssid


def _ints(value: bytes) -> tuple[int, ...]:
    return tuple(map(int, value.split()))


# The kernel prints these lines in this order (fs/proc/array.c); one regex match in C is ~5x
# faster than splitting lines in Python, which matters at 10,000 tasks. Anything else falls
# back to the line-by-line parser.
_FAST = (
    rb"State:\t(.)[^\n]*\n"
    rb"Tgid:\t(\d+)\n(?:Ngid:\t\d+\n)?"
    rb"Pid:\t(\d+)\nPPid:\t(\d+)\nTracerPid:\t(\d+)\n"
    rb"Uid:\t(\d+)\t(\d+)\t(\d+)\t(\d+)\nGid:\t(\d+)\t(\d+)\t(\d+)\t(\d+)\n"
    rb"(?:[A-Za-z]+:[^\n]*\n){0,3}?"
    rb"NStgid:\t([^\n]*)\nNSpid:\t([^\n]*)\nNSpgid:\t([^\n]*)\nNSsid:\t([^\n]*)\n"
)
_IDS = rb"\nUid:\t(\d+)\t(\d+)\t(\d+)\t(\d+)\nGid:\t(\d+)\t(\d+)\t(\d+)\t(\d+)\n"
_compiled: dict[bytes, re.Pattern[bytes]] = {}


def _pattern(source: bytes) -> re.Pattern[bytes]:
    """re, imported and compiled at the first status read: a brief snapshot of the host's own
    namespace reads no status file, and would import re (with enum) for nothing."""
    found = _compiled.get(source)
    if found is None:
        import re

        found = _compiled[source] = re.compile(source)
    return found


def parse_status(data: bytes) -> Status:
    """Parse /proc/PID/status. Raises ValueError on a file that lacks the identity fields."""
    m = _pattern(_FAST).search(data, 0, 1024)
    if m is not None:
        g = m.groups()
        n = list(map(int, g[1:13]))
        return Status(
            g[0].decode(),
            n[0],
            n[1],
            n[2],
            n[3],
            (n[4], n[5], n[6], n[7]),
            (n[8], n[9], n[10], n[11]),
            tuple(map(int, g[13].split())),
            tuple(map(int, g[14].split())),
            tuple(map(int, g[15].split())),
            tuple(map(int, g[16].split())),
        )
    return _parse_status_lines(data)


def _parse_status_lines(data: bytes) -> Status:
    fields: dict[str, bytes] = {}
    # The wanted keys sit in the first ~20 lines; stop at NSsid instead of splitting ~60 lines.
    for line in data.split(b"\n", 24):
        key, sep, value = line.partition(b":")
        name = _WANTED.get(key)
        if name is not None and sep:
            fields[name] = value
            if name == "nssid":
                break
    try:
        uid = _ints(fields["uid"])
        gid = _ints(fields["gid"])
        pid = int(fields["pid"])
        tgid = int(fields["tgid"])
        return Status(
            state=fields["state"].strip()[:1].decode(),
            tgid=tgid,
            pid=pid,
            ppid=int(fields["ppid"]),
            tracer_pid=int(fields.get("tracer_pid", b"0")),
            uid=(uid[0], uid[1], uid[2], uid[3]),
            gid=(gid[0], gid[1], gid[2], gid[3]),
            # Kernels without CONFIG_PID_NS omit the NS* lines: one level, the plain numbers.
            nstgid=_ints(fields["nstgid"]) if "nstgid" in fields else (tgid,),
            nspid=_ints(fields["nspid"]) if "nspid" in fields else (pid,),
            nspgid=_ints(fields["nspgid"]) if "nspgid" in fields else (),
            nssid=_ints(fields["nssid"]) if "nssid" in fields else (),
        )
    except (KeyError, IndexError) as err:
        raise ValueError(f"status lacks field {err}") from None


class Stat(Plain):
    """The fields of /proc/PID/stat that pidns uses (numbers as the proc tree's owner sees them)."""

    __slots__ = (
        "comm",
        "num_threads",
        "pgrp",
        "pid",
        "ppid",
        "session",
        "start_time",
        "state",
        "tpgid",
        "tty_nr",
    )

    def __init__(
        self,
        pid: int,
        comm: str,
        state: str,
        ppid: int,
        pgrp: int,
        session: int,
        tty_nr: int,
        tpgid: int,
        num_threads: int,
        start_time: int,
    ) -> None:
        self.pid = pid
        self.comm = comm
        self.state = state
        self.ppid = ppid
        self.pgrp = pgrp
        self.session = session
        self.tty_nr = tty_nr
        self.tpgid = tpgid
        self.num_threads = num_threads
        self.start_time = start_time  # clock ticks after boot


def parse_stat(data: bytes) -> Stat:
    """Parse /proc/PID/stat. The comm may hold spaces and ')', so split at the *last* ')'."""
    return Stat(*stat_fields(data))


def stat_fields(data: bytes) -> tuple[int, str, str, int, int, int, int, int, int, int]:
    """parse_stat's fields as a tuple, in Stat's order (no object per task for the reader)."""
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        raise ValueError("stat has no (comm)")
    # rest[0] is field 3 (state); field N is rest[N - 3]. Split no further than field 22,
    # the last one read (the line has 52).
    rest = data[close_at + 2 :].split(None, 20)
    try:
        return (
            int(data[:open_at]),
            data[open_at + 1 : close_at].decode(errors="surrogateescape"),
            rest[0].decode(),
            int(rest[1]),
            int(rest[2]),
            int(rest[3]),
            int(rest[4]),
            int(rest[5]),
            int(rest[17]),
            int(rest[19]),
        )
    except IndexError:
        raise ValueError("stat is truncated") from None


def stat_state(data: bytes) -> str:
    """Field 3 of /proc/PID/stat (R, S, Z, ...), read without parsing the rest."""
    close_at = data.rfind(b")")
    if close_at < 0 or len(data) < close_at + 3:
        raise ValueError("stat has no state")
    return chr(data[close_at + 2])


def stat_state_threads(data: bytes) -> tuple[str, int]:
    """Fields 3 and 20 of /proc/PID/stat: the state and the thread count, nothing else parsed."""
    close_at = data.rfind(b")")
    rest = data[close_at + 2 :].split(maxsplit=18) if close_at >= 0 else []
    if len(rest) < 18:
        raise ValueError("stat is truncated")
    return chr(rest[0][0]), int(rest[17])


def stat_start_time(data: bytes) -> int:
    """Field 22 of /proc/PID/stat: the task's start, in clock ticks after boot."""
    return parse_stat(data).start_time


def parse_cmdline(data: bytes) -> list[str]:
    """NUL-separated argv; a trailing NUL ends the last argument, not an empty one."""
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    # One decode, then the split: NUL is never part of an escaped or multi-byte sequence.
    return data.decode(errors="surrogateescape").split("\0")


def parse_ns_link(target: str) -> int:
    """`pid:[4026531836]` -> 4026531836."""
    _kind, sep, rest = target.partition(":[")
    if not sep or not rest.endswith("]"):
        raise ValueError(f"not a namespace link: {target!r}")
    return int(rest[:-1])


def parse_status_ids(
    data: bytes,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(uids, gids) of /proc/PID/status: real, effective, saved, filesystem. Raises ValueError
    when the lines are missing."""
    m = _pattern(_IDS).search(data, 0, 1024)
    if m is None:
        raise ValueError("status lacks Uid/Gid")
    n = tuple(map(int, m.groups()))
    return (n[0], n[1], n[2], n[3]), (n[4], n[5], n[6], n[7])
