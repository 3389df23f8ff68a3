"""Namespace files (nsfs): identity, parent, owner, and the kernel's pid translation ioctls."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pidns.ids import NsId

_NSIO = 0xB7


def _io(nr: int) -> int:
    return (_NSIO << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (_NSIO << 8) | nr


NS_GET_USERNS = _io(0x1)
NS_GET_PARENT = _io(0x2)
NS_GET_NSTYPE = _io(0x3)
NS_GET_OWNER_UID = _io(0x4)
NS_GET_PID_FROM_PIDNS = _ior(0x6, 4)
NS_GET_TGID_FROM_PIDNS = _ior(0x7, 4)
NS_GET_PID_IN_PIDNS = _ior(0x8, 4)
NS_GET_TGID_IN_PIDNS = _ior(0x9, 4)

CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000


def _ioctl(fd: int, request: int, arg: int | bytearray = 0) -> int:
    import fcntl  # here: pidns run opens nsfs files, and most often needs none of these ioctls

    return fcntl.ioctl(fd, request, arg)


def open_ns(path: str, dir_fd: int | None = None) -> int:
    """Open an nsfs file read-only; the fd keeps the namespace alive until closed."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)


def identity(fd: int) -> NsId:
    from pidns.ids import NsId  # here: the launch path of pidns run needs no NsId (collections)

    st = os.fstat(fd)
    return NsId(st.st_dev, st.st_ino)


def nstype(fd: int) -> int:
    return _ioctl(fd, NS_GET_NSTYPE)


def parent(fd: int) -> int:
    """A new fd for the parent namespace. EPERM when the parent is outside the caller's reach."""
    return _ioctl(fd, NS_GET_PARENT)


def owner_userns(fd: int) -> int:
    """A new fd for the user namespace that owns this namespace."""
    return _ioctl(fd, NS_GET_USERNS)


def owner_uid(userns_fd: int) -> int:
    """The uid (in the caller's user namespace) that created a user namespace."""
    buf = bytearray(4)
    _ioctl(userns_fd, NS_GET_OWNER_UID, buf)
    return int.from_bytes(buf, sys.byteorder)


def pid_from_pidns(ns_fd: int, pid: int) -> int:
    """The caller's number for the task that the namespace of ns_fd numbers `pid` (ESRCH if none)."""
    return _ioctl(ns_fd, NS_GET_PID_FROM_PIDNS, pid)


def pid_in_pidns(ns_fd: int, pid: int) -> int:
    """The number the namespace of ns_fd gives the task the caller numbers `pid` (ESRCH if none)."""
    return _ioctl(ns_fd, NS_GET_PID_IN_PIDNS, pid)


def tgid_from_pidns(ns_fd: int, pid: int) -> int:
    """The caller's number for the thread group of the task the namespace numbers `pid`."""
    return _ioctl(ns_fd, NS_GET_TGID_FROM_PIDNS, pid)


def tgid_in_pidns(ns_fd: int, pid: int) -> int:
    """The namespace's number for the thread group of the task the caller numbers `pid`."""
    return _ioctl(ns_fd, NS_GET_TGID_IN_PIDNS, pid)


def nsfs_dev() -> int:
    """st_dev shared by every nsfs file (one superblock for all namespaces)."""
    return os.stat("/proc/self/ns/pid").st_dev
