"""Identities that must not be mixed up: numbers from different namespaces are different types.

typing is imported for the type checker only: at run time it would cost more than everything
`pidns run` does before exec, so the runtime spellings below are the plain equivalents
(NewType is the identity at run time, NamedTuple a namedtuple).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple, NewType

    HostPid = NewType("HostPid", int)
    NsPid = NewType("NsPid", int)

    class _NsIdFields(NamedTuple):
        dev: int
        ino: int

    class _TaskIdFields(NamedTuple):
        pid: HostPid
        start_time: int

else:
    from collections import namedtuple

    HostPid = NsPid = int
    _NsIdFields = namedtuple("NsId", "dev ino")
    _TaskIdFields = namedtuple("TaskId", "pid start_time")

# HostPid: a pid as the namespace that owns the proc tree being read numbers it (the host, usually).
# NsPid: a pid as some other namespace numbers it.


class NsId(_NsIdFields):
    """A namespace's identity: (st_dev, st_ino) of its nsfs file. Shown to users as the inode."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"pid:[{self.ino}]"


class TaskId(_TaskIdFields):
    """A task's identity: a pid alone gets reused, a pid with its start time does not."""

    __slots__ = ()
