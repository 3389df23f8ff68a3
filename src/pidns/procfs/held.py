"""Files a long-running reader reads again and again, kept open.

A proc or cgroup file is a sequence file: read from offset 0 it renders afresh, so a pread of a
file kept open shows what an open and a read would, without the open and the close (most of the
cost of a small cgroup file). A virtualised meminfo reads five such files at every open. The
daemon and the exporter keep them (keep_open); a one-shot command reads as usual. A kept file
that fails (its cgroup removed: ENODEV) is dropped and opened again by path, so a cgroup made
anew at the same path is read, not the removed one.
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


_held: HeldFiles | None = None


def keep_open(limit: int = 128) -> None:
    """From now on this process keeps the files read() reads open (a long-running reader)."""
    global _held
    if _held is None:
        _held = HeldFiles(limit)


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
