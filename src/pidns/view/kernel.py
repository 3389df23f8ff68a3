"""The kernel backend: a procfs owned by the namespace. Linux 6.18+ mounts it from here
(`pidns=`); older kernels only give a procfs of NS to a mounter that lives in NS, so there a
task forked into NS mounts it (into our mount namespace)."""

from __future__ import annotations

import errno
import os

from pidns.errors import NotPermitted, PidnsError
from pidns.kernel import syscalls
from pidns.view.options import ViewOptions

_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def mount_proc(
    ns_fd: int, mountpoint: str, options: ViewOptions, from_inside: bool = False
) -> None:
    """Mount NS's procfs at mountpoint; `from_inside` skips `pidns=` (as on older kernels)."""
    data = ",".join(options.kernel_options())
    try:
        if from_inside:
            _mount_from_inside(ns_fd, mountpoint, data)
        else:
            try:
                syscalls.mount(
                    "proc",
                    mountpoint,
                    "proc",
                    _FLAGS,
                    ",".join([f"pidns=/proc/self/fd/{ns_fd}", data]).rstrip(","),
                )
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                _mount_from_inside(ns_fd, mountpoint, data)  # no `pidns=` before 6.18
    except OSError as err:
        if err.errno == errno.EPERM:
            raise NotPermitted(
                f"{mountpoint}: mounting a procfs needs CAP_SYS_ADMIN (use --backend fuse)"
            ) from None
        raise PidnsError(f"{mountpoint}: mount failed: {err.strerror}") from None


def _mount_from_inside(ns_fd: int, mountpoint: str, data: str) -> None:
    """setns(CLONE_NEWPID) moves only future children into NS: fork, join, fork again, and
    let that grandchild (a task of NS, still in our mount namespace) mount. Errors come back
    as an errno over a pipe."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process, which never returns
        answer = errno.EIO
        try:
            os.close(read_end)
            syscalls.setns(ns_fd, syscalls.CLONE_NEWPID)
            inside = os.fork()
            if inside == 0:
                try:
                    syscalls.mount("proc", mountpoint, "proc", _FLAGS, data or None)
                    answer = 0
                except OSError as err:
                    answer = err.errno or errno.EIO
                finally:
                    os.write(write_end, str(answer).encode())
                    os._exit(0)
            os.waitpid(inside, 0)
            answer = -1  # the grandchild answered
        except OSError as err:
            answer = err.errno or errno.EIO
        finally:
            if answer != -1:
                os.write(write_end, str(answer).encode())
            os._exit(0)
    os.close(write_end)
    try:
        reply = os.read(read_end, 16)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    code = int(reply) if reply.isdigit() else errno.EIO
    if code:
        raise OSError(code, os.strerror(code))
