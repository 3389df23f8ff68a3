"""Pid translation between namespaces: by the kernel's ioctls where they apply, else by NSpid."""

from __future__ import annotations

import errno
import os

from pidns.designators import open_namespace
from pidns.errors import NotVisible, PidnsError
from pidns.ids import NsPid
from pidns.kernel import nsfs
from pidns.model import PidNamespace, Snapshot


def translate_kernel(
    snap: Snapshot, pid: int, src: PidNamespace, dst: PidNamespace
) -> NsPid | None:
    """The kernel's answer (None: pid not visible in one of them). Raises PidnsError when the
    namespace files cannot be opened or the ioctls are missing."""
    src_fd = open_namespace(snap, src)
    try:
        dst_fd = open_namespace(snap, dst)
        try:
            try:
                mine = nsfs.pid_from_pidns(src_fd, pid)
                return NsPid(nsfs.pid_in_pidns(dst_fd, mine))
            except OSError as err:
                if err.errno == errno.ESRCH:
                    return None
                raise PidnsError(f"translation ioctl failed: {err.strerror}") from None
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def translate(snap: Snapshot, pid: int, src: PidNamespace, dst: PidNamespace) -> NsPid:
    """The number dst gives the task src numbers `pid`; NotVisible when there is none."""
    try:
        answer = translate_kernel(snap, pid, src, dst)
    except PidnsError:
        answer = snap.translate(pid, src, dst)
    if answer is None:
        if snap.find(pid, src) is None:
            raise NotVisible(f"pid {pid} does not exist in namespace {src.id.ino}")
        raise NotVisible(f"pid {pid} of namespace {src.id.ino} has no number in {dst.id.ino}")
    return answer
