"""What a filesystem served by pidns.fuse implements: one Node per path, answering in errnos.

A node raises OSError with the errno its caller must see (any other exception is EIO). `key` says
what the node shows, so one inode serves repeated lookups of it; `owner` groups the nodes that go
together when their owner goes (the server invalidates them as one), None outside every group.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple


class Requester(NamedTuple):
    """Who sent a request: tid as the connection numbers it (0 when unknown), fsuid, fsgid, and
    supplementary groups when the filesystem needed them. A tuple: one is made per request, in
    half the time of a frozen dataclass."""

    tid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


class Absent(FileNotFoundError):
    """ENOENT for a name that can never exist in its directory: the kernel may cache the absence."""

    def __init__(self) -> None:
        super().__init__(errno.ENOENT, os.strerror(errno.ENOENT))


def fail(code: int) -> OSError:
    """The OSError a node raises to answer errno `code`."""
    return OSError(code, os.strerror(code))


@dataclass(slots=True)
class Attr:
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    ino: int = 0  # the inode number stat() shows; 0: the one the server gives out

    @classmethod
    def of(cls, s: os.stat_result, own_ino: bool = False) -> Attr:
        """s's attributes; with own_ino, its inode number too (an object whose identity is that
        number, shown under the server's own node)."""
        return cls(
            s.st_mode,
            s.st_nlink,
            s.st_uid,
            s.st_gid,
            s.st_size,
            s.st_mtime_ns,
            s.st_ino if own_ino else 0,
        )


class Node:
    """A path of a filesystem. Defaults answer as a regular file with nothing to say would."""

    __slots__ = ()
    key: Hashable = None

    @property
    def owner(self) -> Hashable | None:
        """The group this node belongs to, invalidated together (None: none)."""
        return None

    def attr(self, req: Requester) -> Attr:
        raise NotImplementedError

    def lookup(self, name: str, req: Requester) -> Node:
        raise fail(errno.ENOTDIR)

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        """(cookie, name, node); cookies are stable ids, increasing along the list."""
        raise fail(errno.ENOTDIR)

    def readlink(self, req: Requester) -> bytes:
        raise fail(errno.EINVAL)

    def content(self, req: Requester) -> bytes:
        """The whole file, taken at open: reads are served from this snapshot."""
        raise fail(errno.EISDIR)

    def check_open_dir(self, req: Requester) -> None:
        """Raise the errno the caller gets when req may not list this directory."""

    def release(self) -> None:
        """Drop what the node holds (a node the table did not keep, or forgot)."""

    def retire(self) -> None:
        """The node's owner is gone: it must never reach what it showed again. What it holds stays
        until release(): a request may be using it right now."""

    def stale(self) -> bool:
        """Whether the node still holds something its owner's end left behind."""
        return False

    # -- taking over from a predecessor server (see tablefile.py) --------------------------------

    def identity(self) -> int:
        """What tells the object this node shows from another that takes its name later (a
        process's start time, say), as a number below 2**64 kept with its inode: a successor
        restores the inode only when the node it finds again has the same. 0: the name says all."""
        return 0

    def restore(self, name: str, identity: int) -> Node:
        """The child `name`, found again by a successor server for an inode its predecessor gave
        out with this identity. OSError when that is not there any more: its errno is what users
        of the inode then get."""
        child = self.lookup(name, RESTORER)
        if child.identity() != identity:
            child.release()
            raise fail(errno.ESTALE)
        return child


# Who asks when a successor looks names up again: no reader, with every right (each reader is still
# checked at each request it makes).
RESTORER = Requester(0, 0, 0)


class Lost(Node):
    """An inode the kernel still knows whose node a successor could not find again (its object is
    gone, or is another's now): every request on it fails with `code`, until the kernel forgets
    it."""

    __slots__ = ("code", "key")

    def __init__(self, code: int) -> None:
        self.code = code
        self.key = ("lost", id(self))

    def attr(self, req: Requester) -> Attr:
        raise fail(self.code)

    def lookup(self, name: str, req: Requester) -> Node:
        raise fail(self.code)

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        raise fail(self.code)

    def readlink(self, req: Requester) -> bytes:
        raise fail(self.code)

    def content(self, req: Requester) -> bytes:
        raise fail(self.code)

    def check_open_dir(self, req: Requester) -> None:
        raise fail(self.code)
