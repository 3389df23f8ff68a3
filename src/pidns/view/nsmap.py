"""One namespace's pid map as the daemon sees it: kernel translation through an nsfs fd, and the
cached list of its thread-group leaders (rebuilt only after a fork or exit event; never cached when
nothing reports those events).

The daemon's own pid namespace numbers host pids; the ioctls ask the kernel for the namespace's
number of a host pid and back, so no status file is read to translate.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from pidns.errors import NamespaceGone, from_oserror
from pidns.ids import NsId
from pidns.kernel import nsfs


class NsMap:
    def __init__(self, ns_fd: int) -> None:
        """Takes ownership of ns_fd (closed by release())."""
        self.fd = ns_fd
        self.id: NsId = nsfs.identity(ns_fd)
        self.level = _level_below_self(ns_fd)
        self._leaders: list[tuple[int, int]] | None = None  # (ns pid, host pid), ascending
        self._epoch = 0  # bumped by invalidate(): a listing read across an event is not kept
        self.cacheable = True  # False when no fork/exit events arrive to invalidate the listing
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    @property
    def released(self) -> bool:
        return self.fd < 0

    def release(self) -> None:
        """Drop the reference that keeps the namespace alive (docs/kernel-proc.md §20)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.proc_fd >= 0:
            os.close(self.proc_fd)
            self.proc_fd = -1
        self._leaders = []

    # -- translation: the kernel's, through the namespace's fd; 0 where there is no number ----

    def to_ns(self, host_pid: int) -> int:
        """The namespace's number for a host pid (any thread)."""
        return self._ask(nsfs.pid_in_pidns, host_pid)

    def tgid_to_ns(self, host_tid: int) -> int:
        """The namespace's number for the thread group of a host tid."""
        return self._ask(nsfs.tgid_in_pidns, host_tid)

    def to_host(self, ns_pid: int) -> int:
        """The host pid of the task (any thread) the namespace numbers ns_pid."""
        return self._ask(nsfs.pid_from_pidns, ns_pid)

    def _ask(self, ioctl: Callable[[int, int], int], pid: int) -> int:
        if self.fd < 0 or pid <= 0:
            return 0
        try:
            return int(ioctl(self.fd, pid))
        except OSError:
            return 0

    # -- the leaders' listing --------------------------------------------------------------------

    def invalidate(self) -> None:
        """Any thread may call this (the watcher's, on a fork or exit)."""
        self._epoch += 1
        self._leaders = None

    def leaders(self) -> list[tuple[int, int]]:
        """(ns pid, host pid) of every thread-group leader with a number here, ascending."""
        cached = self._leaders
        if cached is not None and self.cacheable:
            return cached
        epoch = self._epoch
        found = []
        proc_fd = self.proc_fd
        if proc_fd >= 0:
            for name in os.listdir(proc_fd):
                if name.isdigit():
                    host = int(name)
                    pid = self.to_ns(host)
                    if pid:
                        found.append((pid, host))
        found.sort()
        if epoch == self._epoch:
            self._leaders = found
        return found

    def last_pid(self) -> int:
        """The highest pid in use here (the kernel's exact last allocated pid is not readable from
        outside the namespace)."""
        leaders = self.leaders()
        return leaders[-1][0] if leaders else 0


def _level_below_self(ns_fd: int) -> int:
    """How many levels ns sits below the daemon's own namespace; NamespaceGone if not below it."""
    self_fd = nsfs.open_ns("/proc/self/ns/pid")
    try:
        mine = nsfs.identity(self_fd)
    finally:
        os.close(self_fd)
    level = 0
    current = os.dup(ns_fd)
    try:
        while nsfs.identity(current) != mine:
            try:
                parent = nsfs.parent(current)
            except OSError as err:
                if err.errno == errno.EPERM:
                    raise NamespaceGone(
                        f"{nsfs.identity(ns_fd)}: not a namespace below this process's own"
                    ) from None
                raise from_oserror(err, str(nsfs.identity(ns_fd))) from None
            os.close(current)
            current = parent
            level += 1
    finally:
        os.close(current)
    return level
