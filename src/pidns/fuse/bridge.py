"""FUSE operations as calls on nodes. No policy: what a path is, lists and contains comes from the
nodes; who may enter at all from the gate the filesystem gives.

One reply convention: every handler returns a Reply (or raises, for an errno). A reply that hands
the kernel something to count (an inode, a handle) carries a `commit`, which the server runs
under the table's lock only while the request is still its to answer: an INTERRUPT answered first
makes it `drop` instead, so a lookup count never includes an answer the kernel did not get.

Entries live long in the kernel's cache (ENTRY_TIMEOUT): that is safe because a filesystem
invalidates an owner's names explicitly (invalidate_owner) when what they show goes.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as st
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from pidns.fuse.handles import file_handle, same_snapshot, snapshot_length
from pidns.fuse.inodes import InodeTable, release
from pidns.fuse.node import Absent, Attr, Node, Requester, fail
from pidns.fuse.passthrough import BUSY, EXPIRED, Backings
from pidns.kernel import fuse_abi as abi

ENTRY_TIMEOUT = 86400.0  # correct because of explicit invalidation
ATTR_TIMEOUT = 1.0  # owners and link counts may change (setuid, threads)
OPEN_FLAGS = abi.FOPEN_DIRECT_IO | abi.FOPEN_NOFLUSH  # content is a snapshot taken at open
PASSTHROUGH_FLAGS = abi.FOPEN_PASSTHROUGH | abi.FOPEN_NOFLUSH  # the snapshot is in a backing file
_DOT_ATTR = Attr(st.S_IFDIR | 0o555, 2, 0, 0)
_UNKNOWN_INO = 0xFFFFFFFF


def no_op() -> None:
    """A Reply's hook that does nothing (the server skips calling it)."""


@dataclass(slots=True)
class Reply:
    body: bytes = b""
    commit: Callable[[], bytes] | None = None  # under the lock, if still ours: the body
    drop: Callable[[], None] = no_op  # when an INTERRUPT answered the request first
    after: Callable[[], None] = no_op  # once the answer is written
    unsent: Callable[[], None] = no_op  # the kernel took no answer (the request was aborted)
    # Set instead of an answer: called with the function that answers later (a Reply, or an
    # OSError for an errno), on whichever thread has the answer then
    defer: Callable[[Callable[[Reply | OSError], None]], None] | None = None


ANSWERED = Reply()  # the empty answer (a RELEASE's): one for all, never changed


@dataclass(slots=True)
class _DirHandle:
    ino: int
    req: Requester
    listing: list[tuple[int, str, Node]] | None = None
    epoch: int = 0  # the table's invalidation epoch when the listing was taken


Handler = Callable[[int, Requester, bytes], Reply]


