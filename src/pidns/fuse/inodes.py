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

import itertools
import logging
import stat as st
import threading
from collections.abc import Callable, Hashable

from pidns.fuse.node import Attr, Node

log = logging.getLogger(__name__)

ROOT_ID = 1
INVALIDATIONS_KEPT = 4096  # owners' invalidations remembered; an older lookup is redone anyway


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
            self.counts[ino] += 1
            if node is not self.nodes[ino]:
                release(node)
            return ino
        ino = next(self._inodes)
        self.nodes[ino] = node
        self.kept.add(id(node))
        self.by_key[node.key] = ino
        self.counts[ino] = 1
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
                left = self.counts.get(ino, 0) - nlookup
                if left > 0:
                    self.counts[ino] = left
                    return False
                self.counts.pop(ino, None)
                if ino == ROOT_ID:
                    return False
                node = self.nodes.pop(ino, None)
                self.entry_of.pop(ino, None)
                if node is None:
                    return True
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
            release(node)
        except Exception:
            log.exception("forget of inode %d", ino)
        return True

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
