"""`pidns exec` as a function: a command inside an existing namespace, with that namespace's
procfs at /proc in a private mount namespace (so ps, top, pstree inside show the namespace)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from pidns.kernel import nsfs, pidfd
from pidns.runtime.enter import Target, spawn
from pidns.runtime.forward import Forwarder
from pidns.runtime.init import FORWARDED


def exec_in(designator: str, argv: Sequence[str], proc: str = "/proc") -> int:
    """Run argv in the namespace `designator` names; its exit status (128+N: signal N)."""
    from pidns.designators import open_namespace, resolve
    from pidns.procfs.snapshot import snapshot

    snap = snapshot(proc)
    ns_fd = open_namespace(snap, resolve(designator, snap))
    userns_fd = -1
    try:
        userns_fd = _userns_to_join(ns_fd)
        try:
            forwarder: Forwarder | None = Forwarder(FORWARDED)
        except ValueError:  # not the main thread
            forwarder = None
        try:
            joined = spawn(argv, Target(pidns_fd=ns_fd, userns_fd=userns_fd))
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
    return 128 - code if code < 0 else code


def _send(fd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        pidfd.send_signal(fd, sig)


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
