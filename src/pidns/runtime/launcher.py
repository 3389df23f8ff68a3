"""Create nested PID namespaces and start a command in the innermost one.

unshare → fork → mount proc → init, once per level; see stages.py for what each forked process
does. For --nest 2 (host pids from the caller's view):

    caller ── init of L1 ── init of L2 ── command
              (pid 1, own mount ns    (pid 1, own mount ns
              and /proc of L1)        and /proc of L2)

When the caller may create the PID namespace itself and set its own pid_for_children back
after forking (root, no user or time namespace asked for, the levels die with it), it forks
L1's init directly. Else a helper does it, staying in the caller's namespaces: it unshares
USER/TIME/PID, forks, waits:

    caller ── helper ── init of L1 ── ...

The caller's own namespaces never change. Stages report over a pipe; a failure comes back as a
pidns error (LaunchFailed, 125; NotExecutable, 126; CommandNotFound, 127).
"""

from __future__ import annotations

import errno
import os

from pidns.kernel import nsfs, pidfd, syscalls
from pidns.runtime import report
from pidns.runtime.init import WAITED, exit_code
from pidns.runtime.spec import MAX_NEST, Spec
from pidns.runtime.stages import Chain

# pidns run is measured against `python -c pass`: neither signal's enums nor contextlib (with
# collections and functools) are imported on its path, whence the try/except blocks below;
# pidns.errors only when there is one to raise.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal


class Outcome:
    __slots__ = ("code", "signal")

    def __init__(self, code: int, sig: int) -> None:
        self.code = code  # the command's exit code, or 128+N when signal N killed it
        self.signal = sig  # N, or 0 when it exited

    def __repr__(self) -> str:
        return f"Outcome(code={self.code}, signal={self.signal})"


