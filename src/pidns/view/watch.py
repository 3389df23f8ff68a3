"""Task exits, from the proc connector when the daemon may listen to it, from pidfds otherwise.

One thread polls the connector socket (or the pidfds of every task a view has shown), a wake-up
eventfd, and the pidfds of exited tasks. An exit is reported while the task is still a zombie, and a
zombie stays listed (docs/kernel-proc.md §4); it is gone once reaped. A reaped task's pidfd reports POLLHUP,
and each exited task is also checked (pidfd_send_signal(0) fails with ESRCH only after the reap) at
a short, growing interval in case that wake-up does not come.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import threading
import time

from pidns.kernel import connector, pidfd
from pidns.view.instances import Instance, Registry

log = logging.getLogger(__name__)

FIRST_CHECK = 0.0005  # s after an exit; most tasks are reaped by their parent at once
LAST_CHECK = 0.05  # s between checks of a long-lived zombie
PIDFD_THREAD = os.O_EXCL  # pidfd_open flag (6.9+): a pidfd for one thread, not its group


class Listener:
    """What the watcher reports to (the daemon), and what it asks about the views. The defaults
    suit a listener that shows every task and pins none."""

    def reaped(self, host_pid: int) -> None:
        """A task is gone for good: drop it from every view."""

    def namespace_died(self, instance: Instance) -> None:
        """An instance's init was reaped."""

    def shown(self, host_pid: int) -> bool:
        """Whether some view has an inode for this host pid."""
        return True

    def shown_pids(self) -> list[int]:
        return []

    def replaced(self, host_pid: int) -> bool:
        """Whether a view holds a reaped task at this pid (now another task's)."""
        return False


