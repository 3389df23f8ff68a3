"""Exits as the view daemon learns them, from the proc connector or from pidfds (no privilege needed)."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from pidns.kernel import connector
from pidns.view.instances import Instance, Registry
from pidns.view.nodes import PidDir
from pidns.view.options import ViewOptions
from pidns.view.watch import Listener, Watcher
from tests.soak.support import first_child, wait_for


class _Calls(Listener):
    """A listener made of the test's callables."""

    def __init__(
        self,
        reaped: Callable[[int], None],
        died: Callable[[Instance], None],
        shown_pids: Callable[[], list[int]] = list,
    ) -> None:
        self._reaped = reaped
        self._died = died
        self._shown_pids = shown_pids

    def reaped(self, host_pid: int) -> None:
        self._reaped(host_pid)

    def namespace_died(self, instance: Instance) -> None:
        self._died(instance)

    def shown_pids(self) -> list[int]:
        return self._shown_pids()


@pytest.mark.parametrize("use_connector", [True, False])
def test_a_task_is_flushed_once_reaped_not_while_a_zombie(use_connector: bool) -> None:
    flushed: list[int] = []
    changed = threading.Condition()

    def flush(pid: int) -> None:  # with the connector: every task of the host that exits
        with changed:
            flushed.append(pid)
            changed.notify_all()

    def flushed_soon(pid: int, timeout: float) -> bool:
        with changed:
            return changed.wait_for(lambda: pid in flushed, timeout)

    def on_dead(instance: Instance) -> None:
        raise AssertionError("no namespace here")

    registry = Registry()
    watcher = Watcher(
        registry, _Calls(flush, on_dead), threading.RLock(), use_connector=use_connector
    )
    watcher.start()
    child = subprocess.Popen(["sleep", "1000"])
    try:
        watcher.watch(child.pid)  # what the views do for each task they show (pidfd mode)
        child.kill()
        assert not flushed_soon(child.pid, 0.2)  # a zombie stays listed until reaped
        child.wait()
        assert flushed_soon(child.pid, 10)
    finally:
        child.kill()
        child.wait()
        watcher.stop()
        registry.close()


@pytest.mark.root
def test_lost_events_flush_what_exited_and_spare_live_namespaces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the connector drops events (ENOBUFS: the daemon fell behind a burst of exits), the
    watcher flushes the shown tasks that did exit meanwhile and nothing else: a namespace whose
    init still runs stays alive, its views with it."""
    flushed: list[int] = []
    died: list[Instance] = []
    changed = threading.Condition()

    def flush(pid: int) -> None:
        with changed:
            flushed.append(pid)
            changed.notify_all()

    registry = Registry()
    lock = threading.RLock()
    namespace = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "1000"])
    victim = subprocess.Popen(["sleep", "1000"])
    watcher = None
    try:
        init = _wait_child(namespace.pid)
        registry.open_view(os.open(f"/proc/{init}/ns/pid", os.O_RDONLY), ViewOptions())
        watcher = Watcher(
            registry,
            _Calls(flush, died.append, shown_pids=lambda: [victim.pid]),
            lock,
            use_connector=True,
        )
        if watcher.sock is None:
            pytest.skip("the proc connector is unavailable here")
        watcher.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # overflow soon
        watcher.start()
        caplog.set_level(logging.WARNING, logger="pidns.view.watch")
        with lock:  # the watcher stops at the first exit while the events pile up
            burst = "for i in $(seq 300); do /bin/true; done"
            subprocess.run(["sh", "-c", burst], check=True)
            victim.kill()
            victim.wait()
            subprocess.run(["sh", "-c", burst], check=True)
        with changed:
            assert changed.wait_for(lambda: victim.pid in flushed, 10), "the exit was lost"
        assert any("checking every task shown" in r.getMessage() for r in caplog.records), (
            "the connector dropped nothing: the burst did not overflow the socket"
        )
        assert died == [], "a namespace whose init runs was taken for dead"
        assert not next(iter(registry.instances.values())).dead
    finally:
        if watcher is not None:
            watcher.stop()
        victim.kill()
        victim.wait()
        namespace.kill()
        namespace.wait()
        registry.close()


def _wait_child(pid: int) -> int:
    wait_for(lambda: first_child(pid), 5, "the namespace did not start")
    return first_child(pid)


@pytest.mark.root
def test_a_pinned_directory_tells_when_its_task_was_reaped() -> None:
    """How the views recognise, after lost events, a shown pid whose task was reaped (and whose
    number may already be another task's): the directory fd they pinned has nothing left."""
    registry = Registry()
    namespace = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", "sleep 1000 & wait"]
    )
    try:
        init = _wait_child(namespace.pid)
        sleeper = _wait_child(init)
        view = registry.open_view(os.open(f"/proc/{init}/ns/pid", os.O_RDONLY), ViewOptions())
        pinned = PidDir(view, view.instance.nsmap.to_ns(sleeper), sleeper, None)
        unpinned = PidDir(view, view.instance.nsmap.to_ns(sleeper), sleeper, None)
        assert pinned.fd >= 0
        assert not pinned.stale()
        os.kill(sleeper, signal.SIGKILL)  # the shell reaps it
        deadline = time.monotonic() + 10
        while not pinned.stale():
            assert time.monotonic() < deadline, "the reaped task still looks alive"
            time.sleep(0.01)
        assert not unpinned.stale()  # nothing pinned, nothing to tell
        pinned.release()
    finally:
        namespace.kill()
        namespace.wait()
        registry.close()


def test_the_connector_delivers_only_forks_and_exits() -> None:
    """The daemon is woken for the events it uses, not for every exec (or uid, comm...) on the
    host: Linux 6.6+ filters them for the listener."""
    try:
        sock = connector.open_listener()
    except OSError as err:
        pytest.skip(f"the proc connector is unavailable here: {err}")
    try:
        child = subprocess.Popen(["sh", "-c", "exec true"])  # fork, exec, exit
        child.wait()
        kinds: set[int] = set()
        deadline = time.monotonic() + 5
        while connector.PROC_EVENT_EXIT not in kinds and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.1)[0]:
                kinds |= {e.what for e in connector.parse(sock.recv(65536)) if e.pid == child.pid}
        assert kinds == {connector.PROC_EVENT_FORK, connector.PROC_EVENT_EXIT}
    finally:
        sock.close()
