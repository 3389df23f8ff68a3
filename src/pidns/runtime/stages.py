"""What each forked process of a launch does. Everything here runs in a child and never returns.

  helper (level 0)   stays in the caller's namespaces: unshare PID [+USER, TIME], fork, wait
                     (only when the launcher cannot fork level 1 itself: see launcher.py)
  level i >= 1       pid 1 of level i: own mount namespace, fresh /proc, then the next level
                     (unshare PID + fork) or the command, then the init loop
  command            own process group, the caller's signal mask, exec

A failing step is reported as an `error` record and the process exits with 125 (126/127 for exec).
"""

from __future__ import annotations

import errno
import gc
import os

from pidns.kernel import pidfd, syscalls
from pidns.runtime import report
from pidns.runtime.init import FORWARDED, exit_code, serve

TYPE_CHECKING = False  # importing typing would slow down pidns run
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Iterator
    from typing import NoReturn

    from pidns.runtime.spec import Spec
else:
    import _signal as signal  # signal's enums cost more to import than a launch spends

PROC_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


class Chain:
    """State the forked processes of one launch share (copied into each by fork)."""

    def __init__(
        self,
        spec: Spec,
        *,
        mask: set[int],
        foreground: bool,
        err_w: int,
        status_w: int,
        go_r: int,
        parent_ends: tuple[int, ...],
    ) -> None:
        self.spec = spec
        self.userns = spec.uses_userns(os.geteuid())
        # what the helper maps the caller's ids with, in its user namespace: imported before
        # the fork (see the spawn below), and only then
        self.map_ids: Callable[[int, int], None] | None = None
        if self.userns:
            from pidns.runtime.userns import map_to_root

            self.map_ids = map_to_root
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.mask = mask  # the caller's signal mask, restored for the command
        self.foreground = foreground  # the caller owns the terminal: hand it to the command
        self.err_w = err_w
        self.status_w = status_w
        self.go_r = go_r  # the command waits on it for Launched.start()
        self.parent_ends = parent_ends  # the launcher's ends of the pipes: closed in each child
        # The innermost init starts the command once Launched.start() says so, with posix_spawn
        # (no copy of this process's memory). It is forked instead, to wait for the start
        # itself, when it must take the terminal first (tcsetpgrp, which posix_spawn can't do)
        # or the launcher must learn its host pid (translated while it can't have ended).
        self.spawns_command = (
            spec.init and spec.argv is not None and not foreground and not spec.command_pid
        )
        # Its spawn is made ready here, before the fork: each page of the launcher's memory the
        # forked init touches it copies (microseconds each), and the search of PATH and the
        # spawn's setup, done there, took it twice as long as here.
        self.spawn: syscalls.Spawn | None = None
        self.candidates: list[str] = []
        if self.spawns_command and spec.argv is not None:
            try:
                self.spawn = _command_spawn(spec.argv, spec.ignored, mask)
                self.candidates = _candidates(spec.argv)
            except ValueError as err:  # an argument the file system's encoding can't encode
                from pidns.errors import NotExecutable

                raise NotExecutable(f"{spec.argv[0]}: cannot execute: {err}") from None
        self.step = "start"

    def helper(self, launcher: int) -> NoReturn:
        try:
            self._enter_child()
            if self.spec.die_with_parent:
                syscalls.set_pdeathsig(signal.SIGKILL)
                if os.getppid() != launcher:
                    os._exit(125)
            if self.userns:
                self.step = "userns"
                syscalls.unshare(syscalls.CLONE_NEWUSER)
                self.step = "userns-map"
                assert self.map_ids is not None
                self.map_ids(self.uid, self.gid)
            if self.spec.timens:
                self.step = "timens"
                _new_time_namespace()
            self.step = "pidns"
            syscalls.unshare(syscalls.CLONE_NEWPID)
            self.step = "fork"
            me = pidfd.open_pid(os.getpid())
            pid = os.fork()
            if pid == 0:
                self.level(1, me)
            os.close(me)
            for fd in self.spec.cgroup_fds:  # the init joins with them; here they are done
                os.close(fd)
            self._forked(0, pid)
            _, status = os.waitpid(pid, 0)
            self._record_exit(0, status)
            os._exit(exit_code(status))
        except BaseException as err:
            self._fail(0, err)

    def first_level(self, parent_fd: int) -> NoReturn:
        """Level 1 forked by the launcher itself (no helper); parent_fd: the launcher's pidfd."""
        try:
            self._enter_child()
        except BaseException as err:
            self._fail(1, err)
        self.level(1, parent_fd)

    def level(self, level: int, parent_fd: int) -> NoReturn:
        try:
            if parent_fd >= 0:
                # The process outside may have died before the line above could take effect.
                syscalls.set_pdeathsig(signal.SIGKILL)
                if pidfd.exited(parent_fd):
                    os._exit(125)
                os.close(parent_fd)
            if self.spec.cgroup_fds and level == 1:
                self.step = "cgroup"  # before anything is forked: every descendant is inside
                for fd in self.spec.cgroup_fds:
                    os.write(fd, b"0")
                    os.close(fd)
            self.step = "mountns"
            syscalls.unshare(syscalls.CLONE_NEWNS)
            self.step = "mount-private"
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            self.step = "mount-proc"
            syscalls.mount("proc", "/proc", "proc", PROC_FLAGS)
            _set_comm("pidns-init")
            spec = self.spec
            if level < spec.nest:
                self.step = "pidns"
                syscalls.unshare(syscalls.CLONE_NEWPID)
                self.step = "fork"
                pid = os.fork()
                if pid == 0:
                    self.level(level + 1, -1)
                self._forked(level, pid)
                self._serve(level, pid, to_group=False)
            if spec.argv is None:
                report.send(self.err_w, "ready", level)
                self._forked(level, None)
                self._serve(level, None, to_group=False)
            if not spec.init:
                self.command(level)
            if self.spawns_command:
                report.send(self.err_w, "ready", level)
                if self.go_r >= 0 and os.read(self.go_r, 1) != b"g":
                    os._exit(125)  # the launcher gave up before the start
                self.step = "exec"
                pid = self._spawn()
                self._forked(level, None)
                self._serve(level, pid, to_group=spec.to_group)
            self.step = "fork"
            pid = os.fork()
            if pid == 0:
                self.command(level)
            report.send(self.err_w, "child", level, pid)
            report.send(self.err_w, "ready", level)
            self._forked(level, None)
            self._serve(level, pid, to_group=spec.to_group)
        except BaseException as err:
            if self.step == "exec":  # _spawn
                self._fail(level, err, _exec_failure(getattr(err, "errno", None)))
            self._fail(level, err)

    def _spawn(self) -> int:
        """Start the command as command() would have exec'd it (see _command_spawn)."""
        argv = self.spec.argv
        assert argv is not None and self.spawn is not None
        for sig in self.spec.ignored:  # they are blocked here: taken by sigwaitinfo all the same
            signal.signal(sig, signal.SIG_IGN)
        return _spawnvp(self.spawn, argv, self.candidates)

    def command(self, level: int) -> NoReturn:
        argv = self.spec.argv
        assert argv is not None
        try:
            self.step = "exec"
            os.setpgid(0, 0)
            if self.foreground:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
                try:  # noqa: SIM105 - contextlib costs pidns run an import
                    os.tcsetpgrp(0, os.getpgrp())
                except OSError:
                    pass
            for sig in FORWARDED:  # the launcher's handlers go; what the caller ignored stays
                if sig in self.spec.ignored:
                    signal.signal(sig, signal.SIG_IGN)
                elif callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores these two
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            if not self.spec.init:
                report.send(self.err_w, "ready", level)
            if self.go_r >= 0 and os.read(self.go_r, 1) != b"g":
                os._exit(125)  # the launcher gave up before the start
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
            _execvp(argv)
        except BaseException as err:
            self._fail(level, err, _exec_failure(getattr(err, "errno", None)))

    # -- plumbing --------------------------------------------------------------------------

    def _enter_child(self) -> None:
        gc.disable()  # a collection would touch (and so copy) every page shared with the launcher
        for fd in self.parent_ends:
            os.close(fd)

    def _forked(self, level: int, pid: int | None) -> None:
        """After forking: report the child, drop the fds only the child's side needs."""
        if pid is not None:
            report.send(self.err_w, "child", level, pid)
        os.close(self.err_w)
        if self.go_r >= 0:
            os.close(self.go_r)
        if not self.spec.waits_for_command(level):
            os.close(self.status_w)

    def _record_exit(self, level: int, status: int) -> None:
        if self.spec.waits_for_command(level):
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            os.write(self.status_w, f"exit\t{exit_code(status)}\t{sig}\n".encode())

    def _serve(self, level: int, child: int | None, to_group: bool) -> NoReturn:
        status_fd = self.status_w if self.spec.waits_for_command(level) else None
        serve(child, to_group=to_group, kill_timeout=self.spec.kill_timeout, status_fd=status_fd)

    def _fail(self, level: int, err: BaseException, code: int = 125) -> NoReturn:
        try:
            number = err.errno if isinstance(err, OSError) and err.errno else 0
            what = self.spec.argv[0] if self.step == "exec" and self.spec.argv else str(err)
            report.send(self.err_w, "error", level, self.step, number, what)
        finally:
            os._exit(code)


