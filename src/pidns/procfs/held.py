"""Files a long-running reader reads again and again, kept open.

A proc or cgroup file is a sequence file: read from offset 0 it renders afresh, so a pread of a
file kept open shows what an open and a read would, without the open and the close (most of the
cost of a small cgroup file). A virtualised meminfo reads five such files at every open. The
daemon and the exporter keep them (keep_open); a one-shot command reads as usual. A kept file
that fails (its cgroup removed: ENODEV) is dropped and opened again by path, so a cgroup made
anew at the same path is read, not the removed one.

A task's files are kept the same way by task (TaskFiles), for those the kernel renders from the
task itself at every read (REREAD): each read through a kept fd is what an open would show, two
system calls fewer per file of a `ps` through a view. Files that take something of the task at
open (environ, maps, auxv, mem: its memory map then, which an exec replaces) are never kept.
"""

from __future__ import annotations

import os
import threading

from pidns.procfs.reader import pread_all, read_all

_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class HeldFiles:
    """Up to `limit` files by path, the least recently opened closed first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fds: dict[str, int] = {}
        # One reader at a time: an fd must not be closed (and its number reused for another
        # file) while another thread reads it.
        self._lock = threading.Lock()

    def read(self, path: str) -> bytes:
        """The file's content; OSError as an open and a read would raise it."""
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                try:
                    return pread_all(fd)
                except OSError:
                    del self._fds[path]
                    os.close(fd)
            fd = os.open(path, _FLAGS)
            try:
                data = read_all(fd, short_read_ends=True)
            except OSError:
                os.close(fd)
                raise
            if len(self._fds) >= self.limit:
                oldest = next(iter(self._fds))
                os.close(self._fds.pop(oldest))
            self._fds[path] = fd
            return data

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


# A task's files rendered anew from the task at every read (fs/proc/base.c: single-record
# sequence files and cmdline, which asks for the task at each read).
REREAD = frozenset({"stat", "status", "cmdline", "statm", "comm"})
_TASK_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


class TaskFiles:
    """Idle fds of tasks' REREAD files by (task, name), up to `limit`; once full, a file is closed
    after its read (a `ps` reads every task in turn: evicting the least recently read would keep
    none of a walk longer than the limit, keeping the first ones serves that many). A task's
    files go when its node is released (drop). `task` is what pins the task (a node holding its directory's fd): a file opened
    through that directory describes that task or fails with ESRCH once it is reaped, never
    another task under its reused pid. An fd is out of the table while it is read, so no lock is
    held across a read (a cmdline read waits for the task's memory map) and no fd is closed
    while another thread reads it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: dict[tuple[object, str], int] = {}
        self._lock = threading.Lock()

    def read(self, task: object, dir_fd: int, name: str, limit: int = 0) -> bytes:
        """name under the task's directory dir_fd, whole; EFBIG past `limit` bytes (0: none).
        Kept for the next read if name is REREAD."""
        if name not in REREAD:
            return _read_task_once(dir_fd, name, limit)
        key = (task, name)
        with self._lock:
            fd = self._idle.pop(key, -1)
        if fd < 0:
            fd = os.open(name, _TASK_FLAGS, dir_fd=dir_fd)
        try:
            data = pread_all(fd, limit)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            # another thread's kept meanwhile, or no room: one fd is closed
            if key in self._idle or len(self._idle) >= self.limit:
                spare = fd
            else:
                self._idle[key] = fd
                spare = -1
        if spare >= 0:
            os.close(spare)
        return data

    def drop(self, task: object) -> None:
        """Close the task's kept files (its node is released)."""
        with self._lock:
            fds = [self._idle.pop((task, name), -1) for name in REREAD]
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            fds = list(self._idle.values())
            self._idle.clear()
        for fd in fds:
            os.close(fd)


_held: HeldFiles | None = None
_tasks: TaskFiles | None = None


def keep_open(limit: int = 128, task_limit: int = 0) -> None:
    """From now on this process keeps the files read() reads open (a long-running reader), and
    up to task_limit of the task files read_task() reads."""
    global _held, _tasks
    if _held is None:
        _held = HeldFiles(limit)
    if task_limit and _tasks is None:
        _tasks = TaskFiles(task_limit)


def read(path: str) -> bytes:
    """A proc or cgroup file's content, through the kept files when this process keeps them."""
    held = _held
    if held is not None:
        return held.read(path)
    fd = os.open(path, _FLAGS)
    try:
        return read_all(fd, short_read_ends=True)
    finally:
        os.close(fd)


def read_task(task: object, dir_fd: int, name: str, limit: int = 0) -> bytes:
    """name under the task's directory dir_fd, whole (EFBIG past `limit` bytes, 0: none);
    through the kept files when this process keeps them."""
    tasks = _tasks
    if tasks is not None:
        return tasks.read(task, dir_fd, name, limit)
    return _read_task_once(dir_fd, name, limit)


def _read_task_once(dir_fd: int, name: str, limit: int) -> bytes:
    fd = os.open(name, _TASK_FLAGS, dir_fd=dir_fd)
    try:
        return read_all(fd, limit=limit, short_read_ends=True)
    finally:
        os.close(fd)


def drop_task(task: object) -> None:
    """The task's node is released: its kept files are closed."""
    if _tasks is not None:
        _tasks.drop(task)
