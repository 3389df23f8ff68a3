"""Tasks' files kept open by the view daemon (pidns.procfs.held.TaskFiles) read as an open would:
afresh at every read, across an exec, ESRCH once the task is reaped (never another task's), and
only for the files the kernel renders from the task at each read."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from pidns.procfs.held import TaskFiles

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def _task(argv: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A child and an fd of its /proc directory (what pins it, as a view's node does)."""
    child = subprocess.Popen(argv)
    dir_fd = os.open(f"/proc/{child.pid}", _DIR)
    try:
        yield child, dir_fd
    finally:
        child.kill()
        child.wait()
        os.close(dir_fd)


def _state(status: bytes) -> bytes:
    return next(line for line in status.splitlines() if line.startswith(b"State:"))


def test_a_kept_file_reads_afresh_and_follows_an_exec() -> None:
    files = TaskFiles(limit=8)
    with _task(["sh", "-c", "sleep 0.5; exec sleep 100"]) as (child, dir_fd):
        task = object()
        deadline = time.monotonic() + 10
        while not files.read(task, dir_fd, "cmdline").startswith(b"sh\x00-c\x00"):
            assert time.monotonic() < deadline, "the shell never showed"
            time.sleep(0.01)
        files.read(task, dir_fd, "status")
        kept = _fds()
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.1)
        assert b"T (stopped)" in _state(files.read(task, dir_fd, "status"))
        os.kill(child.pid, signal.SIGCONT)
        time.sleep(0.1)
        assert b"T (stopped)" not in _state(files.read(task, dir_fd, "status"))
        deadline = time.monotonic() + 10
        while files.read(task, dir_fd, "cmdline") != b"sleep\x00100\x00":
            assert time.monotonic() < deadline, "the exec never showed"
            time.sleep(0.05)
        assert b"Name:\tsleep\n" in files.read(task, dir_fd, "status")
        assert _fds() == kept  # read again through the same two fds
    files.close()


def test_a_reaped_task_reads_esrch_through_its_kept_file() -> None:
    files = TaskFiles(limit=8)
    with _task(["sleep", "100"]) as (child, dir_fd):
        task = object()
        assert files.read(task, dir_fd, "stat").startswith(b"%d (sleep)" % child.pid)
        child.kill()
        child.wait()
        before = _fds()
        with pytest.raises(OSError) as caught:
            files.read(task, dir_fd, "stat")
        assert caught.value.errno == errno.ESRCH
        assert _fds() == before - 1  # the failed file is closed, not kept
    files.close()


def test_kept_files_are_bounded_dropped_with_their_task_and_never_other_files() -> None:
    files = TaskFiles(limit=2)
    with _task(["sleep", "100"]) as (_child, dir_fd):
        first, second = object(), object()
        before = _fds()
        for name in ("stat", "status", "cmdline"):  # the third finds no room: read, then closed
            files.read(first, dir_fd, name)
        assert _fds() == before + 2
        files.read(first, dir_fd, "environ")  # its memory map is taken at open: never kept
        files.read(second, dir_fd, "stat")  # no room either
        assert _fds() == before + 2
        files.drop(first)
        assert _fds() == before
        files.read(second, dir_fd, "stat")
        assert _fds() == before + 1
        files.close()
        assert _fds() == before
