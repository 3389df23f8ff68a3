"""`pidns run` as a function: launch, name, report status, forward signals, wait."""

from __future__ import annotations

import os
import sys

from pidns.runtime.forward import Forwarder
from pidns.runtime.init import FORWARDED
from pidns.runtime.launcher import Launched, launch
from pidns.runtime.launcher import foreground as _foreground
from pidns.runtime.spec import Spec

# typing costs more to import than pidns run spends starting; so do signal's enums, and
# contextlib (with collections and functools), hence the try/except blocks below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Sequence
    from typing import IO
else:
    import _signal as signal


def run(
    argv: Sequence[str],
    *,
    nest: int = 1,
    user: bool | None = None,
    init: bool = True,
    forward_to: str = "child",
    kill_timeout: float = 2.0,
    die_with_parent: bool = True,
    name: str | None = None,
    status_json: str | None = None,
    view: str | None = None,
    view_backend: str = "auto",
    memory: str | None = None,
    cpus: str | float | None = None,
    cpuset: str | None = None,
    pids_max: str | int | None = None,
    virtualize: bool = False,
    memory_swap: str | None = None,
    cpus_from_quota: bool = False,
) -> int:
    """Run argv in `nest` new nested PID namespaces and return its exit status (128+N when
    killed by signal N). Raises a PidnsError when the command could not be started
    (LaunchFailed 125, NotExecutable 126, CommandNotFound 127) or the input is wrong.
    Signals are forwarded when called from the main thread. With `view`, the innermost
    namespace's proc tree is mounted there (see `pidns mount`) before the command starts and
    unmounted after; it also goes when the namespace's init dies.

    memory ("64M"), memory_swap (memory + swap, "96M"), cpus (0.5), cpuset ("0-1"), pids_max:
    the namespaces get a cgroup of their own with those limits (runtime/cgroup.py), removed
    after. virtualize: that cgroup even without limits, the command's /proc shows it (meminfo,
    cpuinfo, stat, uptime, … from a FUSE view, bound over the kernel's procfs), so does
    /sys/devices/system/cpu/online (os.cpu_count(), get_nprocs), and the levels
    live in a new time namespace (uptime, sysinfo(2), CLOCK_BOOTTIME, btime count from its
    birth); cpus_from_quota (with virtualize): cpuinfo and stat show as many CPUs as the CFS
    quota lets run at once."""
    if forward_to not in ("child", "group"):
        from pidns.errors import UsageError

        raise UsageError(f"forward_to must be 'child' or 'group', not {forward_to!r}")
    if cpus_from_quota and not virtualize:
        from pidns.errors import UsageError

        raise UsageError("--cpus-from-quota needs --virtualize")
    limits = None
    if virtualize or any(v is not None for v in (memory, memory_swap, cpus, cpuset, pids_max)):
        from pidns.runtime.cgroup import parse_limits

        # nonsense: UsageError, before anything is made
        limits = parse_limits(memory, cpus, cpuset, pids_max, memory_swap=memory_swap)
    spec = Spec(
        tuple(argv),
        nest=nest,
        user=user,
        init=init,
        to_group=forward_to == "group",
        kill_timeout=kill_timeout,
        die_with_parent=die_with_parent,
        timens=virtualize,
        command_pid=status_json is not None,
    )
    reservation = None
    if name is not None:
        from pidns.errors import LaunchFailed, PidnsError, UsageError
        from pidns.names import Registry

        try:
            reservation = Registry().reserve(name)
        except (LaunchFailed, UsageError):
            raise
        except PidnsError as err:  # the names directory is unusable: before the command (125)
            raise LaunchFailed(str(err)) from None
    status = _open_status(status_json) if status_json is not None else None
    foreground = _foreground()
    forwarder: Forwarder | None = None
    try:
        forwarder = Forwarder(FORWARDED)
        spec.ignored = forwarder.ignored
    except ValueError:  # not the main thread: signals stay where they are
        pass
    launched: Launched | None = None
    mounted: _View | None = None
    cgroup = None
    try:
        if limits is not None:
            from pidns.runtime.cgroup import create

            cgroup = create(limits)
            spec.cgroup_fds = cgroup.open_procs()
            try:
                launched = launch(spec)
            finally:
                for fd in spec.cgroup_fds:
                    os.close(fd)
                spec.cgroup_fds = ()
        else:
            launched = launch(spec)
        if reservation is not None:
            try:
                reservation.commit(launched.inits[-1], [ino for _, ino in launched.namespaces])
            except BaseException:
                launched.kill()
                launched.wait()
                raise
        if view is not None:
            try:
                mounted = _View(launched.inits[-1], view, view_backend)
            except BaseException:
                launched.kill()
                launched.wait()
                raise
        if virtualize:
            try:
                virtualize_proc(launched, spec, cpus_from_quota)
            except BaseException:
                launched.kill()
                launched.wait()
                raise
        if forwarder is not None:
            forwarder.attach(launched.send_signal)
        launched.start()
        if status is not None:
            _emit(
                status,
                {
                    "event": "start",
                    "host_pid": launched.command,
                    "ns": [ino for _, ino in launched.namespaces],
                    "inits": launched.inits,
                    "name": name,
                },
            )
        outcome = launched.wait()
        if status is not None:
            _emit(status, {"event": "exit", "exit_code": outcome.code, "signal": outcome.signal})
        return outcome.code
    finally:
        if forwarder is not None:
            forwarder.restore()
        if cgroup is not None and launched is not None and launched.poll() is None:
            launched.kill()  # an error between launch and wait: nothing may outlive the cgroup
            launched.wait()
        if launched is not None:
            launched.close()
        if cgroup is not None:
            cgroup.remove()
        if mounted is not None:
            mounted.close()
        if reservation is not None:
            reservation.release()
        if status is not None and status is not sys.stdout:
            try:  # noqa: SIM105
                status.close()
            except BrokenPipeError:
                pass
        if foreground:
            _reclaim_terminal()


