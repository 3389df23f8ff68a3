"""Where the mount table says a view is."""

from __future__ import annotations

import os


def is_mountpoint(path: str) -> bool:
    """True when path is the root of a mount (per /proc/self/mountinfo, which sees bind mounts)."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == real:
                return True
    return False


def mount_fstype(path: str) -> str | None:
    """The filesystem type of the topmost mount at path, or None when it is not a mountpoint."""
    real = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4 and _unescape(fields[4]) == real:
                sep = fields.index(b"-")
                found = fields[sep + 1].decode()
    return found


def _unescape(field: bytes) -> str:
    return os.fsdecode(
        field.replace(b"\\040", b" ")
        .replace(b"\\011", b"\t")
        .replace(b"\\012", b"\n")
        .replace(b"\\134", b"\\")
    )
