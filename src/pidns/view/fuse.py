"""One mounted view on its own /dev/fuse fd: the request loop and the adapter. No policy here.

A plain thread reads the device (no event loop: waiting costs no Python) and answers each request
with one os.write; it polls the device only after SPIN seconds without a request. The adapter maps
inodes to nodes with exact lookup counts and errors to errnos; what a path is, lists and contains
comes from the nodes, who may enter from the gate the view gives.

Entries live long in the kernel's cache (ENTRY_TIMEOUT); that is safe because `flush_task` drops a
reaped task's entries explicitly. A lookup racing with the task's reap (its pid resolved, then the
task reaped and flushed, then the answer given) would leave an entry no flush will ever reach, and a
pinned directory fd with it: each flush is numbered, and an answer that gave an inode to a task
flushed since its lookup began is followed by one more flush of that task. Those FUSE_NOTIFY_INVAL_ENTRY messages are written by the
Notifier's thread, never by a request thread: the kernel takes the directory's lock to invalidate,
and a request pending in that directory holds it until a request thread answers.

INTERRUPT: a request still being handled (another thread of the mount is stuck in it) is answered
EINTR at once and the late answer is dropped; one this loop has not registered yet is answered
EAGAIN, which makes the kernel send the interrupt again. A request answered only once is the rule
`inflight` enforces: whoever pops a request's unique from it answers that request.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import queue
import select
import stat as st
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from pidns.errors import AccessDenied, NamespaceGone, NotPermitted, PidnsError, ProcessGone
from pidns.kernel import fuse_abi as abi
from pidns.view.nodes import Absent, Attr, Node
from pidns.view.tree import Requester

log = logging.getLogger(__name__)

ENTRY_TIMEOUT = 86400.0  # correct because of explicit invalidation on exit
ATTR_TIMEOUT = 1.0  # owners and link counts of a task's directory may change (setuid, threads)
# Room for any request we serve (max_write is 4096: the kernel answers bigger ones itself, E2BIG
# or EIO); a buffer per request thread, so no more than needed.
READ_BUFFER = abi.MIN_READ_BUFFER
# Asked of the kernel at INIT. READDIRPLUS puts the attributes of /proc/N into the listing, so a
# `ps` walking the root costs no LOOKUP or GETATTR per task (AUTO: only while the reader also looks
# entries up, as ps does; a bare `ls` pins no inode per task); PARALLEL_DIROPS lets lookups in one
# directory (all of a view's /N are in its root) proceed without the kernel serialising them.
WANTED = (
    abi.DO_READDIRPLUS
    | abi.READDIRPLUS_AUTO
    | abi.PARALLEL_DIROPS
    | abi.ASYNC_READ
    | abi.INIT_EXT
    | abi.REQUEST_TIMEOUT
)
# A request unanswered this long (s) makes the kernel abort the connection: the view's readers get
# ENOTCONN instead of hanging on a daemon that stopped answering (stopped, or stuck in a bug). The
# kernel checks every 15 s and never allows less than that.
REQUEST_TIMEOUT = 60
OPEN_FLAGS = abi.FOPEN_DIRECT_IO | abi.FOPEN_NOFLUSH  # content is a snapshot taken at open
_DOT_ATTR = Attr(st.S_IFDIR | 0o555, 2, 0, 0)
_IN = abi.IN_HEADER.size
_UNKNOWN_INO = 0xFFFFFFFF
_unpack_in = abi.IN_HEADER.unpack_from
SPIN = 0.0002  # s the request thread stays awake after an answer
STUCK = 0.1  # s in one request before the standby thread answers the others
_RETRY = (errno.ENOENT, errno.EINTR, errno.EAGAIN)  # ENOENT: a request aborted before we read it


def errno_of(err: BaseException) -> int:
    if isinstance(err, OSError) and err.errno:
        return err.errno
    if isinstance(err, ProcessGone):
        return errno.ESRCH
    if isinstance(err, NamespaceGone):
        return errno.ENOENT
    if isinstance(err, AccessDenied):
        return errno.EACCES
    if isinstance(err, NotPermitted):
        return errno.EPERM
    if isinstance(err, PidnsError):
        return errno.EIO
    log.error("unexpected error in a FUSE handler", exc_info=err)
    return errno.EIO


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass(slots=True)
class _DirHandle:
    ino: int
    req: Requester
    listing: list[tuple[int, str, Node]] | None = None
    epoch: int = 0  # the flush epoch when the listing was taken


FLUSHES_KEPT = 4096  # flushes remembered for racing lookups; an older lookup is flushed anyway


Handler = Callable[[int, int, Requester, bytes], "bytes | None"]


class Watchdog:
    """The one thread that notices, for every mount, a request thread stuck in one request (a host
    file that blocks, say) and rouses that mount's standby thread. Standby threads sleep until
    then, so an idle view costs no wake-ups: the daemon wakes STUCK⁻¹ times a second in all."""

    def __init__(self) -> None:
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuse-watchdog", daemon=True)
        self._thread.start()

    def add(self, session: Session) -> None:
        with self._lock:
            self._sessions.add(session)

    def remove(self, session: Session) -> None:
        with self._lock:
            self._sessions.discard(session)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(STUCK):
            with self._lock:
                sessions = list(self._sessions)
            for session in sessions:
                try:
                    session.check_stuck()
                except Exception:
                    log.exception("%s: watchdog", session.name)


class Notifier:
    """The one thread that writes invalidations to the devices of every mount, in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Session, bytes] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)
        self._thread.start()

    def push(self, session: Session, message: bytes) -> None:
        self._queue.put((session, message))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            session, message = item
            try:  # one view's failure must not stop invalidations for all the others
                session.write_notification(message)
            except Exception:
                log.exception("%s: notification", session.name)


