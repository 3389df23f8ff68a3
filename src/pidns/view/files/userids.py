"""Uid, Gid and Groups of /proc/PID/status in the reader's user namespace (docs/kernel-proc.md §10).

The kernel prints them through the opener's user namespace: an id that namespace maps shows as its
number there, any other as the overflow id (65534 unless /proc/sys/kernel/overflow{u,g}id says
otherwise). The daemon reads the host's status in its own namespace and renders it again for a
requester whose namespace is another, from that namespace's uid_map and gid_map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (first id inside, first id outside, count): the lines of /proc/PID/uid_map, outside ids as the
# daemon's user namespace numbers them
IdRanges = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class ReaderIds:
    uids: IdRanges
    gids: IdRanges
    overflow_uid: int
    overflow_gid: int


def parse_id_map(text: bytes) -> IdRanges:
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:
            inside, outside, count = (int(f) for f in fields)
            ranges.append((inside, outside, count))
    return tuple(ranges)


def map_id(ranges: IdRanges, outside: int, overflow: int) -> int:
    """The number a namespace with these ranges gives the daemon's id `outside`."""
    for first_inside, first_outside, count in ranges:
        if first_outside <= outside < first_outside + count:
            return first_inside + outside - first_outside
    return overflow


_USER_IDS = re.compile(rb"\nUid:\t([^\n]*)\nGid:\t([^\n]*)\n(?:[^\n]*\n)*?Groups:\t([^\n]*)\n")
_NUMBER = re.compile(rb"\d+")


def render_user_ids(status: bytes, ids: ReaderIds) -> bytes:
    """status with its Uid, Gid and Groups lines as the reader's namespace numbers them; spacing
    kept as the kernel printed it."""
    m = _USER_IDS.search(status)
    if m is None:
        return status

    def users(number: re.Match[bytes]) -> bytes:
        return b"%d" % map_id(ids.uids, int(number[0]), ids.overflow_uid)

    def groups(number: re.Match[bytes]) -> bytes:
        return b"%d" % map_id(ids.gids, int(number[0]), ids.overflow_gid)

    return b"".join(
        (
            status[: m.start(1)],
            _NUMBER.sub(users, m[1]),
            status[m.end(1) : m.start(2)],
            _NUMBER.sub(groups, m[2]),
            status[m.end(2) : m.start(3)],
            _NUMBER.sub(groups, m[3]),
            status[m.end(3) :],
        )
    )
