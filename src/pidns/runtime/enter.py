"""Start a command inside an existing PID namespace.

subprocess.Popen does the stdio/cwd/env work. Its preexec hook runs in the forked child, which
joins the namespaces and forks once more, because only a child enters a PID namespace:

    caller ── joiner (joins user?, pid[, mount]; waits) ── command (in the namespace)

Joining a mount namespace with setns also resets the root and cwd to that namespace's root:
outside a chroot that is the tree its processes see, inside one it is the host's. So the command
then enters the root of the member it joined (`/proc/PID/root`, opened before joining, as
`nsenter --root` does) and only then the caller's cwd.

The command returns from the hook into Popen and execs; the joiner waits for it and ends the same
way (same exit code, same signal), so Popen's returncode is the command's. The joiner reports
the command's pid over a pipe and hands over a pidfd for it (SCM_RIGHTS): it is the command's
parent, so the pidfd is taken before anyone could reap the command and free its pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from pidns.errors import CommandNotFound, LaunchFailed, NotExecutable
from pidns.kernel import pidfd, syscalls
from pidns.runtime import report

PROC_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


class Target:
    """How to get in. Either a pidfd of a member (joins its `nstypes` atomically, keeps its
    mount namespace and so its /proc), or an nsfs fd of the PID namespace (with the owning user
    namespace's fd when it must be joined too): then the command gets a private mount namespace
    with a fresh procfs, which the kernel binds to the namespace the mounter lives in."""

    def __init__(
        self,
        *,
        pidfd: int = -1,
        nstypes: int = 0,
        pidns_fd: int = -1,
        userns_fd: int = -1,
        proc_source: str | None = None,
        ignored: frozenset[int] = frozenset(),
        cgroup_fds: tuple[int, ...] = (),
        overlays: tuple[tuple[str, str], ...] = (),
        timens_fd: int = -1,
    ) -> None:
        self.pidfd = pidfd
        self.nstypes = nstypes
        self.pidns_fd = pidns_fd
        self.userns_fd = userns_fd
        self.proc_source = proc_source  # a view of the namespace to bind at /proc, if not a procfs
        self.ignored = ignored  # signals the caller had ignored: the command gets them ignored
        self.cgroup_fds = cgroup_fds  # cgroup.procs files the joiner moves into (a Sandbox's)
        # (source, path): files of a --virtualize view bound over the fresh /proc's (the
        # hybrid) and over /sys's, once /proc is mounted
        self.overlays = overlays
        # the time namespace of the namespace's init, joined after the PID namespace (a
        # `pidns run --virtualize` has one: its clocks, start times and uptime count from 0)
        self.timens_fd = timens_fd

    def open_root(self) -> int:
        """An fd of the root of the member whose mount namespace is joined, or -1."""
        if self.pidfd < 0 or not self.nstypes & syscalls.CLONE_NEWNS:
            return -1
        pid = pidfd.pid_of(self.pidfd)
        return os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def join(self) -> None:
        if self.pidfd >= 0:
            syscalls.setns(self.pidfd, self.nstypes)
            return
        if self.userns_fd >= 0:
            syscalls.setns(self.userns_fd, syscalls.CLONE_NEWUSER)
        syscalls.setns(self.pidns_fd, syscalls.CLONE_NEWPID)
        if self.timens_fd >= 0:
            syscalls.setns(self.timens_fd, syscalls.CLONE_NEWTIME)

    @property
    def mounts_proc(self) -> bool:
        return self.pidfd < 0


class Joined:
    def __init__(self, popen: subprocess.Popen[Any], pid: int, pidfd: int, ns_pid: int) -> None:
        self.popen = popen
        self.pid = pid  # the command's pid in the caller's namespace
        self.ns_pid = ns_pid  # ... and in the namespace it joined
        self.pidfd = pidfd  # the caller owns it


def spawn(argv: Sequence[str], target: Target, **popen_kwargs: Any) -> Joined:
    """Start argv inside target's namespace. Raises CommandNotFound / NotExecutable /
    LaunchFailed (joining or mounting failed)."""
    if not argv:
        from pidns.errors import UsageError

        raise UsageError("no command given")
    cwd = os.fspath(popen_kwargs.pop("cwd", None) or os.getcwd())
    if "preexec_fn" in popen_kwargs:
        raise TypeError("spawn() uses preexec_fn itself")
    try:
        root_fd = target.open_root()
    except OSError as err:
        raise LaunchFailed(f"opening the namespace's root failed: {err.strerror}") from None
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            popen = subprocess.Popen(
                list(argv), preexec_fn=_hook(target, report_w, theirs, cwd, root_fd), **popen_kwargs
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]}: command not found") from None
        except subprocess.SubprocessError:
            os.close(report_w)
            report_w = -1
            raise _failure(report.read_all(report_r)) from None
        except OSError as err:
            raise NotExecutable(f"{argv[0]}: cannot execute: {err.strerror}") from None
        os.close(report_w)
        report_w = -1
        theirs.close()
        records = report.read_all(report_r)
        _, fds, _, _ = socket.recv_fds(mine, 1, 1)
    finally:
        if report_w >= 0:
            os.close(report_w)
        os.close(report_r)
        theirs.close()
        mine.close()
        if root_fd >= 0:
            os.close(root_fd)
    pid = next((int(r.fields[1]) for r in records if r.kind == "child"), None)
    if pid is None or not fds:
        for fd in fds:
            os.close(fd)
        popen.wait()
        raise _failure(records)
    ns_pid = next((int(r.fields[1]) for r in records if r.kind == "nspid"), 0)
    return Joined(popen, pid, fds[0], ns_pid)


def _failure(records: list[report.Record]) -> LaunchFailed:
    for record in records:
        if record.kind == "error":
            step, number = record.fields[1], int(record.fields[2])
            reason = os.strerror(number) if number else record.fields[3]
            if number == errno.ENOMEM:
                reason = "the namespace is dying (its pid 1 has exited)"
            elif step == "making / private" and number == errno.EINVAL:
                reason = NOT_A_MOUNT
            return LaunchFailed(f"{step} failed: {reason}")
    return LaunchFailed("joining the namespace failed")


NOT_A_MOUNT = (
    "/ is not a mount point (a chroot of a plain directory?), so its mounts cannot be made "
    "private: bind-mount the chroot's directory onto itself (mount --bind DIR DIR) before "
    "entering it"
)


def _hook(
    target: Target, report_w: int, sock: socket.socket, cwd: str, root_fd: int
) -> Callable[[], None]:
    def hook() -> None:
        step = "joining the namespace"
        try:
            for fd in target.cgroup_fds:
                step = "joining the cgroup"
                os.write(fd, b"0")
            step = "joining the namespace"
            target.join()
            pid = os.fork()
            if pid == 0:
                for sig in target.ignored:
                    signal.signal(sig, signal.SIG_IGN)
                if root_fd >= 0:
                    step = "entering the namespace's root"
                    os.fchdir(root_fd)
                    os.chroot(".")
                if target.mounts_proc:
                    step = "mounting its /proc"
                    syscalls.unshare(syscalls.CLONE_NEWNS)
                    step = "making / private"
                    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
                    step = "mounting its /proc"
                    if target.proc_source is not None:
                        syscalls.mount(
                            target.proc_source, "/proc", None, syscalls.MS_BIND | syscalls.MS_REC
                        )
                    else:
                        syscalls.mount("proc", "/proc", "proc", PROC_FLAGS)
                    for source, path in target.overlays:
                        step = f"binding the virtualised {path}"
                        syscalls.mount(source, path, None, syscalls.MS_BIND)
                step = f"changing to {cwd}"
                os.chdir(cwd)  # relative to the root entered above
                # Our own number inside, told now: asked later, a short-lived command may
                # already be gone and its number with it.
                report.send(report_w, "nspid", 0, os.getpid())
                return  # on to Popen's exec
        except OSError as err:
            report.send(report_w, "error", 0, step, err.errno or 0, str(err))
            raise
        report.send(report_w, "child", 0, pid)
        socket.send_fds(sock, [b"p"], [os.pidfd_open(pid)])
        _mirror(pid)

    return hook


def _mirror(pid: int) -> None:
    """In the joiner: drop every fd (Popen waits for its pipes to close), wait, end alike."""
    os.closerange(0, 1 << 20)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core of the joiner
        with contextlib.suppress(OSError, ValueError):  # SIGKILL/SIGSTOP refuse a handler
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))
