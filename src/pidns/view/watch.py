"""Task exits, from the proc connector when the daemon may listen to it, from pidfds otherwise.

An exit is reported while the task is still a zombie, and a zombie stays listed (KERNEL-PROC 4); it is
gone once reaped, which nothing reports. So each exited task is kept in `pending` and checked with
its pidfd (pidfd_send_signal(0) fails with ESRCH only after the reap) at a short, growing interval.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable

import trio

from pidns.kernel import connector
from pidns.view.instances import Registry

log = logging.getLogger(__name__)

FIRST_CHECK = 0.0005  # s after an exit; most tasks are reaped by their parent at once
LAST_CHECK = 0.05  # s between checks of a long-lived zombie


class Watcher:
    def __init__(self, registry: Registry, flush: Callable[[int], None]) -> None:
        self.registry = registry
        self.flush = flush  # drop a reaped task's entries from every view
        self.pending: dict[int, int] = {}  # host pid -> pidfd (-1 when it could not be opened)
        self.watched: set[int] = set()  # pidfd mode: tasks with an exit waiter
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.sock: socket.socket | None = None
        try:
            self.sock = connector.open_listener()
            registry.fork_events = True
        except OSError as err:
            log.info("proc connector unavailable (%s): watching pidfds", err)

    @property
    def mode(self) -> str:
        return "connector" if self.sock is not None else "pidfd"

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reaper)
            if self.sock is not None:
                nursery.start_soon(self._listen)
            for instance in self.registry.instances.values():
                self.watch(instance.init_host)

    def watch(self, host_pid: int) -> None:
        """pidfd mode: report this task's exit (the connector reports every exit by itself)."""
        if self.sock is not None or self._nursery is None or host_pid in self.watched or not host_pid:
            return
        try:
            fd = os.pidfd_open(host_pid)
        except OSError:
            self.exited(host_pid)
            return
        self.watched.add(host_pid)
        self._nursery.start_soon(self._wait_exit, host_pid, fd)

    async def _wait_exit(self, host_pid: int, fd: int) -> None:
        try:
            await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
            self.watched.discard(host_pid)
        self.exited(host_pid)

    def exited(self, host_pid: int) -> None:
        if host_pid in self.pending:
            return
        try:
            self.pending[host_pid] = os.pidfd_open(host_pid)
        except OSError:
            self.pending[host_pid] = -1  # already reaped
        self._wake.set()

    async def _listen(self) -> None:
        assert self.sock is not None
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError as err:  # ENOBUFS: events were lost; recheck everything
                    log.warning("proc connector: %s", err)
                    self.registry.forked()
                    for pid in list(self.registry.generations) + self._known_pids():
                        self.exited(pid)
                    break
                forked = False
                for event in connector.parse(data):
                    if event.what == connector.PROC_EVENT_EXIT:
                        self.exited(event.pid)
                    elif event.what == connector.PROC_EVENT_FORK:
                        forked = True
                if forked:
                    self.registry.forked()

    def _known_pids(self) -> list[int]:
        return [i.init_host for i in self.registry.instances.values() if i.init_host]

    async def _reaper(self) -> None:
        delay = FIRST_CHECK
        while True:
            if not self.pending:
                await self._wake.wait()
                self._wake = trio.Event()
                delay = FIRST_CHECK
            with trio.move_on_after(delay):
                await trio.sleep(delay)
            reaped = [pid for pid, fd in self.pending.items() if _reaped(fd)]
            for pid in reaped:
                fd = self.pending.pop(pid)
                if fd >= 0:
                    os.close(fd)
                self.reap(pid)
            delay = FIRST_CHECK if reaped else min(delay * 2, LAST_CHECK)

    def reap(self, pid: int) -> None:
        for instance in self.registry.reaped(pid):
            for view in instance.views.values():
                log.info("namespace %s died: view %s now shows a dead namespace", instance.id, view.id)
            self.on_dead(instance)
        self.flush(pid)

    def on_dead(self, instance: object) -> None:
        """Replaced by the daemon: flush a dead namespace's entries, auto-unmount its views."""


def _reaped(pidfd: int) -> bool:
    if pidfd < 0:
        return True
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return True
    except OSError:
        with contextlib.suppress(OSError):
            return not os.path.exists(f"/proc/self/fdinfo/{pidfd}")
        return False
    return False
