"""The kernel backend: a procfs owned by the namespace, mounted from here (`pidns=`, Linux 6.18+)."""

from __future__ import annotations

import errno

from pidns.errors import NotPermitted, PidnsError, Unsupported
from pidns.kernel import syscalls
from pidns.view.options import ViewOptions


def mount_proc(ns_fd: int, mountpoint: str, options: ViewOptions) -> None:
    data = ",".join([f"pidns=/proc/self/fd/{ns_fd}", *options.kernel_options()])
    try:
        syscalls.mount(
            "proc",
            mountpoint,
            "proc",
            syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
            data,
        )
    except OSError as err:
        if err.errno == errno.EPERM:
            raise NotPermitted(
                f"{mountpoint}: mounting a procfs needs CAP_SYS_ADMIN (use --backend fuse)"
            ) from None
        if err.errno == errno.EINVAL:
            raise Unsupported(
                f"{mountpoint}: this kernel rejects 'mount -t proc -o pidns=' (needs Linux 6.18; use --backend fuse)"
            ) from None
        raise PidnsError(f"{mountpoint}: mount failed: {err.strerror}") from None
