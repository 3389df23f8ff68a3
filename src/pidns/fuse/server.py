"""One FUSE connection (/dev/fuse fd): the threads that read requests and answer each exactly once.

A plain thread reads the device (no event loop: waiting costs no Python) and answers each request
with one os.write; it polls the device only after SPIN seconds without a request. Operations go to
the bridge; the protocol itself (INIT, FORGET, INTERRUPT, DESTROY, what is not served) is answered
here.

Answer-once: `inflight` holds every request read and not answered yet; whoever pops a request's
unique from it answers that request. INTERRUPT: a request still being handled (a thread of the
connection is stuck in it) is answered EINTR at once and the late answer dropped; one this loop has
not registered yet is answered EAGAIN, which makes the kernel send the interrupt again.

Invalidations are written by the Notifier's thread, never by a request thread: the kernel takes a
directory's lock to invalidate, and a request pending in that directory holds it until a request
thread answers.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from pidns.errors import PidnsError
from pidns.fuse.bridge import Bridge, Reply, no_op
from pidns.fuse.inodes import release
from pidns.fuse.node import Requester
from pidns.fuse.passthrough import Backings
from pidns.fuse.takeover import Negotiated
from pidns.kernel import fuse_abi as abi

log = logging.getLogger(__name__)

# Room for any request we serve (max_write is 4096: the kernel answers bigger ones itself, E2BIG
# or EIO); a buffer per request thread, so no more than needed.
READ_BUFFER = abi.MIN_READ_BUFFER
# Asked of the kernel at INIT. READDIRPLUS puts the attributes of a directory's entries into its
# listing, so a reader walking it costs no LOOKUP or GETATTR per entry (AUTO: only while the reader
# also looks entries up; a bare `ls` pins no inode per entry); PARALLEL_DIROPS lets lookups in one
# directory proceed without the kernel serialising them.
WANTED = (
    abi.DO_READDIRPLUS
    | abi.READDIRPLUS_AUTO
    | abi.PARALLEL_DIROPS
    | abi.ASYNC_READ
    | abi.INIT_EXT
    | abi.REQUEST_TIMEOUT
)
# A request unanswered this long (s) makes the kernel abort the connection: readers get ENOTCONN
# instead of hanging on a server that stopped answering (stopped, or stuck in a bug). The kernel
# checks every 15 s and never allows less than that.
REQUEST_TIMEOUT = 60
_unpack_in = abi.IN_HEADER.unpack_from
_OPCODES = 64  # above every opcode the kernel sends
SPIN = 0.0002  # s the request thread stays awake after an answer
STUCK = 0.1  # s in one request before the standby thread answers the others
_RETRY = (errno.ENOENT, errno.EINTR, errno.EAGAIN)  # ENOENT: a request aborted before we read it


def errno_of(err: BaseException) -> int:
    """What the caller gets for a handler's exception: its errno, EIO for anything unexpected."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    if isinstance(err, PidnsError):
        return err.errno
    log.error("unexpected error in a FUSE handler", exc_info=err)
    return errno.EIO


