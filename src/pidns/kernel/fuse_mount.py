"""Mounting a FUSE filesystem: a /dev/fuse fd per mount, by mount(2) as root, else by fusermount3.

    fd = mount("/mnt/view", allow_other=False)   # the connection: serve requests read from fd
    unmount("/mnt/view")

As root, mount(2) takes the device fd in its data (`fd=N,rootmode=40000,user_id=U,group_id=G`).
Without privilege the setuid helper fusermount3 opens the device, mounts, and passes the fd back over
the socket named by `_FUSE_COMMFD` (SCM_RIGHTS); `fusermount3 -u` unmounts. The mount(2) call
returns before the filesystem answers: the kernel queues INIT for whoever reads the fd, and any
access to the mountpoint waits for that answer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess

from pidns.kernel import syscalls

DEVICE = "/dev/fuse"
FUSERMOUNT = "fusermount3"
FSTYPE = "fuse.pidns"
FSNAME = "pidns"
_FLAGS = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


class MountError(OSError):
    """A mount or unmount failed; str() is the helper's or the kernel's one-line reason."""


def options(fd: int | None, uid: int, gid: int, allow_other: bool) -> str:
    """The mount data string. fusermount3 adds fd=, rootmode=, user_id= and group_id= itself."""
    opts = (
        [f"fd={fd}", "rootmode=40000", f"user_id={uid}", f"group_id={gid}"]
        if fd is not None
        else [f"fsname={FSNAME}", "subtype=pidns", "ro", "nosuid", "nodev", "noexec"]
    )
    if allow_other:
        # Other users' requests: the kernel checks modes and owners as procfs's do. Without
        # allow_other only the mounting user gets in, whose rights the server shares (or root,
        # whom modes do not stop): checking costs a GETATTR per path step once attributes age.
        opts += ["allow_other", "default_permissions"]
    return ",".join(opts)


def mount(mountpoint: str, allow_other: bool = False) -> int:
    """Mount a FUSE filesystem at mountpoint; the connection's fd (close-on-exec)."""
    if os.geteuid() == 0:
        return _mount_directly(mountpoint, allow_other)
    return _mount_with_helper(mountpoint, allow_other)


def _mount_directly(mountpoint: str, allow_other: bool) -> int:
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        data = options(fd, os.geteuid(), os.getegid(), allow_other)
        syscalls.mount(FSNAME, mountpoint, FSTYPE, _FLAGS, data)
    except OSError as err:
        os.close(fd)
        raise MountError(err.errno, f"mount: {err.strerror}") from None
    return fd


def _mount_with_helper(mountpoint: str, allow_other: bool) -> int:
    helper = shutil.which(FUSERMOUNT)
    if helper is None:
        raise MountError(errno.ENOENT, f"{FUSERMOUNT} is missing (apt-get install fuse3)")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        ours.set_inheritable(False)
        proc = subprocess.Popen(
            [helper, "-o", options(None, 0, 0, allow_other), "--", mountpoint],
            env={**os.environ, "_FUSE_COMMFD": str(theirs.fileno())},
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        theirs.close()  # EOF on ours when the helper exits without sending a fd
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
        except OSError:
            fds = []
        _out, err = proc.communicate(timeout=30)
    if proc.returncode != 0 or not fds:
        for fd in fds:
            os.close(fd)
        reason = err.decode(errors="replace").strip().splitlines()
        raise MountError(
            errno.EIO, reason[-1] if reason else f"{FUSERMOUNT} failed ({proc.returncode})"
        )
    fd = fds[0]
    os.set_inheritable(fd, False)
    return fd


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount a FUSE mount (ours): umount2 as root, `fusermount3 -u` otherwise. EBUSY as
    MountError(errno.EBUSY) when in use and not lazy."""
    if os.geteuid() == 0:
        try:
            syscalls.umount2(mountpoint, syscalls.MNT_DETACH if lazy else 0)
        except OSError as err:
            raise MountError(err.errno, f"umount: {err.strerror}") from None
        return
    helper = shutil.which(FUSERMOUNT) or FUSERMOUNT
    argv = [helper, "-u", *(["-z"] if lazy else []), "--", mountpoint]
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()
        code = errno.EBUSY if "busy" in reason.lower() else errno.EIO
        raise MountError(code, reason or f"{FUSERMOUNT} -u failed")


def unmount_quietly(mountpoint: str) -> None:
    """Best-effort lazy unmount (cleanup after a failure)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        unmount(mountpoint, lazy=True)
