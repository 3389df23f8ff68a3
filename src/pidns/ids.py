"""Identities that must not be mixed up: numbers from different namespaces are different types."""

from __future__ import annotations

from typing import NamedTuple, NewType

HostPid = NewType("HostPid", int)
"""A pid as the namespace that owns the proc tree being read numbers it (the host, usually)."""

NsPid = NewType("NsPid", int)
"""A pid as some other namespace numbers it."""


class NsId(NamedTuple):
    """A namespace's identity: (st_dev, st_ino) of its nsfs file. Shown to users as the inode."""

    dev: int
    ino: int

    def __str__(self) -> str:
        return f"pid:[{self.ino}]"


class TaskId(NamedTuple):
    """A task's identity: a pid alone gets reused, a pid with its start time does not."""

    pid: HostPid
    start_time: int