class Watchdog:
    """The one thread that notices, for every connection, a request thread stuck in one request (a
    file that blocks, say) and rouses that connection's standby thread. Standby threads sleep until
    then, so an idle connection costs no wake-ups: the daemon wakes STUCK⁻¹ times a second in all."""

    def __init__(self) -> None:
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuse-watchdog", daemon=True)
        self._thread.start()

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._connections.add(connection)

    def remove(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(STUCK):
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                try:
                    connection.check_stuck()
                except Exception:
                    log.exception("%s: watchdog", connection.name)


class Notifier:
    """The one thread that writes invalidations to the devices of every connection, in order
    (and closes each device, after what was queued for it)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Connection, bytes | Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="fuse-notify", daemon=True)
        self._thread.start()

    def push(self, connection: Connection, message: bytes) -> None:
        self._queue.put((connection, message))

    def call(self, connection: Connection, work: Callable[[], None]) -> None:
        """Run work on this thread, in order with connection's invalidations: its device is
        open until this thread closes it."""
        self._queue.put((connection, work))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            connection, message = item
            try:  # one connection's failure must not stop invalidations for all the others
                if isinstance(message, bytes):
                    connection.write_notification(message)
                else:
                    message()
            except Exception:
                log.exception("%s: notification", connection.name)


class Connection:
    """One mount: its device fd, its bridge, the threads that answer its requests."""

    def __init__(
        self,
        fd: int,
        bridge: Bridge,
        notifier: Notifier,
        *,
        watchdog: Watchdog | None = None,
        on_end: Callable[[Connection], None] = lambda connection: None,
        name: str = "fuse",
        request_timeout: int = REQUEST_TIMEOUT,
        passthrough: bool = True,
        adopted: Negotiated | None = None,
        on_init: Callable[[Connection], None] = lambda connection: None,
        resend: bool = True,
    ) -> None:
        """With a watchdog the connection has a standby thread for when its request thread is
        stuck. With passthrough, reads are served by the kernel from backing files when the
        kernel offers it and the daemon may (passthrough.py); direct I/O otherwise. `adopted`: a
        connection a predecessor initialised, with what it agreed then (no INIT comes); on_init
        is called once the kernel's INIT is answered; resend=False pretends the kernel cannot
        send requests again (see takeover.py)."""
        self.fd = fd  # owned: closed once every thread has stopped
        self.bridge = bridge
        self.notifier = notifier
        self.watchdog = watchdog
        self.request_timeout = request_timeout
        self.passthrough = passthrough
        self.on_end = on_end
        self.name = name
        bridge.notify = lambda message: notifier.push(self, message)
        self.lock = bridge.table.lock  # `inflight` and the inode table change together under it
        self.inflight: dict[int, bool] = {}  # requests read and not answered yet
        self.requests = [0] * _OPCODES  # requests read, by opcode: the round trips readers paid
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
        self.negotiated = adopted
        self.on_init = on_init
        self.resend = resend
        self._restoring = adopted is not None  # resent requests may still come
        # Handing over to a successor: the threads stop reading and end without closing anything.
        self._detaching = False
        self._detached = threading.Event()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        if adopted is not None:
            self.initialized.set()
            if passthrough and adopted.agreed & abi.PASSTHROUGH:
                # backing files of its own, minding the opens of the predecessor's still out
                self.bridge.use_backings(Backings(fd))

    @property
    def survives(self) -> bool:
        """Whether a successor can take this connection up without losing a request."""
        return self.resend and self.negotiated is not None and self.negotiated.resend

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        os.set_blocking(self.fd, False)  # the loop spins on EAGAIN, then waits in poll()
        if self._restoring and self.survives:
            # adopted: what the predecessor read and never answered, once more, queued ahead of
            # the rest before anything is read (the first request not sent again ends the
            # taking back of counts, see _after_takeover)
            self._write(abi.notify_resend())
        for thread in self._threads:
            thread.start()
        if self.watchdog is not None:
            self.watchdog.add(self)

    def detach(self, timeout: float) -> bool:
        """Stop reading requests and let the ones being answered finish, leaving the connection
        (its fd, its table) to a successor; False when a request thread is still stuck in one."""
        with self.lock:  # the last thread closes the eventfd under it
            self._detaching = True
            if self._running == 0:
                # ended already: handed over by an earlier call, or the connection is gone
                return self._detached.is_set()
            os.eventfd_write(self._wake, 1)
        self._rouse.set()
        return self._detached.wait(timeout)

    def check_stuck(self) -> None:
        """The watchdog's look: the same request as at its last look means stuck for STUCK s.
        Opens waiting too long for others of their inode are answered then too."""
        backings = self.bridge.backings
        if backings is not None and backings.waiting:
            backings.expire()
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
        `ps` through a view; an idle connection costs nothing."""
        fd = self.fd
        read = _Reader()
        clock = time.perf_counter
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        handle = self._handle
        until = 0.0
        try:
            while not self._detaching:
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
        read = None  # its buffer only once needed: most connections never need it
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while True:
                self._rouse.wait()
                self._rouse.clear()
                stuck = self._stuck
                if self._ending or self._detaching:
                    return
                if stuck is None:
                    continue
                read = read or _Reader()
                log.warning(
                    "%s: a request has taken over %.1fs; serving others meanwhile", self.name, STUCK
                )
                while not (self._ending or self._detaching) and self.current is stuck:
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
        the connection's threads: a handler's unexpected exception is its requester's EIO, and one
        outside the handlers (a malformed request) is logged and the loop goes on."""
        try:
            return self._dispatch(buf)
        except Exception:
            log.exception("%s: a request failed outside its handler", self.name)
            return True

    def _dispatch(self, buf: bytes) -> bool:
        _len, op, unique, nodeid, uid, gid, pid, _ext, _pad = _unpack_in(buf)
        if op < _OPCODES:
            self.requests[op] += 1
        handler = self.bridge.handlers.get(op)
        if handler is None:
            return self._protocol(op, unique, nodeid, buf)
        if self._restoring:
            self._after_takeover(unique)
        inflight = self.inflight
        inflight[unique] = True
        try:
            reply = handler(nodeid, Requester(pid, uid, gid), buf)
        except Exception as err:
            if inflight.pop(unique, False):
                return self._write(abi.error_reply(unique, errno_of(err)))
            return True
        if reply.defer is not None:
            reply.defer(lambda later: self._later(unique, later))
            return True
        return self._answer(unique, reply)

    def _later(self, unique: int, reply: Reply | OSError) -> None:
        """A deferred answer, on whichever thread has it (an INTERRUPT may have come first)."""
        if isinstance(reply, OSError):
            if self.inflight.pop(unique, False):
                self._write(abi.error_reply(unique, errno_of(reply)))
            return
        self._answer(unique, reply)

    def _answer(self, unique: int, reply: Reply) -> bool:
        commit = reply.commit
        if commit is None:
            if not self.inflight.pop(unique, False):
                return True
            body = reply.body
        else:
            with self.lock:
                ours = self.inflight.pop(unique, False)
                if ours:
                    self.bridge.table.unique = unique  # kept with what it counts
                    try:
                        body = commit()
                    except Exception as err:
                        return self._write(abi.error_reply(unique, errno_of(err)))
            if not ours:
                reply.drop()
                return True
        code = self._send(abi.reply(unique, body))
        if code == errno.ENOENT:
            reply.unsent()
        if reply.after is not no_op:
            reply.after()
        return code != errno.ENODEV

    def _write(self, message: bytes) -> bool:
        """Write an answer; False once the device is gone (ENODEV)."""
        return self._send(message) != errno.ENODEV

    def _send(self, message: bytes) -> int:
        """Write an answer; 0, or the errno the write failed with (ENOENT: the request was
        aborted meanwhile, ENODEV: the device is gone)."""
        try:
            os.write(self.fd, message)
        except OSError as err:
            if err.errno not in (errno.ENODEV, errno.ENOENT):
                log.warning("%s: reply failed: %s", self.name, err)
            return err.errno or errno.EIO
        return 0

    def _protocol(self, op: int, unique: int, nodeid: int, buf: bytes) -> bool:
        if op == abi.FORGET:
            self.bridge.forget(nodeid, abi.forget_nlookup(buf))
        elif op == abi.BATCH_FORGET:
            for ino, n in abi.batch_forgets(buf):
                self.bridge.forget(ino, n)
        elif op == abi.INTERRUPT:
            self._interrupt(unique, abi.interrupt_target(buf))
        elif op == abi.INIT:
            kernel = abi.init_in(buf)
            log.debug(
                "%s: INIT %d.%d flags %#x", self.name, kernel.major, kernel.minor, kernel.flags
            )
            wanted = WANTED | (abi.PASSTHROUGH if self.passthrough else 0)
            if kernel.flags & wanted & abi.PASSTHROUGH:
                self.bridge.use_backings(Backings(self.fd))
            self.initialized.set()
            reply = abi.pack_init_reply(
                unique, kernel, wanted, request_timeout=self.request_timeout
            )
            if kernel.major == abi.KERNEL_VERSION:
                self.negotiated = Negotiated(
                    kernel.major,
                    min(kernel.minor, abi.KERNEL_MINOR_VERSION),
                    kernel.flags,
                    kernel.flags & wanted,
                )
            alive = self._write(reply)
            if self.negotiated is not None:
                try:
                    self.on_init(self)
                except Exception:
                    log.exception("%s: after INIT", self.name)
            return alive
        elif op == abi.DESTROY:
            self._write(abi.reply(unique))
            return False
        else:
            # FLUSH (answered once: the kernel then stops sending it), ACCESS, xattrs, POLL,
            # LSEEK...: ENOSYS is the kernel's cue to do without them.
            return self._write(abi.error_reply(unique, errno.ENOSYS))
        return True

    def _after_takeover(self, unique: int) -> None:
        """The first requests of an adopted connection: those the kernel sends again come first
        (it queues them ahead of the others); the counts a predecessor may have made for their
        answers are taken back. The first request not sent again ends that."""
        if unique & abi.UNIQUE_RESEND:
            self.bridge.resent(unique & ~abi.UNIQUE_RESEND)
        else:
            self._restoring = False
            self.bridge.table.resent_done()

    def stats(self) -> dict[str, Any]:
        """Requests read so far by operation name, and what passthrough did."""
        requests = {abi.OP_NAMES.get(op, str(op)): n for op, n in enumerate(self.requests) if n}
        backings = self.bridge.backings
        passthrough: dict[str, Any] = {"negotiated": backings is not None}
        if backings is not None:
            passthrough.update(
                enabled=backings.enabled,
                opens=backings.opened,
                slots_made=backings.created,
                snapshots_written=backings.written,
                slots_idle=len(backings.idle),
            )
        return {"requests": requests, "passthrough": passthrough}

    def _interrupt(self, unique: int, target: int) -> None:
        with self.lock:
            claimed = self.inflight.pop(target, False)
        self._write(
            abi.error_reply(target, errno.EINTR)
            if claimed
            else abi.error_reply(unique, errno.EAGAIN)
        )

    def _thread_done(self) -> None:
        with self.lock:
            self._running -= 1
            last = self._running == 0
            if last:
                os.close(self._wake)
        if last and self._detaching:
            self._detached.set()  # the fd and the table are the successor's now
            return
        if last:
            try:
                self._close()
            finally:
                self.on_end(self)  # the owner drops the connection even if a release failed

    def _close(self) -> None:
        """After the last thread stopped (never earlier: a thread blocked in read would go on
        reading whatever the fd number gets reused for). Releases every node; the notifier closes
        the device fd after any invalidation still queued for it."""
        if self._closed:
            return
        self._closed = True
        for node in self.bridge.close():
            release(node)
        self.notifier.push(self, b"")  # b"": close the fd, in order after queued invalidations

    def sweep_lost(self) -> None:
        """On the notifier's thread, some time after a takeover: the inodes the kernel forgot
        in FORGETs the dead predecessor read and never applied are forgotten here too."""
        if self.fd < 0:
            return
        forgotten = self.bridge.sweep(self._known)
        if forgotten:
            log.info("%s: %d inodes of FORGETs a predecessor lost, forgotten", self.name, forgotten)

    def _known(self, ino: int) -> bool:
        """Whether the kernel has ino in its inode cache (an invalidation of its attributes only
        fails with ENOENT there when it has not). On the notifier's thread only."""
        try:
            os.write(self.fd, abi.notify_inval_inode(ino, -1, 0))
        except OSError as err:
            return err.errno != errno.ENOENT
        return True

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
