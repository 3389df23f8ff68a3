"""`pidns exec` as a function: a command inside an existing namespace, with that namespace's
procfs at /proc in a private mount namespace (so ps, top, pstree inside show the namespace)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pidns.kernel import nsfs, pidfd
from pidns.runtime.enter import Target, spawn
from pidns.runtime.forward import Forwarder
from pidns.runtime.init import FORWARDED

if TYPE_CHECKING:
    from pidns.view.api import VirtualFiles


def exec_in(
    designator: str,
    argv: Sequence[str],
    proc: str = "/proc",
    backend: str = "auto",
    virtualize: bool = False,
    cpus_from_quota: bool = False,
) -> int:
    """Run argv in the namespace `designator` names; its exit status (128+N: signal N).

    /proc inside is a procfs mounted from within the namespace (backend kernel, or auto: that
    works wherever joining does, on any kernel) or pidns's FUSE view of it (backend fuse).
    virtualize: the resource files show the namespace's cgroup (auto picks fuse; with kernel,
    they are bound over the kernel's procfs from a FUSE view: the hybrid), and so does
    /sys/devices/system/cpu/online, bound from that view in the command's mount namespace.
    """
    from pidns.designators import open_namespace, resolve
    from pidns.errors import LaunchFailed, PidnsError, UsageError
    from pidns.procfs.snapshot import snapshot
    from pidns.view.options import BACKENDS

    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if cpus_from_quota and not virtualize:
        raise UsageError("--cpus-from-quota needs --virtualize")
    if virtualize and backend == "auto":
        backend = "fuse"
    snap = snapshot(proc)
    try:
        ns = resolve(designator, snap)
        ns_fd = open_namespace(snap, ns)
    except UsageError:
        raise  # a designator naming nothing: bad usage (2)
    except PidnsError as err:  # refused or gone: joining failed before the command (125)
        raise LaunchFailed(str(err)) from None
    userns_fd = -1
    timens_fd = -1
    view: _ProcView | VirtualFiles | None = None
    overlays: tuple[tuple[str, str], ...] = ()
    try:
        if backend == "fuse":
            view = _ProcView(ns_fd, virtualize, cpus_from_quota)
            if virtualize:  # the view is /proc; its sysfs files go over /sys
                from pidns.view.hybrid import sys_binds

                overlays = tuple(sys_binds(view.handle.sys_dir))
        elif virtualize:  # the hybrid: the kernel's procfs, the virtualised files bound over it
            from pidns.view.api import VirtualFiles, check_own_cgroup
            from pidns.view.hybrid import command_binds

            check_own_cgroup(ns_fd, designator, os.fstat(ns_fd).st_ino)
            try:
                view = VirtualFiles(ns_fd, cpus_from_quota)
            except PidnsError as err:
                if isinstance(err, UsageError):
                    raise
                raise LaunchFailed(f"--virtualize: {err}") from None
            overlays = tuple(command_binds(view.path, view.sys_dir))
        userns_fd = _userns_to_join(ns_fd)
        timens_fd = _timens_to_join(proc, ns.init, os.fstat(ns_fd).st_ino)
        try:
            forwarder: Forwarder | None = Forwarder(FORWARDED)
        except ValueError:  # not the main thread
            forwarder = None
        try:
            target = Target(
                pidns_fd=ns_fd,
                userns_fd=userns_fd,
                proc_source=view.path if isinstance(view, _ProcView) else None,
                ignored=forwarder.ignored if forwarder is not None else frozenset(),
                overlays=overlays,
                timens_fd=timens_fd,
            )
            joined = spawn(argv, target)
            try:
                if forwarder is not None:
                    forwarder.attach(lambda sig: _send(joined.pidfd, sig))
                code = joined.popen.wait()
            finally:
                os.close(joined.pidfd)
        finally:
            if forwarder is not None:
                forwarder.restore()
    finally:
        os.close(ns_fd)
        if userns_fd >= 0:
            os.close(userns_fd)
        if timens_fd >= 0:
            os.close(timens_fd)
        if view is not None:
            view.close()
    return 128 - code if code < 0 else code


class _ProcView:
    """A FUSE view of the namespace on a private temporary directory, for binding at /proc."""

    def __init__(self, ns_fd: int, virtualize: bool = False, cpus_from_quota: bool = False) -> None:
        import tempfile

        from pidns.view.api import open_view

        self.path = tempfile.mkdtemp(prefix="pidns-exec-")
        try:
            self.handle = open_view(
                ns_fd,
                self.path,
                backend="fuse",
                virtualize=virtualize,
                cpus_from_quota=cpus_from_quota,
            )
        except BaseException:
            os.rmdir(self.path)
            raise

    def close(self) -> None:
        try:
            self.handle.close()
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)


def _send(fd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        pidfd.send_signal(fd, sig)


def _timens_to_join(proc: str, init: int | None, ns_ino: int) -> int:
    """The time namespace of the namespace's init when it is not ours (`pidns run
    --virtualize` makes one), or -1: the command joins it as it joins the PID namespace, so its
    clocks, /proc/uptime and the tasks' start times are the namespace's, not the host's."""
    if init is None:
        return -1
    try:
        fd = nsfs.open_ns(f"{proc}/{init}/ns/time")
    except OSError:  # no time namespaces (before 5.6), or the init is gone: nothing to join
        return -1
    try:
        same = os.fstat(fd).st_ino == os.stat("/proc/self/ns/time").st_ino
        # the init's pid still names a task of the namespace (not a reused pid)
        ours = os.stat(f"{proc}/{init}/ns/pid").st_ino == ns_ino
    except OSError:
        same, ours = True, False
    if same or not ours:
        os.close(fd)
        return -1
    return fd


def _userns_to_join(ns_fd: int) -> int:
    """Without root, the namespace's owning user namespace (when it isn't ours): joining it
    gives the rights to enter the PID namespace and mount its procfs."""
    if os.geteuid() == 0:
        return -1
    try:
        owner = nsfs.owner_userns(ns_fd)
    except OSError:
        return -1
    if os.fstat(owner).st_ino == os.stat("/proc/self/ns/user").st_ino:
        os.close(owner)
        return -1
    return owner