class Watcher:
    def __init__(
        self,
        registry: Registry,
        listener: Listener,
        lock: threading.RLock,
        use_connector: bool = True,
    ) -> None:
        self.registry = registry
        self.listener = listener
        self.lock = lock  # the daemon's: registry changes happen under it
        self.pending: dict[int, int] = {}  # exited, not yet reaped: host pid -> pidfd (-1: none)
        self.watched: dict[int, int] = {}  # pidfd mode: pidfd -> host pid of a shown task
        self._watched_pids: set[int] = set()
        self._requests: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._recheck_wanted = False
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stop = False
        self.sock = None
        try:
            if use_connector:
                self.sock = connector.open_listener()
                registry.fork_events = True
        except OSError as err:
            log.info("proc connector unavailable (%s): watching pidfds", err)
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    @property
    def mode(self) -> str:
        return "connector" if self.sock is not None else "pidfd"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        os.eventfd_write(self._wake, 1)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.sock is not None:
            self.sock.close()
        for fd in [*self.watched, *(fd for fd in self.pending.values() if fd >= 0)]:
            os.close(fd)
        self.watched.clear()
        self.pending.clear()

    def watch(self, host_pid: int) -> None:
        """pidfd mode: report this task's exit (the connector reports every exit by itself).
        Any thread may call this."""
        if self.sock is not None or not host_pid or host_pid in self._watched_pids:
            return
        self._watched_pids.add(host_pid)
        self._requests.put(host_pid)
        os.eventfd_write(self._wake, 1)

    def recheck(self) -> None:
        """Find the exits nothing reported among the tasks shown (see _recheck): after a takeover,
        a task the views show may have exited while no daemon listened, its zombie restored as
        alive. Any thread may call this."""
        self._recheck_wanted = True
        os.eventfd_write(self._wake, 1)

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake, select.POLLIN)
        if self.sock is not None:
            poller.register(self.sock.fileno(), select.POLLIN)
        delay = FIRST_CHECK
        next_check = 0.0
        while not self._stop:
            timeout = None
            if self.pending:
                timeout = max(0, int((next_check - time.monotonic()) * 1000 + 0.999))
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            try:
                for fd, _mask in events:
                    if fd == self._wake:
                        self._drain(poller)
                    elif self.sock is not None and fd == self.sock.fileno():
                        self._listen(poller)
                    elif fd in self.watched:
                        pid = self.watched.pop(fd)
                        poller.unregister(fd)
                        os.close(fd)
                        self._watched_pids.discard(pid)
                        self._exited(pid, poller)
                    else:  # POLLHUP of a pending pidfd: reaped; checked below
                        next_check = 0.0
                if self.pending and time.monotonic() >= next_check:
                    reaped = [pid for pid, fd in self.pending.items() if pidfd.reaped(fd)]
                    for pid in reaped:
                        fd = self.pending.pop(pid)
                        if fd >= 0:
                            poller.unregister(fd)
                            os.close(fd)
                        self.reap(pid)
                    delay = FIRST_CHECK if reaped else min(delay * 2, LAST_CHECK)
                    next_check = time.monotonic() + delay
                elif not self.pending:
                    delay = FIRST_CHECK
            except Exception:  # the watcher must outlive any one bad event
                log.exception("watcher")

    def _drain(self, poller: select.poll) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        if self._recheck_wanted:
            self._recheck_wanted = False
            self._recheck(poller)
        while True:
            try:
                pid = self._requests.get_nowait()
            except queue.Empty:
                return
            fd = _pidfd(pid)
            if fd < 0:
                self._watched_pids.discard(pid)
                self._exited(pid, poller)
                continue
            self.watched[fd] = pid
            poller.register(fd, select.POLLIN)

    def _exited(self, host_pid: int, poller: select.poll) -> None:
        """The task host_pid exited: pending until it is reaped. When the task now at that pid
        has not exited, the pid is already another task's, so the one that exited is reaped."""
        if host_pid in self.pending:
            return
        fd = _pidfd(host_pid)
        # (the group's pidfd answers for most; a leader that left before its threads needs its
        # own thread's)
        if fd >= 0 and not pidfd.exited(fd) and not _has_exited(host_pid, thread=True):
            os.close(fd)
            fd = -1  # reaped: flushed at the next check
        self.pending[host_pid] = fd
        if fd >= 0:
            poller.register(fd, 0)  # POLLHUP only: readable it already is (a zombie)
        with self.lock:
            dead = self.registry.init_exited(host_pid)
        for instance in dead:
            self._died(instance)

    def _listen(self, poller: select.poll) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as err:  # ENOBUFS: events were lost; find the exits among them
                log.warning("proc connector: %s; checking every task shown", err)
                self._recheck(poller)
                return
            forked = False
            for event in connector.parse(data):
                if event.what == connector.PROC_EVENT_EXIT:
                    self._exited(event.pid, poller)
                elif event.what == connector.PROC_EVENT_FORK:
                    forked = True
            if forked:
                self.registry.forked()

    def _recheck(self, poller: select.poll) -> None:
        """After lost events: the exits among the tasks shown and the inits, and only those (an
        init taken for dead kills its views). A shown task may have been reaped and its pid
        taken by another task meanwhile: the views know it by the directory they pinned."""
        self.registry.forked()
        for instance in list(self.registry.instances.values()):
            if not instance.dead and instance.init_gone():  # its own pidfd: no reused pid
                self._exited(instance.init_host, poller)
        for pid in self.listener.shown_pids():
            if _has_exited(pid):
                self._exited(pid, poller)
            elif self.listener.replaced(pid):
                self.reap(pid)

    def reap(self, pid: int) -> None:
        with self.lock:
            dead = self.registry.reaped(pid, self.listener.shown(pid))
        for instance in dead:
            self._died(instance)
        self.listener.reaped(pid)

    def _died(self, instance: Instance) -> None:
        log.info("namespace %s died: its views now show a dead namespace", instance.id)
        self.listener.namespace_died(instance)


def _pidfd(pid: int) -> int:
    """A pidfd for the task or thread `pid`; -1 when it is gone (reaped)."""
    for flags in (0, PIDFD_THREAD):
        try:
            return os.pidfd_open(pid, flags)
        except OSError as err:
            if err.errno != errno.EINVAL:  # EINVAL: a thread, not a group leader
                return -1
    return -1


def _has_exited(pid: int, thread: bool = False) -> bool:
    """Whether the task `pid` has exited (a zombie, or reaped); with `thread`, that thread itself,
    even while its group lives on. True when no pidfd can be had: gone (or, for a thread, a
    kernel before 6.9 without thread pidfds: nothing to tell)."""
    try:
        fd = os.pidfd_open(pid, PIDFD_THREAD) if thread else _pidfd(pid)
    except OSError:
        return True
    if fd < 0:
        return True
    try:
        return pidfd.exited(fd)
    finally:
        os.close(fd)