class Session:
    """One mount: its device fd, its inode table, the threads that answer its requests."""

    def __init__(
        self,
        fd: int,
        root: Node,
        gate: Callable[[Requester], bool],
        notifier: Notifier,
        *,
        watchdog: Watchdog | None = None,
        watch: Callable[[int], None] = lambda host_pid: None,
        on_end: Callable[[Session], None] = lambda session: None,
        name: str = "view",
        request_timeout: int = REQUEST_TIMEOUT,
    ) -> None:
        """With a watchdog the mount has a standby thread for when its request thread is stuck."""
        self.fd = fd  # owned: closed once every thread has stopped
        self.gate = gate  # may this requester enter the view at all (the view decides)
        self.notifier = notifier
        self.watchdog = watchdog
        self.request_timeout = request_timeout
        self.watch = watch  # called with the host pid of every task whose names get inodes
        self.on_end = on_end
        self.name = name
        self.lock = threading.Lock()  # the inode table and `inflight` change together under it
        self.nodes: dict[int, Node] = {abi.ROOT_ID: root}
        self.counts: dict[int, int] = {abi.ROOT_ID: 1}
        self.by_key: dict[Hashable, int] = {root.key: abi.ROOT_ID}
        self.entry_of: dict[int, tuple[int, bytes]] = {}  # inode -> (parent inode, name)
        # host pid -> inodes of the task's directories and of everything under them
        self.by_host: dict[int, list[int]] = {}  # lists: a set costs 4-7 times the memory
        self.files: dict[int, bytes] = {}  # fh -> the snapshot rendered at open
        self.dirs: dict[int, _DirHandle] = {}
        # ids of the nodes in the table. A listing's nodes that never got an inode hold host fds
        # too (their attributes were taken): released with the listing, unless in the table.
        self.kept: set[int] = set()
        self.inflight: dict[int, bool] = {}  # requests read and not answered yet
        self.epoch = 0  # flushes so far
        self.flushed: dict[int, int] = {}  # host pid -> epoch of its last flush (recent ones)
        self.floor = 0  # flushes before this epoch are forgotten
        self._inodes = itertools.count(abi.ROOT_ID + 1)
        self._handles = itertools.count(1)
        self._threads = [threading.Thread(target=self._serve, name=f"fuse-{name}", daemon=True)]
        if watchdog is not None:
            self._threads.append(
                threading.Thread(target=self._standby, name=f"fuse-{name}-standby", daemon=True)
            )
        self._running = len(self._threads)
        self.current: bytes | None = None  # the request the request thread is answering
        self._seen: bytes | None = None  # what it was answering when the watchdog last looked
        self._stuck: bytes | None = None  # the request it is stuck in, for the standby thread
        self._rouse = threading.Event()  # the standby thread's wake-up
        self._ending = False
        self._closed = False
        self.initialized = threading.Event()
        self.handlers: dict[int, Handler] = {
            abi.LOOKUP: self._lookup,
            abi.GETATTR: self._getattr,
            abi.READLINK: self._readlink,
            abi.OPEN: self._open,
            abi.READ: self._read,
            abi.RELEASE: self._release,
            abi.OPENDIR: self._opendir,
            abi.READDIR: self._readdir,
            abi.READDIRPLUS: self._readdirplus,
            abi.RELEASEDIR: self._releasedir,
            abi.STATFS: self._statfs,
            abi.INIT: self._init,
        }

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        os.set_blocking(self.fd, False)  # the loop spins on EAGAIN, then waits in poll()
        for thread in self._threads:
            thread.start()
        if self.watchdog is not None:
            self.watchdog.add(self)

    def check_stuck(self) -> None:
        """The watchdog's look: the same request as at its last look means stuck for STUCK s."""
        current = self.current
        if current is not None and current is self._seen and self._stuck is None:
            self._stuck = current
            self._rouse.set()
        self._seen = current

    def _serve(self) -> None:
        """The request thread: answers requests in turn. After each answer it keeps reading the
        device for SPIN seconds before it sleeps: a client like `ps` sends its next request within
        microseconds, and a thread still awake takes it without being woken (waking a thread on
        another CPU is an inter-processor interrupt, dear in a VM). That halves the time of a
        `ps` through the view; an idle view costs nothing."""
        fd = self.fd
        read = _Reader()
        clock = time.perf_counter
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        handle = self._handle
        until = 0.0
        try:
            while True:
                try:
                    buf = read(fd)
                except BlockingIOError:
                    if clock() < until:
                        continue
                    poller.poll()
                    until = clock() + SPIN
                    continue
                except OSError as err:
                    if err.errno in _RETRY:
                        continue
                    break  # ENODEV: unmounted (or the connection was aborted)
                if not buf:
                    break  # end of file: not the FUSE device (a socket in tests), closed
                self.current = buf
                if not handle(buf):
                    break
                self.current = None
                until = clock() + SPIN
        finally:
            self._ending = True
            if self.watchdog is not None:
                self.watchdog.remove(self)
            self._rouse.set()  # the standby thread ends too
            self._thread_done()

    def _standby(self) -> None:
        """The second thread: asleep until the watchdog finds the request thread inside one
        request for STUCK seconds. Then it answers the others, INTERRUPTs of the stuck one among
        them (its client gets EINTR), until the request thread is back. It never waits on the
        device otherwise: every request would wake it."""
        fd = self.fd
        read = None  # its buffer only once needed: most views never need it
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while True:
                self._rouse.wait()
                self._rouse.clear()
                stuck = self._stuck
                if self._ending:
                    return
                if stuck is None:
                    continue
                read = read or _Reader()
                log.warning(
                    "%s: a request has taken over %.1fs; serving others meanwhile", self.name, STUCK
                )
                while not self._ending and self.current is stuck:
                    if not poller.poll(int(STUCK * 1000)):
                        continue
                    try:
                        buf = read(fd)
                    except BlockingIOError:
                        continue
                    except OSError as err:
                        if err.errno in _RETRY:
                            continue
                        return
                    if not buf or not self._handle(buf):
                        return
                self._stuck = None
        finally:
            self._thread_done()

    def _handle(self, buf: bytes) -> bool:
        """Answer one request; False when the connection is gone. Nothing a request does may end
        the view's threads: a handler's unexpected exception is its requester's EIO, and one
        outside the handlers (a malformed request) is logged and the loop goes on."""
        try:
            return self._dispatch(buf)
        except Exception:
            log.exception("%s: a request failed outside its handler", self.name)
            return True

    def _dispatch(self, buf: bytes) -> bool:
        _len, op, unique, nodeid, uid, gid, pid, _ext, _pad = _unpack_in(buf)
        handler = self.handlers.get(op)
        if handler is None:
            if op == abi.FORGET:
                self._forget(nodeid, abi.FORGET_IN.unpack_from(buf, _IN)[0])
            elif op == abi.BATCH_FORGET:
                for ino, n in abi.unpack_batch_forget(buf[_IN:]):
                    self._forget(ino, n)
            elif op == abi.INTERRUPT:
                self._interrupt(unique, abi.INTERRUPT_IN.unpack_from(buf, _IN)[0])
            elif op == abi.DESTROY:
                self._send(abi.reply(unique))
                return False
            else:
                # FLUSH (answered once: the kernel then stops sending it), ACCESS, xattrs, POLL,
                # LSEEK...: ENOSYS is the kernel's cue to do without them.
                self._send(abi.error_reply(unique, errno.ENOSYS))
            return True
        inflight = self.inflight
        inflight[unique] = True
        try:
            out = handler(unique, nodeid, Requester(pid, uid, gid), buf)
        except Exception as err:
            out = abi.error_reply(unique, errno_of(err))
        if out is not None and inflight.pop(unique, False):
            try:
                os.write(self.fd, out)
            except OSError as err:
                if err.errno == errno.ENODEV:
                    return False
                # ENOENT: the request was aborted meanwhile
        return True

    def _send(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV):
                log.warning("%s: reply failed: %s", self.name, err)

    def _claim(self, unique: int) -> bool:
        """Take the duty to answer `unique` (False: an INTERRUPT answered it already)."""
        return self.inflight.pop(unique, False)

    def _interrupt(self, unique: int, target: int) -> None:
        with self.lock:
            claimed = self._claim(target)
        self._send(
            abi.error_reply(target, errno.EINTR)
            if claimed
            else abi.error_reply(unique, errno.EAGAIN)
        )

    def _thread_done(self) -> None:
        with self.lock:
            self._running -= 1
            last = self._running == 0
        if last:
            try:
                self._close()
            finally:
                self.on_end(self)  # the daemon drops the view even if a node's release failed

    def _close(self) -> None:
        """After the last thread stopped (never earlier: a thread blocked in read would go on
        reading whatever the fd number gets reused for). Drops every node and its host fds; the
        notifier closes the device fd after any invalidation still queued for it."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            nodes = list(self.nodes.values())
            nodes += [
                child
                for handle in self.dirs.values()
                for _c, _n, child in handle.listing or ()
                if id(child) not in self.kept
            ]
            self.nodes.clear()
            self.kept.clear()
            self.by_key.clear()
            self.by_host.clear()
            self.files.clear()
            self.dirs.clear()
        for node in nodes:
            _release(node)
        self.notifier.push(self, b"")  # b"": close the fd, in order after queued invalidations

    def write_notification(self, message: bytes) -> None:
        """Called on the notifier's thread only."""
        if not message:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            return
        if self.fd < 0:
            return
        try:
            os.write(self.fd, message)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF, errno.ENOTDIR):
                log.warning("%s: invalidation failed: %s", self.name, err)

    # -- the inode table -----------------------------------------------------------------------

    def _commit(self, node: Node, parent: int, name: bytes, attr: Attr) -> int:
        """One more lookup of node (called with the lock held); its inode."""
        ino = self.by_key.get(node.key)
        if ino is not None:
            self.counts[ino] += 1
            if node is not self.nodes[ino]:
                _release(node)
            return ino
        ino = next(self._inodes)
        self.nodes[ino] = node
        self.kept.add(id(node))
        self.by_key[node.key] = ino
        self.counts[ino] = 1
        owner = node.owner_pid
        if owner or st.S_ISDIR(attr.mode):  # to invalidate it, or to answer ".." in it
            self.entry_of[ino] = (parent, name)
        if owner:
            self.by_host.setdefault(owner, []).append(ino)  # a new inode: not there yet
            self.watch(owner)
        return ino

    def _forget(self, ino: int, nlookup: int) -> None:
        """FORGET never fails and is never answered."""
        try:
            with self.lock:
                left = self.counts.get(ino, 0) - nlookup
                if left > 0:
                    self.counts[ino] = left
                    return
                self.counts.pop(ino, None)
                if ino == abi.ROOT_ID:
                    return
                node = self.nodes.pop(ino, None)
                self.entry_of.pop(ino, None)
                if node is None:
                    return
                self.kept.discard(id(node))
                if self.by_key.get(node.key) == ino:
                    del self.by_key[node.key]
                owner = node.owner_pid
                if owner:
                    inos = self.by_host.get(owner)
                    if inos is not None and ino in inos:  # not there once its task was flushed
                        inos.remove(ino)
                        if not inos:
                            del self.by_host[owner]
            _release(node)
        except Exception:
            log.exception("%s: forget of inode %d", self.name, ino)

    def flush_task(self, host_pid: int) -> None:
        """A task was reaped: drop its directories, and every name under them, from this view.
        New lookups get new inodes, and the kernel forgets the cached names at once (from the
        notifier's thread).

        Every name, not only the task's directory: the kernel drops the unused names below an
        invalidated directory by itself, but a name in use at that moment (a file `ps` has open,
        a directory `find` is in) stays cached once its user lets go, and holds its parents with
        it: the inodes would never be forgotten, nor the task's directory fd closed. Invalidated
        itself, such a name goes with its last user. Children first (their inodes are newer)."""
        with self.lock:
            self.epoch += 1
            self.flushed.pop(host_pid, None)
            self.flushed[host_pid] = self.epoch
            if len(self.flushed) > FLUSHES_KEPT:
                for pid in list(itertools.islice(self.flushed, FLUSHES_KEPT // 2)):
                    self.floor = self.flushed.pop(pid) + 1
            inos = sorted(self.by_host.pop(host_pid, ()), reverse=True)
            entries = []
            for ino in inos:
                node = self.nodes.get(ino)
                if node is not None:
                    if self.by_key.get(node.key) == ino:
                        del self.by_key[node.key]
                    _retire(node)  # the kernel may keep the inode: never reopen its host pid
                entry = self.entry_of.get(ino)
                if entry is not None:
                    entries.append(entry)
        for parent, name in entries:
            self.notifier.push(self, abi.notify_inval_entry(parent, name))

    def pins_gone_task(self, host_pid: int) -> bool:
        """Whether a directory this view shows for host_pid holds a task reaped since (the pid
        may be another task's by now)."""
        with self.lock:
            nodes = [self.nodes.get(ino) for ino in self.by_host.get(host_pid, ())]
        return any(node is not None and node.pins_gone_task() for node in nodes)

    def _reflush(self, since: int, host_pids: list[int]) -> None:
        """After an answer that gave inodes to these tasks: flush again those flushed since epoch
        `since` (the invalidation is written after the answer, so it reaches the new entry)."""
        with self.lock:
            again = [pid for pid in host_pids if self._flushed_since(since, pid)]
        for pid in again:
            self.flush_task(pid)

    def _flushed_since(self, since: int, host_pid: int) -> bool:
        """Whether host_pid may have been flushed since epoch `since` (called with the lock)."""
        return since < self.floor or self.flushed.get(host_pid, -1) >= since

    def flush_all(self) -> None:
        """Every task directory of this view, as when its namespace died."""
        with self.lock:
            pids = list(self.by_host)
        for pid in pids:
            self.flush_task(pid)

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise _fail(errno.ESTALE)
        return node

    def _entered(self, ino: int, req: Requester) -> Node:
        node = self._node(ino)
        if not self.gate(req):
            raise _fail(errno.EACCES)
        return node

    # -- requests --------------------------------------------------------------------------------

    def _init(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        kernel = abi.unpack_init(buf[_IN:])
        log.debug("%s: INIT %d.%d flags %#x", self.name, kernel.major, kernel.minor, kernel.flags)
        self.initialized.set()
        return abi.pack_init_reply(unique, kernel, WANTED, request_timeout=self.request_timeout)

    def _lookup(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes | None:
        parent = self._entered(nodeid, req)
        name = abi.name_of(buf[_IN:])
        epoch = self.epoch
        try:
            child = parent.lookup(os.fsdecode(name), req)
        except Absent:
            self._absent(unique, nodeid, parent, name, epoch)
            return None
        try:
            attr = child.attr(req)
        except BaseException:
            _release(child)
            raise
        with self.lock:
            if not self._claim(unique):
                _release(child)
                return None
            ino = self._commit(child, nodeid, name, attr)
        self._send(abi.reply(unique, abi.pack_entry(ino, attr, ENTRY_TIMEOUT, ATTR_TIMEOUT)))
        if child.owner_pid:
            self._reflush(epoch, [child.owner_pid])
        return None

    def _absent(self, unique: int, nodeid: int, parent: Node, name: bytes, since: int) -> None:
        """A negative entry, cacheable. Under a task flushed while it was looked up, it is
        invalidated again after the answer: the flush's shrinking of the task's directory skips a
        name still being looked up, and that name, hashed afterwards, would pin the directory."""
        with self.lock:
            if not self._claim(unique):
                return
            again = bool(parent.owner_pid) and self._flushed_since(since, parent.owner_pid)
        self._send(abi.reply(unique, abi.pack_negative_entry(ENTRY_TIMEOUT)))
        if again:
            self.notifier.push(self, abi.notify_inval_entry(nodeid, name))

    def _getattr(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        attr = self._node(nodeid).attr(req)
        return abi.reply(unique, abi.pack_attr_out(nodeid, attr, ATTR_TIMEOUT))

    def _readlink(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        return abi.reply(unique, self._entered(nodeid, req).readlink(req))

    def _open(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes | None:
        node = self._entered(nodeid, req)
        flags = abi.OPEN_IN.unpack_from(buf, _IN)[0]
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise _fail(errno.EROFS)
        data = node.content(req)
        fh = next(self._handles)
        with self.lock:
            if not self._claim(unique):
                return None
            self.files[fh] = data
        self._send(abi.reply(unique, abi.pack_open(fh, OPEN_FLAGS)))
        return None

    def _read(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        fh, offset, size, *_ = abi.READ_IN.unpack_from(buf, _IN)
        data = self.files.get(fh)
        if data is None:
            raise _fail(errno.EBADF)
        return abi.reply(unique, data[offset : offset + size])

    def _release(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        self.files.pop(abi.RELEASE_IN.unpack_from(buf, _IN)[0], None)
        return abi.reply(unique)

    def _opendir(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes | None:
        node = self._entered(nodeid, req)
        node.check_open_dir(req)
        fh = next(self._handles)
        with self.lock:
            if not self._claim(unique):
                return None
            self.dirs[fh] = _DirHandle(nodeid, req)
        self._send(abi.reply(unique, abi.pack_open(fh, 0)))
        return None

    def _releasedir(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        handle = self.dirs.pop(abi.RELEASE_IN.unpack_from(buf, _IN)[0], None)
        if handle is not None:
            self._drop_listing(handle)
        return abi.reply(unique)

    def _drop_listing(self, handle: _DirHandle) -> None:
        """Release the listing's nodes that have no inode (the others belong to the table)."""
        with self.lock:
            unkept = [c for _c, _n, c in handle.listing or () if id(c) not in self.kept]
            handle.listing = None
        for node in unkept:
            _release(node)

    def _statfs(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        return abi.reply(unique, abi.pack_statfs())

    def _listing(self, buf: bytes) -> tuple[_DirHandle, Node, int, int]:
        fh, offset, size, *_ = abi.READ_IN.unpack_from(buf, _IN)
        handle = self.dirs.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        node = self._node(handle.ino)
        if handle.listing is None or offset == 0:
            self._drop_listing(handle)
            handle.epoch = self.epoch
            handle.listing = node.listing(handle.req)
        return handle, node, offset, size

    def _entries(
        self, handle: _DirHandle, node: Node, offset: int
    ) -> Iterator[tuple[bytes, Attr, int, Node | None]]:
        """(name, attr, next offset, node) from offset on, as far as the caller takes them (each
        attribute costs a host call, and pins the task). Offsets are stable ids: "." is 1, ".."
        2, and each entry's cookie + 2 after it, so a listing that changed meanwhile resumes in
        the right place rather than at an index."""
        req = handle.req
        if offset < 1:
            yield (b".", node.attr(req), 1, None)
        if offset < 2:
            yield (b"..", _DOT_ATTR, 2, None)
        assert handle.listing is not None
        for cookie, name, child in handle.listing:
            if cookie + 2 <= offset:
                continue
            try:
                attr = child.attr(req)
            except Exception:
                continue  # vanished since the listing
            yield (os.fsencode(name), attr, cookie + 2, child)

    def _readdir(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes:
        handle, node, offset, size = self._listing(buf)
        records = []
        used = 0
        for name, attr, next_off, child in self._entries(handle, node, offset):
            # d_ino only: an inode the kernel knows when there is one (no lookup is counted here)
            ino = handle.ino if child is None else self.by_key.get(child.key, _UNKNOWN_INO)
            record = abi.pack_dirent(ino, next_off, name, attr.mode >> 12)
            if used + len(record) > size:
                break
            used += len(record)
            records.append(record)
        return abi.reply(unique, b"".join(records))

    def _readdirplus(self, unique: int, nodeid: int, req: Requester, buf: bytes) -> bytes | None:
        handle, node, offset, size = self._listing(buf)
        fitting = []
        used = 0
        for entry in self._entries(handle, node, offset):
            need = (abi.ENTRY_OUT.size + abi.DIRENT.size + len(entry[0]) + 7) & ~7
            if used + need > size:
                break
            used += need
            fitting.append(entry)
        records = []
        with self.lock:
            if not self._claim(unique):
                for entry in fitting:
                    if entry[3] is not None:
                        _release(entry[3])
                return None
            parent = self.entry_of.get(handle.ino, (abi.ROOT_ID, b""))[0]
            for name, attr, next_off, child in fitting:
                if child is None:  # "." and ".." are no lookups: the kernel skips them
                    ino = handle.ino if name == b"." else parent
                    entry_out = abi.pack_entry(ino, attr, 0, 0)
                else:
                    ino = self._commit(child, handle.ino, name, attr)
                    entry_out = abi.pack_entry(ino, attr, ENTRY_TIMEOUT, ATTR_TIMEOUT)
                records.append(abi.pack_direntplus(entry_out, ino, next_off, name, attr.mode >> 12))
        self._send(abi.reply(unique, b"".join(records)))
        pids = [e[3].owner_pid for e in fitting if e[3] is not None and e[3].owner_pid]
        if pids:
            self._reflush(handle.epoch, pids)
        return None


class _Reader:
    """Reads requests into one buffer of its own and returns each as bytes of its exact size.
    os.read would allocate READ_BUFFER bytes per request and shrink them: under load that churn
    of large blocks fragments the C heap until the daemon's RSS keeps growing."""

    __slots__ = ("_buffer", "_view")

    def __init__(self) -> None:
        self._buffer = bytearray(READ_BUFFER)
        self._view = memoryview(self._buffer)

    def __call__(self, fd: int) -> bytes:
        return bytes(self._view[: os.readv(fd, (self._buffer,))])


def _release(node: Node) -> None:
    try:
        node.release()
    except Exception:
        log.exception("releasing a node")


def _retire(node: Node) -> None:
    try:
        node.retire()
    except Exception:
        log.exception("retiring a node")
