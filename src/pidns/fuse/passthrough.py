"""Passthrough reads: a file's snapshot, taken at open, goes into a memfd the kernel reads itself.

With FUSE_PASSTHROUGH negotiated, an OPEN answered with FOPEN_PASSTHROUGH and a backing id makes
the kernel serve read(2) (and mmap) from that backing file: no READ reaches the daemon, so a file
costs one round trip instead of three. What the kernel imposes, and how each is met:

- Backing ids come from an ioctl on the device that needs CAP_SYS_ADMIN in the initial user
  namespace; the first refusal turns passthrough off for the connection (direct I/O from then on).
- Files of a stacked filesystem cannot back (procfs counts as one: ELOOP), a memfd can. Making one
  and registering it costs more than rewriting one in place, hence a pool of slots.
- While an inode is open with a backing file, every further open of it must name that same backing
  file (another id, or no passthrough at all, fails that open with EIO). The kernel drops it at the
  inode's last close. So an inode's slot is never rewritten while an open of it is out: a second
  open shares it when its snapshot is the same bytes, and otherwise waits (its answer, not a
  thread) until the others are released, then goes with its own snapshot; an open held longer
  than WAIT_LIMIT makes the waiting ones fail with EBUSY.
- A reader may mmap the file and keep the mapping after its close, seeing whatever the memfd holds
  later. A slot therefore only ever holds snapshots of one inode taken for one uid (the requester's
  fsuid): what a lingering mapping shows is that file as its own user may read it.

The memfds are the daemon's (CAP_SYS_ADMIN: root's), so only root sees them in /proc/DAEMON/fd.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pidns.kernel import fuse_abi as abi

log = logging.getLogger(__name__)

# Idle slots kept per connection (each an fd and at most a snapshot's pages): enough for a `ps`
# of 1,000 tasks to find every file's slot again on its next pass. All connections together keep
# no more than a quarter of the fds the process may open: the rest is for the files it serves.
IDLE_KEPT = 4096
_idle_lock = threading.Lock()
_idle_total = 0  # idle slots of every connection


def _idle_cap() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4


def _count_idle(change: int) -> int:
    """Add change to the idle slots of every connection; the new total."""
    global _idle_total
    with _idle_lock:
        _idle_total += change
        return _idle_total


WAIT_LIMIT = 2.0  # s an open may wait for the others of its inode before it fails (EBUSY)
BUSY = -1  # open(): another open of the inode is out with other bytes
EXPIRED = -2  # wait(): WAIT_LIMIT passed
_DISABLING = (errno.EPERM, errno.EACCES, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


@dataclass(slots=True)
class _Slot:
    key: tuple[int, int]  # (inode, uid): the one file and user whose snapshots it holds
    fd: int
    backing: int
    data: bytes = b""  # what the memfd holds: a snapshot the same as the last is not written


@dataclass(slots=True)
class _Waiter:
    uid: int
    data: bytes
    resume: Callable[[int | None], None]
    deadline: float


@dataclass(slots=True)
class _Open:
    slot: _Slot
    data: bytes | None  # None: a predecessor's opens (see adopt), whose bytes nobody knows
    opens: int


def _unchanged(ino: int, backing: int, opens: int) -> None:
    return None


class Backings:
    """The backing files of one connection (its /dev/fuse fd). Thread-safe."""

    def __init__(self, device: int, idle_kept: int = IDLE_KEPT) -> None:
        self.device = device
        self.idle_kept = idle_kept
        self.idle_cap = _idle_cap()
        self.enabled = True
        self.lock = threading.Lock()
        self.active: dict[int, _Open] = {}  # inode -> its slot while opens of it are out
        self.idle: OrderedDict[tuple[int, int], _Slot] = OrderedDict()  # oldest first
        self.by_inode: dict[int, set[int]] = {}  # inode -> uids with an idle slot
        self.waiting: dict[int, list[_Waiter]] = {}  # inode -> opens waiting for its releases
        self.opened = 0  # passthrough opens so far
        self.created = 0  # slots made (memfd + backing id) so far
        self.written = 0  # snapshots written into a slot so far (not those it held already)
        # Told, under the lock, each inode's passthrough opens out (and their backing id) when
        # they change, and each backing id registered: what a successor server needs (adopt).
        self.on_change: Callable[[int, int, int], None] = _unchanged
        self.on_registered: Callable[[int], None] = lambda backing: None

    def adopt(self, foreign: dict[int, tuple[int, int]], highest: int, closed: int = 0) -> None:
        """Take up a connection from a predecessor server: `foreign` maps each inode with
        passthrough opens out to (their backing id, how many). Until their RELEASEs come
        (release_foreign), new opens of such an inode wait as for any open with other bytes (the
        kernel fails an open that names another backing file, or none). Every backing id up to
        `highest` is the predecessor's: unregistered now (open files keep theirs), but for those
        up to `closed`, which a server before it did (the kernel gives out ids in rising order,
        so the range to close is only that of the last server, not of every one since the first)."""
        with self.lock:
            for backing in range(closed + 1, highest + 1):
                with contextlib.suppress(OSError):
                    fcntl.ioctl(self.device, abi.BACKING_CLOSE, abi.backing_id(backing), True)
            for ino, (backing, opens) in foreign.items():
                if opens > 0:
                    self.active[ino] = _Open(_Slot((ino, -1), -1, backing), None, opens)

    def release_foreign(self, ino: int) -> None:
        """A RELEASE of a handle this server did not give out: one of the predecessor's opens
        of ino, if it had any out (a predecessor's direct I/O open of an inode that it also had
        open by passthrough cannot be told apart: passthrough failed for it, a rare event)."""
        with self.lock:
            current = self.active.get(ino)
            foreign = current is not None and current.data is None
        if foreign:
            self.release(ino)

    def open(self, ino: int, uid: int, data: bytes) -> int | None:
        """A backing id serving `data` for this open of ino (counted until release), None when
        the open is to be served by direct I/O (passthrough off or failing) and BUSY when another
        open of ino is out with other bytes: then the open must wait (see wait)."""
        with self.lock:
            return self._open(ino, uid, data)

    def wait(self, ino: int, uid: int, data: bytes, resume: Callable[[int | None], None]) -> None:
        """Have resume called with open()'s answer (never BUSY) once ino's outstanding opens are
        released, or with EXPIRED after WAIT_LIMIT s. At once if they already are."""
        with self.lock:
            backing = self._open(ino, uid, data)
            if backing == BUSY:
                deadline = time.monotonic() + WAIT_LIMIT
                self.waiting.setdefault(ino, []).append(_Waiter(uid, data, resume, deadline))
                return
        resume(backing)

    def expire(self) -> None:
        """Answer EXPIRED to the waits past their deadline (an open held that long blocks them)."""
        now = time.monotonic()
        expired = []
        with self.lock:
            for ino, waiters in list(self.waiting.items()):
                expired += [w for w in waiters if w.deadline <= now]
                waiters[:] = [w for w in waiters if w.deadline > now]
                if not waiters:
                    del self.waiting[ino]
        for waiter in expired:
            waiter.resume(EXPIRED)

    def release(self, ino: int) -> None:
        """One open of ino that open() counted is released (or was never answered)."""
        resumed: list[tuple[_Waiter, int | None]] = []
        with self.lock:
            current = self.active.get(ino)
            if current is None:
                return
            current.opens -= 1
            self.on_change(ino, current.slot.backing, current.opens)
            if current.opens > 0:
                return
            del self.active[ino]
            slot = current.slot
            if current.data is None:  # the predecessor's: its backing id is unregistered
                total = _count_idle(0)
            else:
                self.idle[slot.key] = slot
                self.by_inode.setdefault(ino, set()).add(slot.key[1])
                total = _count_idle(1)
            while self.idle and (len(self.idle) > self.idle_kept or total > self.idle_cap):
                _key, old = self.idle.popitem(last=False)
                self._unindex(old)
                self._close(old)
                total = _count_idle(-1)
            # The kernel dropped the inode's backing file at its last close: the waiting opens
            # go now, in turn; those whose bytes differ from the first's wait for the next round.
            waiters = self.waiting.pop(ino, [])
            for i, waiter in enumerate(waiters):
                backing = self._open(ino, waiter.uid, waiter.data)
                if backing == BUSY:
                    self.waiting.setdefault(ino, []).append(waiter)
                    continue
                resumed.append((waiter, backing))
                if backing is None:  # passthrough failed: nothing is out, all go by direct I/O
                    resumed += [(w, None) for w in waiters[i + 1 :]]
                    break
        for waiter, backing in resumed:
            waiter.resume(backing)

    def forget(self, ino: int) -> None:
        """The kernel forgot ino: its slots can never be named again."""
        with self.lock:
            for uid in self.by_inode.pop(ino, ()):
                slot = self.idle.pop((ino, uid), None)
                if slot is not None:
                    self._close(slot)
                    _count_idle(-1)

    def close(self) -> None:
        """The connection ended (the kernel dropped every backing id with it)."""
        with self.lock:
            self.enabled = False
            slots = list(self.idle.values()) + [
                o.slot for o in self.active.values() if o.data is not None
            ]
            _count_idle(-len(self.idle))
            self.idle.clear()
            self.active.clear()
            self.by_inode.clear()
            self.waiting.clear()  # their requests die with the connection
            for slot in slots:
                os.close(slot.fd)

    # -- under the lock --------------------------------------------------------------------------

    def _open(self, ino: int, uid: int, data: bytes) -> int | None:
        current = self.active.get(ino)
        if current is not None:  # even when passthrough went off since: nothing else opens it
            if current.data != data:
                return BUSY
            current.opens += 1
            self.opened += 1
            self.on_change(ino, current.slot.backing, current.opens)
            return current.slot.backing
        if not self.enabled:
            return None
        if self.waiting.get(ino):
            return BUSY  # after the opens already waiting
        slot = self._take(ino, uid)
        if slot is None:
            return None
        if data != slot.data:  # a task at rest renders the same bytes at every open
            try:
                os.pwrite(slot.fd, data, 0)
                if len(data) < len(slot.data):
                    os.ftruncate(slot.fd, len(data))
            except OSError as err:  # ENOSPC, ENOMEM: this open by direct I/O
                log.warning("passthrough: writing a snapshot failed: %s", err)
                self._close(slot)
                return None
            slot.data = data
            self.written += 1
        self.active[ino] = _Open(slot, data, 1)
        self.opened += 1
        self.on_change(ino, slot.backing, 1)
        return slot.backing

    def _take(self, ino: int, uid: int) -> _Slot | None:
        key = (ino, uid)
        slot = self.idle.pop(key, None)
        if slot is not None:
            self._unindex(slot)
            _count_idle(-1)
            return slot
        try:
            fd = os.memfd_create("pidns-view", os.MFD_CLOEXEC)
        except OSError as err:  # EMFILE, ENOMEM: this open by direct I/O
            log.warning("passthrough: no memfd: %s", err)
            return None
        try:
            backing = fcntl.ioctl(self.device, abi.BACKING_OPEN, abi.backing_map(fd), True)
        except OSError as err:
            os.close(fd)
            if err.errno in _DISABLING:
                log.info("passthrough refused (%s): serving reads by direct I/O", err)
                self.enabled = False
            else:
                log.warning("passthrough: registering a backing file failed: %s", err)
            return None
        self.created += 1
        self.on_registered(backing)
        return _Slot(key, fd, backing)

    def _unindex(self, slot: _Slot) -> None:
        ino, uid = slot.key
        uids = self.by_inode.get(ino)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self.by_inode[ino]

    def _close(self, slot: _Slot) -> None:
        try:
            fcntl.ioctl(self.device, abi.BACKING_CLOSE, abi.backing_id(slot.backing), True)
        except OSError as err:
            log.debug("passthrough: closing backing id %d: %s", slot.backing, err)
        os.close(slot.fd)
