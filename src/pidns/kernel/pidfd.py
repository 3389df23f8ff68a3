"""Process file descriptors: a handle on one process that a reused pid can't fool."""

from __future__ import annotations

import errno
import os
import select

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # pidns run imports this: the same call without signal's enums


def open_pid(pid: int) -> int:
    """A pidfd (close-on-exec) for pid, in the caller's pid namespace. ESRCH when it is gone."""
    return os.pidfd_open(pid)


def send_signal(fd: int, sig: int) -> None:
    signal.pidfd_send_signal(fd, sig)


def wait_exit(fd: int, timeout: float | None = None) -> bool:
    """Wait until the process has exited (zombie or reaped); False when the timeout ran out."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(poller.poll(ms))


def exited(fd: int) -> bool:
    """Whether the process has exited (a zombie, or reaped)."""
    return wait_exit(fd, 0)


def reaped(fd: int) -> bool:
    """Whether the process is gone for good (-1: there was none to open). A zombie is not:
    signalling it still works until its parent reaps it."""
    if fd < 0:
        return True
    try:
        signal.pidfd_send_signal(fd, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def exists(pid: int) -> bool:
    """Whether a task `pid` (in the caller's pid namespace) exists, zombie or not, whoever owns it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_of(fd: int) -> int:
    """The pid of a pidfd's process, numbered in this /proc's namespace (its fdinfo's Pid)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid > 0:
                    return pid
                break
    raise ProcessLookupError(errno.ESRCH, "the process has exited or is not visible here")
