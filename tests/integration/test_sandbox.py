"""pidns.Sandbox: processes in throwaway nested namespaces, waited for by pidfd, all killed at exit."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import pidns
from pidns.kernel import pidfd
from pidns.procfs.snapshot import snapshot
from tests.integration.runtime_util import in_namespace, nspid

pytestmark = pytest.mark.root


def test_spawn_numbers_and_output() -> None:
    with pidns.Sandbox(nest=2) as sb:
        p = sb.spawn(["sh", "-c", "echo $$; exit 3"], stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 3
        assert int(out) == p.ns_pid
        q = sb.spawn(["sleep", "60"])
        assert nspid(q.pid)[-1] == q.ns_pid and len(nspid(q.pid)) == 3
        assert len(sb.namespaces) == 2 and sb.ns == sb.namespaces[-1]


def test_wait_timeout_and_signals() -> None:
    with pidns.Sandbox() as sb:
        p = sb.spawn(["sleep", "60"])
        assert p.poll() is None and p.returncode is None
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.05)
        p.send_signal(signal.SIGUSR1)
        assert p.wait(timeout=10) == -signal.SIGUSR1
        p.kill()  # exited: the pidfd makes this a no-op, never a stray signal


def test_ps_is_the_kernels_view() -> None:
    with pidns.Sandbox(nest=2) as sb:
        p = sb.spawn(["sleep", "60"])
        views = sb.ps()
        assert [(int(v.pid), v.task.comm) for v in views] == [
            (1, "pidns-init"),
            (p.ns_pid, "sleep"),
        ]
        snap = snapshot()
        inner = snap.by_ino(sb.ns.ino)
        outer = snap.by_ino(sb.namespaces[0].ino)
        assert inner is not None and outer is not None and inner.parent == outer.id


def test_exit_leaves_nothing() -> None:
    with pidns.Sandbox(nest=2) as sb:
        sb.spawn(["sh", "-c", "setsid sleep 600 & sleep 600 & exec sleep 600"])
        sb.spawn(["sh", "-c", "trap '' TERM; sleep 600"])
        members = in_namespace(sb.namespaces[0].ino) + in_namespace(sb.ns.ino)
        fds = [pidfd.open_pid(pid) for pid in members]
        inodes = [ns.ino for ns in sb.namespaces]
    try:
        assert all(pidfd.exited(fd) for fd in fds)
        assert all(in_namespace(ino) == [] for ino in inodes)
    finally:
        for fd in fds:
            os.close(fd)


def test_spawn_errors() -> None:
    with pidns.Sandbox() as sb:
        with pytest.raises(pidns.CommandNotFound):
            sb.spawn(["no-such-command-here"])
        with pytest.raises(pidns.UsageError):
            sb.spawn([])
    with pytest.raises(RuntimeError):
        sb.spawn(["true"])


def test_run_mirrors_the_cli() -> None:
    assert pidns.run(["sh", "-c", "exit 4"], nest=2) == 4
    assert pidns.run(["sh", "-c", "kill -TERM $$"]) == 143
    with pytest.raises(pidns.CommandNotFound):
        pidns.run(["no-such-command-here"])
