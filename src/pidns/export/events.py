"""Fork and exit counts per PID namespace, from the proc connector, while the exporter runs.

One thread reads the connector. Each new task is placed in a namespace by its `ns/pid` link
(read right after the fork event; a thread is placed with its group, a task gone before its link
could be read with its parent), and its exit is counted where its fork was placed. Counts are
kept per namespace inode; a namespace's counts are dropped once a snapshot no longer shows it
(an inode can be reused by a later namespace, whose counters must start from zero).

The exit time of each thread-group leader is kept until a snapshot shows it is no zombie any
more: that is how long a zombie has been one (the kernel itself records no exit time).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterable

from pidns.kernel import connector
from pidns.procfs.parse import parse_ns_link

_MAX_EXITED = 65_536  # exit times kept between two snapshots before gone tasks are dropped


def boottime() -> float:
    """Seconds since boot, on the clock /proc's start times count on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class EventCounter:
    """Counts forks and exits per namespace inode. `open()` raises OSError when the connector is
    not available to this process (not root, or not in the initial namespaces)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._proc_fd = -1
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ns_of: dict[int, int] = {}  # live leader's host pid -> namespace inode
        self._forks: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._touched: dict[int, float] = {}  # inode -> boottime of its last event
        self._exited: dict[int, float] = {}  # leader's host pid -> boottime of its exit
        self.overflows = 0  # times the kernel dropped events (ENOBUFS): counts are low
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="proc-events", daemon=True)

    def open(self) -> None:
        self._sock = connector.open_listener()
        self._proc_fd = os.open(self.proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._proc_fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._proc_fd = self._wake_r = self._wake_w = -1

    # -- what scrapes ask ------------------------------------------------------------------

    def seed(self, leaders: Iterable[tuple[int, int]]) -> None:
        """Place tasks that existed before their fork could be seen: (host pid, ns inode)."""
        with self._lock:
            for pid, ino in leaders:
                self._ns_of.setdefault(pid, ino)

    def counts(self) -> tuple[dict[int, int], dict[int, int]]:
        with self._lock:
            return dict(self._forks), dict(self._exits)

    def exit_time(self, pid: int) -> float | None:
        """When the leader at host pid last exited (boottime seconds), if seen."""
        with self._lock:
            return self._exited.get(pid)

    def prune(self, alive: set[int], zombies: set[int], since: float, live: set[int]) -> None:
        """Forget namespaces a snapshot taken at `since` no longer shows (unless an event came
        after it), exit times of tasks that are not zombies in it, and, when exits were lost,
        the places of tasks it does not show (`live`: its host pids)."""
        with self._lock:
            if len(self._ns_of) > 2 * len(live) + 1024:
                self._ns_of = {p: i for p, i in self._ns_of.items() if p in live}
            for ino in [i for i in self._touched if i not in alive and self._touched[i] < since]:
                del self._touched[ino]
                self._forks.pop(ino, None)
                self._exits.pop(ino, None)
            for pid in [p for p, t in self._exited.items() if p not in zombies and t < since]:
                del self._exited[pid]

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = [fd for fd, _ in poller.poll()]
            if self._wake_r in ready:
                return
            self._drain()

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    with self._lock:
                        self.overflows += 1
                    continue
                raise
            self._handle(connector.parse(data))

    def _handle(self, events: list[connector.Event]) -> None:
        now = boottime()
        for event in events:
            if event.what == connector.PROC_EVENT_FORK:
                self._forked(event, now)
            elif event.what == connector.PROC_EVENT_EXIT:
                self._exited_event(event, now)

    def _forked(self, event: connector.Event, now: float) -> None:
        ino = None
        if event.pid != event.tgid:  # a new thread: its group's namespace
            ino = self._ns_of.get(event.tgid)
        if ino is None:
            ino = self._read_ns(event.pid)
        with self._lock:
            if ino is None:
                ino = self._ns_of.get(event.parent_pid)
            if ino is None:
                return
            if event.pid == event.tgid:
                self._ns_of[event.pid] = ino
            self._count(self._forks, ino, now)

    def _exited_event(self, event: connector.Event, now: float) -> None:
        with self._lock:
            leader = event.pid == event.tgid
            ino = self._ns_of.pop(event.pid, None) if leader else self._ns_of.get(event.tgid)
        if ino is None:
            ino = self._read_ns(event.pid)
        with self._lock:
            if ino is None:
                ino = self._ns_of.get(event.parent_pid)
            if leader:
                self._exited[event.pid] = now
                if len(self._exited) > _MAX_EXITED:
                    self._forget_reaped()
            if ino is not None:
                self._count(self._exits, ino, now)

    def _count(self, table: dict[int, int], ino: int, now: float) -> None:
        table[ino] = table.get(ino, 0) + 1
        self._touched[ino] = now

    def _read_ns(self, pid: int) -> int | None:
        try:
            return parse_ns_link(os.readlink(f"{pid}/ns/pid", dir_fd=self._proc_fd))
        except (OSError, ValueError):
            return None

    def _forget_reaped(self) -> None:
        """Many exits and no snapshot to prune them: keep only those still in the proc tree."""
        for pid in list(self._exited):
            with contextlib.suppress(OSError):
                os.stat(str(pid), dir_fd=self._proc_fd)
                continue
            del self._exited[pid]
