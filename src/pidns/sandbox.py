"""`pidns.Sandbox`: throwaway nested PID namespaces for a Python program, and processes in them.

with pidns.Sandbox(nest=2) as sb:
    p = sb.spawn(["sleep", "10"], stdout=subprocess.PIPE)
    p.ns_pid, p.pid          # its number inside, its number here
    sb.ps()                  # what the innermost namespace sees
# everything in the namespaces is killed and waited for here
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pidns.ids import HostPid, NsId, NsPid
from pidns.kernel import nsfs, pidfd, syscalls
from pidns.runtime.enter import Joined, Target, spawn
from pidns.runtime.launcher import Launched, launch
from pidns.runtime.spec import Spec

if TYPE_CHECKING:
    from pidns.model import TaskView
    from pidns.names import Reservation
    from pidns.runtime.cgroup import Cgroup, Limits


class Process:
    """A process started in a sandbox; Popen-like, but waited for and signalled by pidfd."""

    def __init__(self, joined: Joined, ns_pid: int, args: Sequence[str]) -> None:
        self._popen = joined.popen
        self.args = list(args)
        self.pid = HostPid(joined.pid)  # in the caller's namespace
        self.ns_pid = NsPid(ns_pid)  # in the sandbox's innermost namespace
        self._fd = joined.pidfd
        self.stdin: IO[Any] | None = self._popen.stdin
        self.stdout: IO[Any] | None = self._popen.stdout
        self.stderr: IO[Any] | None = self._popen.stderr

    @property
    def returncode(self) -> int | None:
        """Exit code; -N when signal N killed it; None while it runs."""
        return self.poll()

    def poll(self) -> int | None:
        if self._popen.returncode is None and self._fd >= 0 and not pidfd.exited(self._fd):
            return None
        return self._finish()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (subprocess.TimeoutExpired when timeout runs out first)."""
        done = self._popen.returncode is not None or self._fd < 0
        if not done and not pidfd.wait_exit(self._fd, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._finish()

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        out = self._popen.communicate(input, timeout)
        self._finish()
        return out

    def send_signal(self, sig: int) -> None:
        """Signal the process (nothing once it has exited: the pidfd never hits a reused pid)."""
        if self._fd >= 0:
            with contextlib.suppress(ProcessLookupError):
                pidfd.send_signal(self._fd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _finish(self) -> int:
        # The process that joined the namespace for it ends right after it, the same way.
        code = self._popen.wait()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        return code

    def __repr__(self) -> str:
        return f"<pidns.Process pid={self.pid} ns_pid={self.ns_pid} args={self.args!r}>"


class Sandbox:
    """`nest` new nested PID namespaces (each with its own /proc and init), held open until the
    block ends; then everything in them is killed and waited for.

    With die_with_parent (the default) the namespaces also die when the thread that entered the
    sandbox exits (that is how PR_SET_PDEATHSIG works). Rootless when not root (user=None).

    memory ("64M" or bytes), memory_swap (memory + swap, at least memory), cpus, cpuset
    ("0-1"), pids_max: a cgroup of the sandbox's own with those limits, removed at close;
    virtualize: that cgroup even without limits, /proc inside shows it (meminfo, cpuinfo, stat,
    uptime, …), so does /sys/devices/system/cpu/online (os.cpu_count()), and a time namespace born with the sandbox makes uptime, sysinfo(2) and
    CLOCK_BOOTTIME count from its birth (as `pidns run`); cpus_from_quota (with virtualize): as
    many CPUs as the cpus quota lets run at once.
    """

    def __init__(
        self,
        nest: int = 1,
        name: str | None = None,
        *,
        user: bool | None = None,
        die_with_parent: bool = True,
        memory: str | int | None = None,
        cpus: float | None = None,
        cpuset: str | None = None,
        pids_max: int | None = None,
        virtualize: bool = False,
        memory_swap: str | int | None = None,
        cpus_from_quota: bool = False,
    ) -> None:
        if cpus_from_quota and not virtualize:
            from pidns.errors import UsageError

            raise UsageError("cpus_from_quota needs virtualize")
        self.spec = Spec(
            None, nest=nest, user=user, die_with_parent=die_with_parent, timens=virtualize
        )
        self.virtualize = virtualize
        self.cpus_from_quota = cpus_from_quota
        self.limits: Limits | None = None
        if virtualize or any(v is not None for v in (memory, memory_swap, cpus, cpuset, pids_max)):
            from pidns.runtime.cgroup import parse_limits

            self.limits = parse_limits(
                None if memory is None else str(memory),
                cpus,
                cpuset,
                pids_max,
                memory_swap=None if memory_swap is None else str(memory_swap),
            )
        self._cgroup: Cgroup | None = None
        self.name = name
        self._launched: Launched | None = None
        self._reservation: Reservation | None = None
        self._ns_fd = -1
        self._processes: list[Process] = []

    # -- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._launched is not None:
            return
        if self.name is not None:
            from pidns.names import Registry

            self._reservation = Registry().reserve(self.name)
        try:
            if self.limits is not None:
                self._launch_in_cgroup(self.limits)
            else:
                self._launched = launch(self.spec)
            assert self._launched is not None
            if self.virtualize:
                from pidns.runtime.run import virtualize_proc

                virtualize_proc(self._launched, self.spec, self.cpus_from_quota)
            self._launched.start()
            self._ns_fd = nsfs.open_ns(f"/proc/{self._launched.inits[-1]}/ns/pid")
            if self._reservation is not None:
                self._reservation.commit(
                    self._launched.inits[-1], [ino for _, ino in self._launched.namespaces]
                )
        except BaseException:
            self.close()
            raise

    def _launch_in_cgroup(self, limits: Limits) -> None:
        from pidns.runtime.cgroup import create

        self._cgroup = create(limits)
        self.spec.cgroup_fds = self._cgroup.open_procs()
        try:
            self._launched = launch(self.spec)
        finally:
            for fd in self.spec.cgroup_fds:
                os.close(fd)
            self.spec.cgroup_fds = ()

    @property
    def cgroup(self) -> dict[str, str]:
        """The sandbox's own cgroup directories, by controller ('unified': the v2 one); {} when
        it has none (no limits, no virtualize)."""
        return {} if self._cgroup is None else self._cgroup.paths()

    def close(self) -> None:
        """Kill everything in the namespaces and wait until it is gone."""
        launched, self._launched = self._launched, None
        if launched is not None:
            launched.kill()
            launched.wait()
        for process in self._processes:
            process._finish()
        self._processes.clear()
        if self._ns_fd >= 0:
            os.close(self._ns_fd)
            self._ns_fd = -1
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    def _running(self) -> Launched:
        if self._launched is None:
            raise RuntimeError("the sandbox is not running (use it in a with block)")
        return self._launched

    # -- what it is --------------------------------------------------------------------------

    @property
    def namespaces(self) -> list[NsId]:
        """Each level's namespace, outermost first."""
        return [NsId(dev, ino) for dev, ino in self._running().namespaces]

    @property
    def ns(self) -> NsId:
        """The innermost namespace: where spawn() starts processes."""
        return self.namespaces[-1]

    @property
    def init_pids(self) -> list[HostPid]:
        """Each level's pid 1, in the caller's numbering."""
        return [HostPid(pid) for pid in self._running().inits]

    # -- using it ----------------------------------------------------------------------------

    def spawn(self, argv: Sequence[str], **popen_kwargs: Any) -> Process:
        """Start argv in the innermost namespace (its mount namespace too, so /proc is its own;
        its cgroup too, when it has one).
        Takes subprocess.Popen's keyword arguments (stdin, stdout, cwd, env, text, ...)."""
        launched = self._running()
        types = syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNS
        if self.spec.timens:  # the sandbox's clocks (virtualize), as its init has them
            types |= syscalls.CLONE_NEWTIME
        if self.spec.uses_userns(os.geteuid()):
            types |= syscalls.CLONE_NEWUSER
        fds = () if self._cgroup is None else self._cgroup.open_procs()
        try:
            target = Target(pidfd=launched.inner_fd, nstypes=types, cgroup_fds=fds)
            joined = spawn(argv, target, **popen_kwargs)
        finally:
            for fd in fds:
                os.close(fd)
        process = Process(joined, joined.ns_pid, argv)
        self._processes.append(process)
        return process

    def ps(self) -> list[TaskView]:
        """Every task the innermost namespace sees, numbered as it sees them."""
        from pidns.procfs.snapshot import snapshot

        snap = snapshot()
        ns = snap.by_ino(self.ns.ino)
        return [] if ns is None else snap.views(ns)

    def strays(self) -> list[TaskView]:
        """Tasks in the innermost namespace other than its init."""
        init = self._running().inits[-1]
        return [v for v in self.ps() if v.task.host_pid != init]
