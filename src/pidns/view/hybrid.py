"""The kernel's procfs with only the virtualised files pidns's: the hybrid of the two backends.

A FUSE view of NS with --virtualize is mounted on a private temporary directory (the client's
api.VirtualFiles); each file it
renders from NS's cgroup (served.overlaid_files: meminfo, cpuinfo, stat, uptime, loadavg, swaps,
diskstats, pressure/*) is bound over the same file of a procfs owned by NS; the temporary mount
then goes (the binds keep the view's connection, and so the view, alive until they go). Every
per-task file is the kernel's, read at the kernel's speed.

Three users, one mechanism each:
- `pidns mount --backend kernel --virtualize DIR`: the binds are made in the caller's mount
  namespace (bind_over), over the procfs at DIR; `pidns umount DIR` takes them off first.
- `pidns exec --backend kernel --virtualize`: the joiner binds them in its private mount
  namespace, which it copies from ours after the view was mounted (runtime/enter.py).
- `pidns run --virtualize` and `Sandbox(virtualize=True)`: the namespace's mount namespace was
  made before the view could exist (the view needs the namespace), so the files travel as
  detached mounts (open_tree(OPEN_TREE_CLONE)) and are attached in it with move_mount by a
  short-lived process (attach_into) that joins it; rootless, that process first joins the run's
  user namespace and copies our mount namespace, so that it may clone the view's files.

A command's private mount namespace (exec, run, Sandbox; with either backend) also gets the
view's sysfs files (served.SYS_FILES: /sys/devices/system/cpu/online, which glibc's get_nprocs,
os.cpu_count() and sysconf(_SC_NPROCESSORS_ONLN) read) bound over the host's, as LXCFS setups
bind its sys/devices/system/cpu/online; never in the caller's mount namespace (`pidns mount`).
"""

from __future__ import annotations

import contextlib
import os

from pidns.errors import LaunchFailed
from pidns.kernel import syscalls
from pidns.view.served import SYS_FILES, overlaid_files


def present(proc_dir: str) -> list[str]:
    """The overlaid files this kernel's procfs at proc_dir has (pressure/* only with PSI)."""
    return [name for name in overlaid_files() if os.path.isfile(f"{proc_dir}/{name}")]


def sys_binds(sys_dir: str | None) -> list[tuple[str, str]]:
    """(source, target) of the view's sysfs files over the host's, for those this host has."""
    if sys_dir is None:
        return []
    return [
        (f"{sys_dir}/{rel}", f"/sys/{rel}") for rel in SYS_FILES if os.path.isfile(f"/sys/{rel}")
    ]


def command_binds(
    view_dir: str, sys_dir: str | None, proc_dir: str = "/proc"
) -> list[tuple[str, str]]:
    """(source, target) of everything a command's /proc and /sys take from the view: the
    overlaid files this procfs has, and the sysfs files."""
    proc = [(f"{view_dir}/{name}", f"/proc/{name}") for name in present(proc_dir)]
    return proc + sys_binds(sys_dir)


def bind_over(view_dir: str, proc_dir: str, names: list[str]) -> None:
    """Bind view_dir/NAME over proc_dir/NAME for each name, in this mount namespace; on failure
    the binds made are taken off again."""
    done: list[str] = []
    try:
        for name in names:
            syscalls.mount(f"{view_dir}/{name}", f"{proc_dir}/{name}", None, syscalls.MS_BIND)
            done.append(name)
    except OSError:
        unbind(proc_dir, done)
        raise


def unbind(proc_dir: str, names: list[str]) -> None:
    for name in reversed(names):
        with contextlib.suppress(OSError):
            syscalls.umount2(f"{proc_dir}/{name}", syscalls.MNT_DETACH)


def unmount_hybrid(mountpoint: str) -> None:
    """Take the virtualised files off, then the procfs (EBUSY from it is the caller's)."""
    unbind(mountpoint, present(mountpoint))
    syscalls.umount2(mountpoint, 0)


def attach_into(target: int, userns_of: int | None, binds: list[tuple[str, str]]) -> None:
    """Attach each (source, path) of binds, source over path, in the mount namespace of process
    `target` (it and its descendants see them), from a forked process: it joins the user
    namespace of process `userns_of` (None: ours) and copies our mount namespace (where the
    view is), clones each source as a detached mount, joins target's mount namespace and
    attaches them there. LaunchFailed with the step and the kernel's reason when it fails."""
    mnt_fd = os.open(f"/proc/{target}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    user_fd = (
        -1
        if userns_of is None
        else os.open(f"/proc/{userns_of}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    )
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked process, which never returns
            step = "joining the namespace's user namespace"
            try:
                os.close(read_end)
                if user_fd >= 0:
                    syscalls.setns(user_fd, syscalls.CLONE_NEWUSER)
                    step = "copying the mount namespace"
                    syscalls.unshare(syscalls.CLONE_NEWNS)
                step = "cloning the virtualised files"
                fds = [syscalls.open_tree_clone(source) for source, _ in binds]
                step = "joining the namespace's mount namespace"
                syscalls.setns(mnt_fd, syscalls.CLONE_NEWNS)
                for (_, path), fd in zip(binds, fds, strict=True):
                    step = f"attaching {path}"
                    syscalls.move_mount_fd(fd, path)
                os._exit(0)
            except BaseException as err:
                reason = err.strerror if isinstance(err, OSError) else str(err)
                with contextlib.suppress(OSError):
                    os.write(write_end, f"{step}: {reason}".encode()[:1000])
                os._exit(1)
        os.close(write_end)
        write_end = -1
        message = os.read(read_end, 4096).decode(errors="replace")
        _, status = os.waitpid(pid, 0)
    finally:
        for fd in (mnt_fd, user_fd, read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if status != 0:
        raise LaunchFailed(
            f"--virtualize: mounting the virtualised files failed: "
            f"{message or 'the helper process died'}"
        )