class Launched:
    """A running launch: the processes and namespaces it made, outermost level first.

    Pids are numbered in the caller's namespace; namespaces are (st_dev, st_ino) pairs.
    """

    def __init__(
        self,
        spec: Spec,
        helper: int,
        inits: list[int],
        namespaces: list[tuple[int, int]],
        command: int | None,
        fds: tuple[int, int, int],
        reader: report.Reader,
        status_r: int,
        go_w: int,
    ) -> None:
        self.spec = spec
        self.helper = helper  # the caller's child: the helper, or L1's init without one
        self.inits = inits  # pid 1 of each level (the command itself, last, with --no-init)
        self.namespaces = namespaces
        self.command = command  # its host pid: None when spawned at the start (see Spec)
        # pidfds: the helper; the outermost init (signals go there); the innermost pid 1
        self.helper_fd, self.outer_fd, self.inner_fd = fds
        self._reader = reader
        self._status_r = status_r
        self._go_w = go_w
        self._outcome: Outcome | None = None

    def start(self) -> None:
        """Let the command run (after a held launch) and wait until it has been executed."""
        if self._go_w >= 0:
            # Nobody reads it without a command, or when the command's stage died: then EPIPE.
            try:  # noqa: SIM105
                os.write(self._go_w, b"g")
            except BrokenPipeError:
                pass
            os.close(self._go_w)
            self._go_w = -1
        while (record := self._reader.next()) is not None:
            if record.kind == "error":
                self.kill()
                self.wait()
                raise _failure(record)

    def wait(self) -> Outcome:
        """Wait for the namespace's end; how the command ended."""
        if self._outcome is None:
            _, status = os.waitpid(self.helper, 0)
            sig = 0
            if self.helper == self.inits[0] and self.spec.waits_for_command(0):
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0  # --no-init's child
            for record in report.read_all(self._status_r):
                if record.kind == "exit":
                    sig = int(record.fields[1])
            self._outcome = Outcome(exit_code(status), sig)
            self.close()
        return self._outcome

    def poll(self) -> Outcome | None:
        if self._outcome is None and not pidfd.exited(self.helper_fd):
            return None
        return self.wait()

    def send_signal(self, sig: int) -> None:
        """Signal the outermost init (it forwards to the command); nothing if it is gone."""
        if self.outer_fd >= 0:
            try:  # noqa: SIM105
                pidfd.send_signal(self.outer_fd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the outermost init: the kernel kills everything in every level."""
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self._go_w >= 0:  # the command never started: dropping the pipe makes it give up
            os.close(self._go_w)
            self._go_w = -1
        for fd in (self.helper_fd, self.outer_fd, self.inner_fd, self._status_r):
            if fd >= 0:
                os.close(fd)
        self.helper_fd = self.outer_fd = self.inner_fd = self._status_r = -1
        if self._reader.fd >= 0:
            os.close(self._reader.fd)
            self._reader.fd = -1


def launch(spec: Spec) -> Launched:
    """Create the namespaces and everything up to the command, which waits for
    Launched.start(): until then every pid 1 is alive, so their pids can be translated and a
    name registered before the command can run (or end)."""
    if spec.nest < 1 or (spec.argv is not None and not spec.argv):
        from pidns.errors import UsageError

        if spec.nest < 1:
            raise UsageError(f"--nest must be at least 1 (got {spec.nest})")
        raise UsageError("no command given (put it after '--')")
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    # The forked processes start with the forwarded signals blocked (init.py takes them with
    # sigwaitinfo); the command gets the caller's mask back.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    launcher = os.getpid()
    first: dict[int, int] = {}  # what the stages report, known here without a helper
    own = -1
    try:
        chain = Chain(
            spec,
            mask=mask,
            foreground=foreground(),
            err_w=err_w,
            status_w=status_w,
            go_r=go_r,
            parent_ends=tuple(fd for fd in (err_r, status_r, go_w) if fd >= 0),
        )
        own = _own_pid_for_children(spec)
        if own >= 0:
            pid = _fork_first_level(chain, own)
            first[0] = pid
        else:
            pid = os.fork()
            if pid == 0:
                chain.helper(launcher)
    except BaseException:
        for fd in (err_r, status_r, go_w):
            os.close(fd)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (err_w, status_w, go_r, own):
            if fd >= 0:
                os.close(fd)
    reader = report.Reader(err_r)
    try:
        forked = spec.init and spec.argv is not None and not chain.spawns_command
        children, failure = _collect(reader, spec.nest + int(forked), first)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if failure is not None or children is None:
        os.kill(pid, signal.SIGKILL)  # its death takes the levels below with it
        os.waitpid(pid, 0)
        for fd in (err_r, status_r, go_w):
            if fd >= 0:
                os.close(fd)
        if failure is not None:
            raise _failure(failure)
        from pidns.errors import LaunchFailed

        raise LaunchFailed("the namespace's processes ended before the command could start")
    try:
        return _describe(spec, pid, children, reader, status_r, go_w)
    except OSError as err:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (err_r, status_r, go_w):
            os.close(fd)
        from pidns.errors import LaunchFailed

        raise LaunchFailed(f"the new namespace vanished while starting: {err.strerror}") from None


def _own_pid_for_children(spec: Spec) -> int:
    """An fd of this thread's pid_for_children namespace when it may fork L1's init itself
    (create a PID namespace, then set pid_for_children back: setns to it is tried here), or -1:
    then a helper is forked, which also makes any user or time namespace."""
    if spec.uses_userns(os.geteuid()) or spec.timens or not spec.die_with_parent:
        return -1  # (a helper outliving the caller is the init's parent, and reaps it)
    try:
        fd = os.open("/proc/thread-self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWPID)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _fork_first_level(chain: Chain, own: int) -> int:
    """Fork L1's init into a new PID namespace; this thread's pid_for_children is `own` again
    after. The caller has blocked the signals the init waits for."""
    parent_fd = pidfd.open_pid(os.getpid())  # the init dies with the caller
    try:
        try:
            syscalls.unshare(syscalls.CLONE_NEWPID)
        except OSError as err:
            raise _failure(report.Record("error", ("0", "pidns", str(err.errno), ""))) from None
        try:
            pid = os.fork()
        except OSError as err:
            syscalls.setns(own, syscalls.CLONE_NEWPID)
            from pidns.errors import LaunchFailed

            raise LaunchFailed(f"forking failed: {err.strerror}") from None
        if pid == 0:
            chain.first_level(parent_fd)
        try:
            syscalls.setns(own, syscalls.CLONE_NEWPID)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
    finally:
        if parent_fd >= 0:
            os.close(parent_fd)
    return pid


def _collect(
    reader: report.Reader, expected: int, children: dict[int, int]
) -> tuple[dict[int, int] | None, report.Record | None]:
    """Read records until every stage has reported `expected` children (None: the pipe
    closed first)."""
    ready = False
    while not (ready and len(children) == expected):
        record = reader.next()
        if record is None:
            return None, None
        if record.kind == "error":
            return None, record
        if record.kind == "child":
            children[int(record.fields[0])] = int(record.fields[1])
        elif record.kind == "ready":
            ready = True
    return children, None


def _describe(
    spec: Spec,
    helper: int,
    children: dict[int, int],
    reader: report.Reader,
    status_r: int,
    go_w: int,
) -> Launched:
    """Translate each stage's child pid (numbered in the stage's namespace) to the caller's."""
    helper_fd = pidfd.open_pid(helper)
    inits = [children[0]]
    outer_fd = pidfd.open_pid(inits[0])
    namespaces: list[tuple[int, int]] = []
    command: int | None = None
    for level in range(1, spec.nest + 1):
        ns_fd = nsfs.open_ns(f"/proc/{inits[-1]}/ns/pid")
        try:
            st = os.fstat(ns_fd)
            namespaces.append((st.st_dev, st.st_ino))
            below = children.get(level)
            if below is None:
                continue
            host = nsfs.pid_from_pidns(ns_fd, below)
            if level < spec.nest:
                inits.append(host)
            else:
                command = host
        finally:
            os.close(ns_fd)
    if not spec.init and spec.argv is not None:
        command = inits[-1]
    inner_fd = os.dup(outer_fd) if len(inits) == 1 else pidfd.open_pid(inits[-1])
    return Launched(
        spec,
        helper,
        inits,
        namespaces,
        command,
        (helper_fd, outer_fd, inner_fd),
        reader,
        status_r,
        go_w,
    )


