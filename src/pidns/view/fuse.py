"""The pyfuse3 adapter: inodes for nodes, exact lookup counts, errno mapping. No policy here.

Entries live long in the kernel's cache (ENTRY_TIMEOUT); that is safe because `flush_task` drops a
task's entries from every view explicitly, through invalidate_entry_async, once it is reaped.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Hashable, Sequence
from typing import Any

import pyfuse3

from pidns.errors import AccessDenied, NamespaceGone, NotPermitted, PidnsError, ProcessGone
from pidns.view.nodes import Attr, Node, PidDir
from pidns.view.tree import Requester

log = logging.getLogger(__name__)

ENTRY_TIMEOUT = 86400.0  # correct because of explicit invalidation on exit
ATTR_TIMEOUT = 1.0  # owners and link counts of a task's directory may change (setuid, threads)


def _errno(err: BaseException) -> int:
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
    log.exception("unexpected error in a FUSE handler", exc_info=err)
    return errno.EIO


class Adapter(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, root: Node) -> None:
        super().__init__()
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: root}
        self.counts: dict[int, int] = {pyfuse3.ROOT_INODE: 1}
        self.by_key: dict[Hashable, int] = {root.key: pyfuse3.ROOT_INODE}
        self.entry_of: dict[int, tuple[int, bytes]] = {}  # inode -> (parent inode, name)
        self.by_host: dict[int, set[int]] = {}  # host pid -> inodes of its pid directories
        self.handles: dict[int, Any] = {}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        self._next_fh = 1

    # -- the inode table -----------------------------------------------------------------------

    def _inode_for(self, node: Node) -> tuple[int, bool]:
        ino = self.by_key.get(node.key)
        if ino is not None:
            return ino, False
        ino = self._next_inode
        self._next_inode += 1
        return ino, True

    def _commit(self, ino: int, fresh: bool, node: Node, parent: int, name: bytes) -> None:
        if fresh:
            self.nodes[ino] = node
            self.by_key[node.key] = ino
            self.counts[ino] = 1
            self.entry_of[ino] = (parent, name)
            if isinstance(node, PidDir):
                self.by_host.setdefault(node.host_pid, set()).add(ino)
        else:
            self.counts[ino] += 1
            if node is not self.nodes[ino]:
                node.release()

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def _entry(self, ino: int, attr: Attr) -> Any:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.generation = 0
        entry.entry_timeout = ENTRY_TIMEOUT
        entry.attr_timeout = ATTR_TIMEOUT
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_size = attr.size
        entry.st_blksize = 1024
        entry.st_blocks = 0
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attr.mtime_ns
        return entry

    @staticmethod
    def _req(ctx: Any) -> Requester:
        return Requester(ctx.pid, ctx.uid, ctx.gid)

    def _admit(self, node: Node, req: Requester) -> None:
        view = getattr(node, "view", None)
        if view is not None and not view.admits(req):
            raise pyfuse3.FUSEError(errno.EACCES)

    def flush_task(self, host_pid: int) -> None:
        """Drop a reaped task's directories from every view: new lookups get new inodes."""
        for ino in self.by_host.pop(host_pid, ()):
            node = self.nodes.get(ino)
            if node is not None and self.by_key.get(node.key) == ino:
                del self.by_key[node.key]
            parent_name = self.entry_of.get(ino)
            if parent_name is not None:
                pyfuse3.invalidate_entry_async(parent_name[0], parent_name[1], ignore_enoent=True)

    def flush_instance(self, pids: list[int]) -> None:
        for pid in pids:
            self.flush_task(pid)

    def host_pids_of(self, instance: object) -> list[int]:
        """Host pids with entries in any view of instance (for flushing a dead namespace)."""
        return [
            pid
            for pid, inos in self.by_host.items()
            if any(getattr(getattr(self.nodes.get(i), "view", None), "instance", None) is instance for i in inos)
        ]

    # -- requests --------------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> Any:
        parent = self._node(parent_inode)
        req = self._req(ctx)
        try:
            self._admit(parent, req)
            child = parent.lookup(os.fsdecode(name), req)
            attr = child.attr(req)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:
            raise pyfuse3.FUSEError(_errno(err)) from None
        ino, fresh = self._inode_for(child)
        self._commit(ino, fresh, child, parent_inode, name)
        return self._entry(ino, attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            try:
                left = self.counts.get(ino, 0) - nlookup
                if left > 0:
                    self.counts[ino] = left
                    continue
                self.counts.pop(ino, None)
                if ino == pyfuse3.ROOT_INODE:
                    continue
                node = self.nodes.pop(ino, None)
                self.entry_of.pop(ino, None)
                if node is None:
                    continue
                if self.by_key.get(node.key) == ino:
                    del self.by_key[node.key]
                if isinstance(node, PidDir):
                    inos = self.by_host.get(node.host_pid)
                    if inos is not None:
                        inos.discard(ino)
                        if not inos:
                            del self.by_host[node.host_pid]
                node.release()
            except Exception:  # forget must never raise
                log.exception("forget of inode %d", ino)

    async def getattr(self, inode: int, ctx: Any) -> Any:
        node = self._node(inode)
        try:
            return self._entry(inode, node.attr(self._req(ctx)))
        except Exception as err:
            raise pyfuse3.FUSEError(_errno(err)) from None

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self._node(inode)
        req = self._req(ctx)
        try:
            self._admit(node, req)
            return node.readlink(req)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:
            raise pyfuse3.FUSEError(_errno(err)) from None

    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        req = self._req(ctx)
        try:
            self._admit(node, req)
            node.check_open_dir(req)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:
            raise pyfuse3.FUSEError(_errno(err)) from None
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = [inode, req, None]
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        handle = self.handles[fh]
        inode, req, listing = handle
        node = self._node(inode)
        if listing is None or start_id == 0:
            try:
                listing = node.listing(req)
            except Exception as err:
                raise pyfuse3.FUSEError(_errno(err)) from None
            handle[2] = listing
        # "." and ".." take cookies 1 and 2; they do not count as lookups (readdirplus rule).
        if start_id < 1 and not pyfuse3.readdir_reply(
            token, b".", self._entry(inode, node.attr(req)), 1
        ):
            return
        if start_id < 2:
            parent = self.entry_of.get(inode, (pyfuse3.ROOT_INODE, b""))[0]
            if not pyfuse3.readdir_reply(token, b"..", self._entry(parent, Attr(0o40555, 2, 0, 0)), 2):
                return
        for cookie, name, child in listing:
            if cookie + 2 <= start_id:
                continue
            try:
                attr = child.attr(req)
            except Exception:
                continue  # vanished since the listing
            ino, fresh = self._inode_for(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(ino, attr), cookie + 2):
                if fresh:
                    child.release()
                return
            self._commit(ino, fresh, child, inode, os.fsencode(name))

    async def releasedir(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        node = self._node(inode)
        req = self._req(ctx)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            self._admit(node, req)
            data = node.content(req)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:
            raise pyfuse3.FUSEError(_errno(err)) from None
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = data
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        data: bytes = self.handles[fh]
        return data[off : off + size]

    async def flush(self, fh: int) -> None:
        # ENOSYS once and the kernel stops sending flush at every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def statfs(self, ctx: Any) -> Any:
        return pyfuse3.StatvfsData()
