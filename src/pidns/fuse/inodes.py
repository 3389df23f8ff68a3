"""The inode table of one connection: which node each inode the kernel knows stands for, with
exact lookup counts, and the inodes of each owner so that they can be invalidated as one.

Invalidating an owner (its nodes are retired: they may not reach what they showed again) is
numbered: a lookup that began before an owner's invalidation and gives out an inode of that owner
after it would leave an entry no invalidation reaches. `invalidated_since` tells the bridge to
invalidate such an owner once more, after its answer.

Every method that changes the table takes `lock`, except `commit`, which runs with it held (the
bridge commits an answer only while the request is still its to answer).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat as st
import threading
from collections.abc import Callable, Hashable

from pidns.fuse.node import Attr, Lost, Node
from pidns.fuse.tablefile import OPENED, TableFile

log = logging.getLogger(__name__)

ROOT_ID = 1
INVALIDATIONS_KEPT = 4096  # owners' invalidations remembered; an older lookup is redone anyway
SWEEP_CHUNK = 256  # inodes asked about, then forgotten in one hold of the lock


class InodeTable:
    def __init__(self, root: Node, on_owner: Callable[[Hashable], None]) -> None:
        """on_owner is called with every owner whose nodes get inodes (to watch for its end)."""
        self.lock = threading.Lock()
        self.on_owner = on_owner
        self.nodes: dict[int, Node] = {ROOT_ID: root}
        self.counts: dict[int, int] = {ROOT_ID: 1}
        self.by_key: dict[Hashable, int] = {root.key: ROOT_ID}
        self.entry_of: dict[int, tuple[int, bytes]] = {}  # inode -> (parent inode, name)
        self.by_owner: dict[Hashable, list[int]] = {}  # lists: a set costs 4-7 times the memory
        # ids of the nodes in the table. A listing's nodes that never got an inode may hold
        # resources too: released with the listing, unless in the table.
        self.kept: set[int] = set()
        self.epoch = 0  # owners' invalidations so far
        self.invalidated: dict[Hashable, int] = {}  # owner -> epoch of its last invalidation
        self.floor = 0  # invalidations before this epoch are forgotten
        self._inodes = itertools.count(ROOT_ID + 1)
        # Kept for a successor (tablefile.py), when the server keeps one: each inode's slot there,
        # and the unique of the request being committed.
        self.file: TableFile | None = None
        self.slot_of: dict[int, int] = {}
        self.unique = 0
        # After a takeover: unique -> the inodes its (maybe undelivered) answer counted, lookups
        # and passthrough opens apart; inode -> (backing id, how many) of the passthrough opens
        # the predecessor had out.
        self.precounted: dict[int, list[int]] = {}
        self.preopened: dict[int, list[int]] = {}
        self.foreign: dict[int, tuple[int, int]] = {}
        # From a takeover until its sweep: the inodes this server counted lookups of (see sweep).
        self.touched: set[int] | None = None

    def node(self, ino: int) -> Node | None:
        return self.nodes.get(ino)

    def known(self, node: Node) -> int | None:
        """The inode node's key has now, if any (no lookup is counted)."""
        return self.by_key.get(node.key)

    def holds(self, node: Node) -> bool:
        return id(node) in self.kept

    def parent_of(self, ino: int) -> int:
        return self.entry_of.get(ino, (ROOT_ID, b""))[0]

    def commit(self, node: Node, parent: int, name: bytes, attr: Attr) -> int:
        """One more lookup of node as `name` in `parent` (lock held); its inode."""
        ino = self.by_key.get(node.key)
        if ino is not None:
            if self.touched is not None:
                self.touched.add(ino)
            count = self.counts[ino] = self.counts[ino] + 1
            if self.file is not None:
                self.file.count(self.slot_of[ino], count, self.unique)
            if node is not self.nodes[ino]:
                release(node)
            return ino
        ino = next(self._inodes)
        if self.touched is not None:
            self.touched.add(ino)
        self.nodes[ino] = node
        self.kept.add(id(node))
        self.by_key[node.key] = ino
        self.counts[ino] = 1
        if self.file is not None:
            self._keep(ino, node, parent, name, st.S_ISDIR(attr.mode))
        owner = node.owner
        if owner is not None or st.S_ISDIR(attr.mode):  # to invalidate it, or answer ".." in it
            self.entry_of[ino] = (parent, name)
        if owner is not None:
            self.by_owner.setdefault(owner, []).append(ino)  # a new inode: not there yet
            self.on_owner(owner)
        return ino

    def forget(self, ino: int, nlookup: int) -> bool:
        """The kernel forgot nlookup lookups of ino; whether it forgot the inode. Never fails."""
        try:
            with self.lock:
                gone, node = self._forget(ino, nlookup)
            if node is not None:
                release(node)
        except Exception:
            log.exception("forget of inode %d", ino)
            return True
        return gone

    def _forget(self, ino: int, nlookup: int) -> tuple[bool, Node | None]:
        """forget, lock held: whether the inode is forgotten, and its node to release."""
        left = self.counts.get(ino, 0) - nlookup
        slot = self.slot_of.get(ino)
        if left > 0:
            self.counts[ino] = left
            if slot is not None and self.file is not None:
                self.file.count(slot, left, 0)  # a FORGET is never sent again
            return False, None
        self.counts.pop(ino, None)
        if ino == ROOT_ID:
            return False, None
        if slot is not None and self.file is not None:
            del self.slot_of[ino]
            self.file.remove(slot)
        node = self.nodes.pop(ino, None)
        self.entry_of.pop(ino, None)
        if node is None:
            return True, None
        self.kept.discard(id(node))
        if self.by_key.get(node.key) == ino:
            del self.by_key[node.key]
        owner = node.owner
        if owner is not None:
            inos = self.by_owner.get(owner)
            if inos is not None and ino in inos:  # not there once its owner went
                inos.remove(ino)
                if not inos:
                    del self.by_owner[owner]
        return True, node

    def sweep(self, known: Callable[[int], bool]) -> list[int]:
        """After a takeover: forget the inodes a predecessor counted that the kernel does not know
        any more. It forgot them in a FORGET the predecessor read and died before applying, and
        never sends that again. `known(ino)` asks the kernel's inode cache, without the lock (a
        reader must not wait for that): an inode this server counts meanwhile, as any it counted
        since the takeover, is left alone, as its answer reaches that cache only once its
        requester runs again. The inodes forgotten; nothing is collected for a sweep after it."""
        forgotten: list[int] = []
        with self.lock:
            candidates = [ino for ino in self.counts if ino != ROOT_ID]
        for start in range(0, len(candidates), SWEEP_CHUNK):
            unknown = [ino for ino in candidates[start : start + SWEEP_CHUNK] if not known(ino)]
            nodes = []
            with self.lock:
                touched = self.touched or set()
                for ino in unknown:
                    if ino in touched or ino not in self.counts:
                        continue
                    _gone, node = self._forget(ino, self.counts[ino])
                    forgotten.append(ino)
                    if node is not None:
                        nodes.append(node)
            for node in nodes:
                release(node)
        with self.lock:
            self.touched = None
        return forgotten

    def invalidate_owner(self, owner: Hashable) -> list[tuple[int, bytes]]:
        """Retire every node of owner and drop them from the keys (new lookups get new inodes);
        the (parent, name) entries the kernel must forget, newest first (children before their
        directories). The inodes stay until the kernel forgets them."""
        with self.lock:
            self.epoch += 1
            self.invalidated.pop(owner, None)
            self.invalidated[owner] = self.epoch
            if len(self.invalidated) > INVALIDATIONS_KEPT:
                for old in list(itertools.islice(self.invalidated, INVALIDATIONS_KEPT // 2)):
                    self.floor = self.invalidated.pop(old) + 1
            entries = []
            for ino in sorted(self.by_owner.pop(owner, ()), reverse=True):
                node = self.nodes.get(ino)
                if node is not None:
                    if self.by_key.get(node.key) == ino:
                        del self.by_key[node.key]
                    retire(node)
                entry = self.entry_of.get(ino)
                if entry is not None:
                    entries.append(entry)
            return entries

    def invalidated_since(self, since: int, owner: Hashable) -> bool:
        """Whether owner may have been invalidated since epoch `since` (lock held)."""
        return since < self.floor or self.invalidated.get(owner, -1) >= since

    def owners(self) -> list[Hashable]:
        with self.lock:
            return list(self.by_owner)

    def stale(self, owner: Hashable) -> bool:
        """Whether a node of owner still holds what a former owner under that key left."""
        with self.lock:
            nodes = [self.nodes.get(ino) for ino in self.by_owner.get(owner, ())]
        return any(node is not None and node.stale() for node in nodes)

    # -- a successor's table (tablefile.py) -----------------------------------------------------

    def keep_in(self, file: TableFile) -> None:
        """From now on, keep every inode in file too (a fresh one: the table is new)."""
        with self.lock:
            self.file = file
            for ino in self.nodes:
                if ino != ROOT_ID:
                    raise ValueError("keep_in needs a table with no inode given out yet")
            file.set_next_ino(ROOT_ID + 1)

    def _keep(self, ino: int, node: Node, parent: int, name: bytes, is_dir: bool) -> None:
        assert self.file is not None
        try:
            identity = node.identity()
        except Exception:
            identity = 0  # gone already: a successor will not find it again
        self.slot_of[ino] = self.file.add(ino, parent, name, identity, is_dir, self.unique)
        self.file.set_next_ino(ino + 1)

    def passed(self, ino: int, backing: int, opens: int) -> None:
        """The passthrough opens of ino out now (kept for a successor)."""
        with self.lock:
            slot = self.slot_of.get(ino)
            if slot is not None and self.file is not None:
                self.file.passed(slot, backing, opens)

    def opened(self, ino: int, unique: int) -> None:
        """Request `unique` counted a passthrough open of ino (kept for a successor, after the
        count itself: see resent)."""
        with self.lock:
            slot = self.slot_of.get(ino)
            if slot is not None and self.file is not None:
                self.file.opened(slot, unique)

    def registered(self, backing: int) -> None:
        """A backing id was registered with the connection (kept for a successor)."""
        with self.lock:
            if self.file is not None:
                self.file.set_backings(backing)

    def restore(self, file: TableFile) -> list[tuple[int, bytes]]:
        """Take up the inodes a predecessor kept in file, with their counts: each found again from
        its parent and name (Node.restore), or Lost when it is not there any more. The (parent,
        name) entries of the lost ones, for the kernel to forget where it can."""
        lost: list[tuple[int, bytes]] = []
        with self.lock:
            self.file = file
            self.touched = set()  # until the sweep
            self._inodes = itertools.count(max(file.next_ino, ROOT_ID + 1))
            for rec in sorted(file.records(), key=lambda r: r.ino):  # parents before children
                parent = self.nodes.get(rec.parent)
                node: Node | None = None
                # under a lost directory, what its users get (a task gone: ESRCH inside it too)
                code = parent.code if isinstance(parent, Lost) else errno.ESTALE
                if parent is not None and rec.name is not None and not isinstance(parent, Lost):
                    try:
                        node = parent.restore(os.fsdecode(rec.name), rec.identity)
                    except OSError as err:
                        code = err.errno or errno.ESTALE
                    except Exception:
                        log.exception("restoring inode %d", rec.ino)
                if node is not None and node.key in self.by_key:
                    release(node)  # a second inode for one key: keep the first
                    node = None
                if node is None:
                    node = Lost(code)
                    lost.append((rec.parent, rec.name or b""))
                else:
                    self.by_key[node.key] = rec.ino
                ino = rec.ino
                self.nodes[ino] = node
                self.kept.add(id(node))
                self.counts[ino] = rec.lookups
                self.slot_of[ino] = rec.slot
                if rec.last_unique & OPENED:
                    self.preopened.setdefault(rec.last_unique & ~OPENED, []).append(ino)
                elif rec.last_unique:
                    self.precounted.setdefault(rec.last_unique, []).append(ino)
                if rec.passed:
                    self.foreign[ino] = (rec.backing, rec.passed)
                if rec.is_dir or node.owner is not None:
                    self.entry_of[ino] = (rec.parent, rec.name or b"")
                owner = node.owner
                if owner is not None and not isinstance(node, Lost):
                    self.by_owner.setdefault(owner, []).append(ino)
                    self.on_owner(owner)
        return [entry for entry in lost if entry[1]]

    def resent(self, unique: int) -> list[int]:
        """The kernel sends request `unique` again (UNIQUE_RESEND): a predecessor may have counted
        its answer without delivering it. Take those lookup counts back before it is answered
        anew; the inodes of which it counted a passthrough open, for the caller to take back."""
        inos = self.precounted.pop(unique, None)
        for ino in inos or ():
            self.forget(ino, 1)
        return self.preopened.pop(unique, [])

    def resent_done(self) -> None:
        """No request is sent again any more: nothing left to take back."""
        self.precounted = {}
        self.preopened = {}

    def clear(self) -> list[Node]:
        """Empty the table (the connection ended); the nodes it held, to release."""
        with self.lock:
            nodes = list(self.nodes.values())
            self.nodes.clear()
            self.kept.clear()
            self.by_key.clear()
            self.by_owner.clear()
            self.counts.clear()
            return nodes


def release(node: Node) -> None:
    try:
        node.release()
    except Exception:
        log.exception("releasing a node")


def retire(node: Node) -> None:
    try:
        node.retire()
    except Exception:
        log.exception("retiring a node")