def _new_time_namespace() -> None:
    """unshare a time namespace whose CLOCK_BOOTTIME and CLOCK_MONOTONIC start near 0: its
    offsets are written before any process is in it (the children of this one will be), so
    /proc/uptime, sysinfo(2) and /proc/stat's btime count from the namespace's birth. Both
    clocks move by the same amount: boottime less monotonic (time suspended) stays the host's."""
    import time

    syscalls.unshare(syscalls.CLONE_NEWTIME)
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000_000
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000_000
    shift = min(boot, mono)
    fd = os.open("/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"monotonic {-shift} 0\nboottime {-shift} 0\n".encode())
    finally:
        os.close(fd)


def _set_comm(name: str) -> None:
    """Name this process in ps (the command inherits nothing of it: exec renames)."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, name.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _exec_failure(code: int | None) -> int:
    return 127 if code in (errno.ENOENT, errno.ENOTDIR) else 126


def _search(argv: tuple[str, ...]) -> Iterator[str]:
    """The paths a shell tries for argv[0], in order (os.get_exec_path() as it reads os.environ,
    without the warnings import it costs each launch)."""
    path = os.environ.get("PATH")
    for directory in (os.defpath if path is None else path).split(os.pathsep):
        yield os.path.join(directory, argv[0])


def _missing(err: OSError, path: str) -> bool:
    """Whether a failed start of path means "not there" (try the next), not a verdict on it."""
    return err.errno in (errno.ENOENT, errno.ENOTDIR) or (
        err.errno == errno.EACCES and not os.path.exists(path)
    )


def _command_spawn(
    argv: tuple[str, ...], ignored: frozenset[int], mask: set[int]
) -> syscalls.Spawn:
    """The command's spawn: own process group, the caller's signal mask, the signals the caller
    ignored ignored (the init sets them so before it starts it), the others at default."""
    defaults: list[int] = [sig for sig in FORWARDED if sig not in ignored]
    defaults += (signal.SIGPIPE, signal.SIGXFSZ)  # Python ignores these two
    defaults += range(32, signal.SIGRTMIN)  # and glibc's spawn, its own (SIGCANCEL, ...)
    return syscalls.Spawn(argv, pgroup=0, sigmask=mask, sigdefault=defaults)


def _candidates(argv: tuple[str, ...]) -> list[str]:
    """The paths _spawnvp tries for argv[0] (a name without '/'), in order: _execvp's search,
    less the candidates stat says are not there (or are behind a directory we may not
    search), which it would skip."""
    if "/" in argv[0]:
        return []
    found = []
    for path in _search(argv):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                continue
        found.append(path)
    return found


def _spawnvp(spawn: syscalls.Spawn, argv: tuple[str, ...], candidates: list[str]) -> int:
    """spawn started as _execvp would exec argv: the first candidate that is there."""
    if "/" in argv[0]:
        return spawn.start(argv[0])
    denied: OSError | None = None
    for path in candidates:
        try:
            return spawn.start(path)
        except OSError as err:
            if not _missing(err, path) and denied is None:
                denied = err
    raise denied or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])


def _execvp(argv: tuple[str, ...]) -> NoReturn:
    """execvp with a shell's verdicts: a PATH directory we may not search is skipped (Python's
    execvp would report its EACCES as "permission denied" for a command that isn't there)."""
    if "/" in argv[0]:
        os.execv(argv[0], argv)
    denied: OSError | None = None
    for path in _search(argv):
        try:
            os.execv(path, argv)
        except OSError as err:
            if not _missing(err, path) and denied is None:
                denied = err
    raise denied or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