def foreground() -> bool:
    """Whether this process's group owns the terminal on stdin."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


_STEPS = {
    "pidns": "creating a PID namespace",
    "mountns": "creating a mount namespace",
    "mount-private": "making the new mount namespace's mounts private",
    "mount-proc": "mounting /proc",
    "userns-map": "mapping the caller's uid/gid in the user namespace",
    "fork": "forking",
    "cgroup": "joining the run's cgroup",
    "timens": "creating a time namespace",
}


def _failure(record: report.Record) -> Exception:
    from pidns.errors import CommandNotFound, LaunchFailed, NotExecutable

    level, step, number, what = (
        record.fields[0],
        record.fields[1],
        int(record.fields[2]),
        record.fields[3],
    )
    if step == "exec":
        if number in (errno.ENOENT, errno.ENOTDIR):
            return CommandNotFound(f"{what}: command not found")
        return NotExecutable(
            f"{what}: cannot execute: {os.strerror(number) if number else 'failed'}"
        )
    if step == "userns":
        from pidns.runtime.userns import why_unavailable

        return LaunchFailed(why_unavailable(number))
    action = _STEPS.get(step, step)
    where = f" (level {level})" if level != "0" else ""
    reason = os.strerror(number) if number else what
    hint = ""
    if step == "pidns" and number == errno.EPERM:
        hint = (
            ": needs CAP_SYS_ADMIN (run as root, or let pidns use a user namespace: drop --no-user)"
        )
    elif step == "pidns" and number == errno.ENOSPC:
        hint = f": too deeply nested (the kernel allows {MAX_NEST} levels below the initial namespace; see also user.max_pid_namespaces)"
    elif step == "mount-private" and number == errno.EINVAL:
        from pidns.runtime.enter import NOT_A_MOUNT

        reason, hint = NOT_A_MOUNT, ""
    elif step == "mount-proc" and number == errno.EPERM:
        hint = ": refused (in a user namespace the kernel mounts proc only where /proc is fully visible, with nothing mounted over its files)"
    return LaunchFailed(f"{action}{where} failed: {reason}{hint}")