class Bridge:
    def __init__(
        self,
        root: Node,
        gate: Callable[[Requester], bool] = lambda req: True,
        on_owner: Callable[[Hashable], None] = lambda owner: None,
        handle_base: int = 0,
    ) -> None:
        """handle_base: where this server's handles start, above those of the servers before it
        on the same connection (a successor must not give out a handle its predecessor did)."""
        self.table = InodeTable(root, on_owner)
        self.gate = gate  # may this requester enter the filesystem at all
        self.notify: Callable[[bytes], None] = lambda message: None  # set by the server
        self.files: dict[int, bytes] = {}  # fh -> the snapshot rendered at open
        self.passed: dict[int, int] = {}  # fh -> inode, for the opens served by passthrough
        self.backings: Backings | None = None  # set by the server once passthrough is agreed
        self.dirs: dict[int, _DirHandle] = {}
        self._handles = itertools.count(handle_base + 1)
        self.handlers: dict[int, Handler] = {
            abi.LOOKUP: self.lookup,
            abi.GETATTR: self.getattr,
            abi.READLINK: self.readlink,
            abi.OPEN: self.open,
            abi.READ: self.read,
            abi.RELEASE: self.release,
            abi.OPENDIR: self.opendir,
            abi.READDIR: self.readdir,
            abi.READDIRPLUS: self.readdirplus,
            abi.RELEASEDIR: self.releasedir,
            abi.STATFS: self.statfs,
        }

    # -- owners ----------------------------------------------------------------------------------

    def invalidate_owner(self, owner: Hashable) -> None:
        """owner's nodes are gone: new lookups get new inodes, and the kernel forgets the names at
        once (through the notifier: the kernel takes the directory's lock to invalidate, which a
        request pending in that directory holds until it is answered).

        Every name, not only the top of the owner's tree: the kernel drops the unused names below
        an invalidated directory by itself, but a name in use at that moment (a file open, a
        directory someone is in) stays cached once its user lets go, and holds its parents with
        it. Invalidated itself, such a name goes with its last user."""
        for parent, name in self.table.invalidate_owner(owner):
            self.notify(abi.notify_inval_entry(parent, name))

    def invalidate_all(self) -> None:
        for owner in self.table.owners():
            self.invalidate_owner(owner)

    def _again_if_invalidated(self, since: int, owners: list[Hashable]) -> None:
        """After an answer that gave inodes of these owners: invalidate again those invalidated
        since epoch `since` (written after the answer, the invalidation reaches the new entry)."""
        with self.table.lock:
            again = [o for o in owners if self.table.invalidated_since(since, o)]
        for owner in again:
            self.invalidate_owner(owner)

    # -- nodes -----------------------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.table.node(ino)
        if node is None:
            raise fail(errno.ESTALE)
        return node

    def _entered(self, ino: int, req: Requester) -> Node:
        node = self._node(ino)
        if not self.gate(req):
            raise fail(errno.EACCES)
        return node

    # -- operations ------------------------------------------------------------------------------

    def lookup(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        parent = self._entered(nodeid, req)
        name = abi.lookup_name(request)
        table = self.table
        since = table.epoch
        try:
            child = parent.lookup(os.fsdecode(name), req)
        except Absent:
            return self._absent(nodeid, parent, name, since)
        try:
            attr = child.attr(req)
        except BaseException:
            release(child)
            raise

        def commit() -> bytes:
            ino = table.commit(child, nodeid, name, attr)
            return abi.pack_entry(ino, attr, ENTRY_TIMEOUT, ATTR_TIMEOUT)

        owner = child.owner
        after = no_op if owner is None else lambda: self._again_if_invalidated(since, [owner])
        return Reply(commit=commit, drop=lambda: release(child), after=after)

    def _absent(self, nodeid: int, parent: Node, name: bytes, since: int) -> Reply:
        """A negative entry, cacheable. Under an owner invalidated while it was looked up, it is
        invalidated again after the answer: the invalidation's shrinking of the directory skips a
        name still being looked up, and that name, hashed afterwards, would pin the directory."""
        owner = parent.owner
        again = False

        def commit() -> bytes:
            nonlocal again
            again = owner is not None and self.table.invalidated_since(since, owner)
            return abi.pack_negative_entry(ENTRY_TIMEOUT)

        def after() -> None:
            if again:
                self.notify(abi.notify_inval_entry(nodeid, name))

        return Reply(commit=commit, after=after)

    def getattr(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        attr = self._node(nodeid).attr(req)
        return Reply(abi.pack_attr_out(nodeid, attr, ATTR_TIMEOUT))

    def readlink(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        return Reply(self._entered(nodeid, req).readlink(req))

    def open(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        node = self._entered(nodeid, req)
        if abi.open_flags(request) & (os.O_WRONLY | os.O_RDWR):
            raise fail(errno.EROFS)
        data = node.content(req)
        fh = self._file_handle(data)
        backings = self.backings
        if backings is None:
            return self._opened(fh, data, nodeid, None)
        unique = abi.IN_HEADER.unpack_from(request)[2]
        backing = backings.open(nodeid, req.uid, data)
        if backing != BUSY:
            if backing is not None:
                self.table.opened(nodeid, unique)
            return self._opened(fh, data, nodeid, backing)

        def defer(answer: Callable[[Reply | OSError], None]) -> None:
            def resume(backing: int | None) -> None:
                if backing == EXPIRED:
                    answer(fail(errno.EBUSY))
                else:
                    if backing is not None:
                        self.table.opened(nodeid, unique)
                    answer(self._opened(fh, data, nodeid, backing))

            backings.wait(nodeid, req.uid, data, resume)

        return Reply(defer=defer)

    def _opened(self, fh: int, data: bytes, nodeid: int, backing: int | None) -> Reply:
        """The answer to an open: passthrough from `backing` (counted by the backings until its
        release), or direct I/O from the snapshot when None."""

        def commit() -> bytes:
            self.files[fh] = data  # READs, should any come, are served from it all the same
            if backing is None:
                return abi.pack_open(fh, OPEN_FLAGS)
            self.passed[fh] = nodeid
            return abi.pack_open(fh, PASSTHROUGH_FLAGS, backing)

        def undo() -> None:  # the kernel never got this open: it will send no RELEASE for it
            self.files.pop(fh, None)
            self.passed.pop(fh, None)
            if backing is not None and self.backings is not None:
                self.backings.release(nodeid)

        return Reply(commit=commit, drop=undo, unsent=undo)

    def read(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        fh, offset, size = abi.read_in(request)
        data = self.files.get(fh)
        if data is None:
            data = self._snapshot_again(nodeid, req, fh, offset)
        return Reply(data[offset : offset + size])

    def _file_handle(self, data: bytes) -> int:
        """A handle for a new snapshot, unlike any open one (handles.py)."""
        while True:
            fh = file_handle(next(self._handles), data)
            if fh not in self.files:
                return fh

    def _snapshot_again(self, nodeid: int, req: Requester, fh: int, offset: int) -> bytes:
        """A READ of a handle a predecessor server gave out (handles.py): rendered again."""
        length = snapshot_length(fh)
        if length is not None and offset >= length:
            return b""
        data = self._entered(nodeid, req).content(req)
        if offset and not same_snapshot(fh, data):
            raise fail(errno.EIO)  # the reader's head came from another rendering
        self.files[fh] = data
        return data

    def release(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        fh = abi.release_fh(request)
        self.files.pop(fh, None)
        ino = self.passed.pop(fh, None)
        if self.backings is not None:
            if ino is not None:
                self.backings.release(ino)
            else:  # not ours: maybe a predecessor's passthrough open
                self.backings.release_foreign(nodeid)
        return ANSWERED

    def use_backings(self, backings: Backings) -> None:
        """Passthrough was agreed: serve opens from these backing files, keeping what a
        successor needs of them in the table; after a takeover, mind the predecessor's."""
        backings.on_change = self.table.passed
        backings.on_registered = self.table.registered
        file = self.table.file
        if file is not None and (self.table.foreign or file.backings):
            backings.adopt(self.table.foreign, file.backings, file.closed)
            file.set_closed(file.backings)
        self.table.foreign = {}
        self.backings = backings

    def resent(self, unique: int) -> None:
        """Request `unique` comes again after a takeover: what the predecessor counted for its
        answer, which the kernel never got, is taken back (lookups, and a passthrough open that
        would otherwise wait for its RELEASE)."""
        for ino in self.table.resent(unique):
            if self.backings is not None:
                self.backings.release_foreign(ino)

    def forget(self, ino: int, nlookup: int) -> None:
        if self.table.forget(ino, nlookup) and self.backings is not None:
            self.backings.forget(ino)

    def sweep(self, known: Callable[[int], bool]) -> int:
        """After a takeover: the inodes a predecessor's lost FORGETs left counted are forgotten
        (InodeTable.sweep); how many."""
        forgotten = self.table.sweep(known)
        if self.backings is not None:
            for ino in forgotten:
                self.backings.forget(ino)
        return len(forgotten)

    def opendir(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        self._entered(nodeid, req).check_open_dir(req)
        fh = next(self._handles)

        def commit() -> bytes:
            self.dirs[fh] = _DirHandle(nodeid, req)
            return abi.pack_open(fh, 0)

        return Reply(commit=commit)

    def releasedir(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        handle = self.dirs.pop(abi.release_fh(request), None)
        if handle is not None:
            self._drop_listing(handle)
        return ANSWERED

    def statfs(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        return Reply(abi.pack_statfs())

    def _drop_listing(self, handle: _DirHandle) -> None:
        """Release the listing's nodes that have no inode (the others belong to the table)."""
        with self.table.lock:
            unkept = [c for _c, _n, c in handle.listing or () if not self.table.holds(c)]
            handle.listing = None
        for node in unkept:
            release(node)

    def _listing(
        self, nodeid: int, req: Requester, request: bytes
    ) -> tuple[_DirHandle, Node, int, int]:
        fh, offset, size = abi.read_in(request)
        handle = self.dirs.get(fh)
        if handle is None:
            handle = self._dir_again(nodeid, req, fh)
        node = self._node(handle.ino)
        if handle.listing is None or offset == 0:
            self._drop_listing(handle)
            handle.epoch = self.table.epoch
            handle.listing = node.listing(handle.req)
        return handle, node, offset, size

    def _entries(
        self, handle: _DirHandle, node: Node, offset: int
    ) -> Iterator[tuple[bytes, Attr, int, Node | None]]:
        """(name, attr, next offset, node) from offset on, as far as the caller takes them (each
        attribute may cost the node a call of its own). Offsets are stable ids: "." is 1, ".." 2,
        and each entry's cookie + 2 after it, so a listing that changed meanwhile resumes in the
        right place rather than at an index."""
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

    def readdir(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        handle, node, offset, size = self._listing(nodeid, req, request)
        records = []
        used = 0
        for name, attr, next_off, child in self._entries(handle, node, offset):
            # d_ino only: an inode the kernel knows when there is one (no lookup is counted here)
            known = None if child is None else self.table.known(child)
            ino = handle.ino if child is None else (known or _UNKNOWN_INO)
            record = abi.pack_dirent(ino, next_off, name, attr.mode >> 12)
            if used + len(record) > size:
                break
            used += len(record)
            records.append(record)
        return Reply(b"".join(records))

    def readdirplus(self, nodeid: int, req: Requester, request: bytes) -> Reply:
        handle, node, offset, size = self._listing(nodeid, req, request)
        fitting = []
        used = 0
        for entry in self._entries(handle, node, offset):
            need = (abi.ENTRY_OUT.size + abi.DIRENT.size + len(entry[0]) + 7) & ~7
            if used + need > size:
                break
            used += need
            fitting.append(entry)
        table = self.table

        def commit() -> bytes:
            records = []
            parent = table.parent_of(handle.ino)
            for name, attr, next_off, child in fitting:
                if child is None:  # "." and ".." are no lookups: the kernel skips them
                    ino = handle.ino if name == b"." else parent
                    entry_out = abi.pack_entry(ino, attr, 0, 0)
                else:
                    ino = table.commit(child, handle.ino, name, attr)
                    entry_out = abi.pack_entry(ino, attr, ENTRY_TIMEOUT, ATTR_TIMEOUT)
                records.append(abi.pack_direntplus(entry_out, ino, next_off, name, attr.mode >> 12))
            return b"".join(records)

        def drop() -> None:
            for entry in fitting:
                if entry[3] is not None:
                    release(entry[3])

        owners = [o for e in fitting if e[3] is not None and (o := e[3].owner) is not None]
        after = (lambda: self._again_if_invalidated(handle.epoch, owners)) if owners else no_op
        return Reply(commit=commit, drop=drop, after=after)

    def _dir_again(self, nodeid: int, req: Requester, fh: int) -> _DirHandle:
        """A directory handle a predecessor server gave out: listed again. Offsets are stable
        cookies, so a listing resumes where it was."""
        self._entered(nodeid, req).check_open_dir(req)
        handle = self.dirs[fh] = _DirHandle(nodeid, req)
        return handle

    def close(self) -> list[Node]:
        """The connection ended: every node the table and open listings held, to release."""
        with self.table.lock:
            listed = [
                child
                for handle in self.dirs.values()
                for _c, _n, child in handle.listing or ()
                if not self.table.holds(child)
            ]
        nodes = self.table.clear() + listed
        if self.backings is not None:
            self.backings.close()
        self.files.clear()
        self.passed.clear()
        self.dirs.clear()
        return nodes