def virtualize_proc(launched: Launched, spec: Spec, cpus_from_quota: bool = False) -> None:
    """--virtualize: the virtualised files of a FUSE view of the innermost namespace, attached
    over the /proc of its mount namespace (which the command shares) before the command starts,
    and its sysfs files over /sys there; the kernel serves the rest. cpus_from_quota: the
    view's option of that name."""
    from pidns.errors import LaunchFailed, PidnsError, UsageError
    from pidns.view.api import VirtualFiles
    from pidns.view.hybrid import attach_into, command_binds

    inner = launched.inits[-1]
    try:
        files = VirtualFiles(f"@{inner}", cpus_from_quota)
    except PidnsError as err:
        if isinstance(err, (UsageError, LaunchFailed)):
            raise
        raise LaunchFailed(f"--virtualize: {err}") from None
    try:
        userns_of = launched.inits[0] if spec.uses_userns(os.geteuid()) else None
        attach_into(inner, userns_of, command_binds(files.path, files.sys_dir))
    finally:
        files.close()


def _open_status(target: str) -> IO[str]:
    if target == "-":
        return sys.stdout
    try:
        return open(target, "w", encoding="utf-8")
    except OSError as err:
        from pidns.errors import LaunchFailed

        raise LaunchFailed(f"--status-json {target}: {err.strerror}") from None


def _emit(out: IO[str], record: dict[str, object]) -> None:
    import json

    # A reader that went away is not the command's failure: the run goes on, unreported.
    try:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()
    except BrokenPipeError:
        pass


def _reclaim_terminal() -> None:
    """Take the terminal back from the command's process group (it was given away)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _View:
    """`run --view DIR`: the view of the command's namespace, and DIR itself when it was
    made for the view (removed again after)."""

    def __init__(self, member: int, path: str, backend: str) -> None:
        from pidns.view.api import open_view

        self.made = not os.path.exists(path)
        if self.made:
            try:
                os.mkdir(path)
            except OSError as err:
                from pidns.errors import LaunchFailed

                raise LaunchFailed(f"--view {path}: cannot create it ({err.strerror})") from None
        self.path = path
        try:
            self.handle = open_view(f"@{member}", path, backend=backend, auto_unmount=True)
        except BaseException as err:
            self._remove_dir()
            from pidns.errors import PidnsError, UsageError

            if isinstance(err, PidnsError) and not isinstance(err, UsageError):
                from pidns.errors import LaunchFailed

                raise LaunchFailed(f"--view {path}: {err}") from None
            raise

    def close(self) -> None:
        from pidns.errors import PidnsError

        try:  # noqa: SIM105
            self.handle.close()
        except PidnsError:  # gone already if the namespace died first
            pass
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self.made:
            try:  # noqa: SIM105
                os.rmdir(self.path)
            except OSError:
                pass
