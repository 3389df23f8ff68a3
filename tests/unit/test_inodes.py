"""The inode table on its own: exact lookup counts, forget, invalidation grouped by owner, and a
lookup racing with its owner's invalidation."""

from __future__ import annotations

import errno
import fcntl
import os
import stat as st
import sys
from collections.abc import Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as s

from pidns.fuse.inodes import ROOT_ID, InodeTable
from pidns.fuse.node import Attr, Lost, Node, Requester
from pidns.fuse.passthrough import BUSY, Backings
from pidns.fuse.tablefile import TableFile
from pidns.kernel import fuse_abi as abi

DIR = Attr(st.S_IFDIR | 0o555, 2, 0, 0)
FILE = Attr(st.S_IFREG | 0o444, 1, 0, 0)


class Thing(Node):
    def __init__(self, key: Hashable, owner: Hashable | None = None) -> None:
        self.key = key
        self._owner = owner
        self.released = 0
        self.retired = 0

    @property
    def owner(self) -> Hashable | None:
        return self._owner

    def release(self) -> None:
        self.released += 1

    def retire(self) -> None:
        self.retired += 1


def table() -> tuple[InodeTable, list[Hashable]]:
    owners: list[Hashable] = []
    return InodeTable(Thing("root"), owners.append), owners


def commit(t: InodeTable, node: Node, parent: int = ROOT_ID, name: bytes = b"x") -> int:
    with t.lock:
        return t.commit(node, parent, name, FILE)


def test_repeated_lookups_share_an_inode_and_release_the_duplicate() -> None:
    t, _ = table()
    first, again = Thing("a"), Thing("a")
    ino = commit(t, first)
    assert commit(t, again) == ino and t.counts[ino] == 2
    assert again.released == 1 and first.released == 0  # the table keeps the first
    t.forget(ino, 1)
    assert t.node(ino) is first and first.released == 0
    t.forget(ino, 1)
    assert t.node(ino) is None and ino not in t.counts and first.released == 1
    assert commit(t, Thing("a")) != ino  # forgotten: a new inode


def test_forget_of_unknown_or_root_inodes_never_fails() -> None:
    t, _ = table()
    t.forget(999, 5)
    t.forget(ROOT_ID, 1)
    assert t.node(ROOT_ID) is not None


def test_invalidating_an_owner_retires_its_nodes_newest_first_and_forgets_their_keys() -> None:
    t, owners = table()
    task = Thing("task", owner=7)
    with t.lock:
        task_ino = t.commit(task, ROOT_ID, b"5", DIR)
    status = Thing("status", owner=7)
    status_ino = commit(t, status, task_ino, b"status")
    other = Thing("other", owner=8)
    commit(t, other, ROOT_ID, b"6")
    assert owners == [7, 7, 8]
    assert t.invalidate_owner(7) == [(task_ino, b"status"), (ROOT_ID, b"5")]
    assert task.retired == status.retired == 1 and other.retired == 0
    assert t.known(task) is None and t.node(task_ino) is task  # the kernel still holds it
    assert t.owners() == [8]
    t.forget(status_ino, 1)  # after the invalidation: released, without failing
    assert status.released == 1
    assert commit(t, Thing("task", owner=7)) != task_ino


def test_a_lookup_racing_with_an_invalidation_is_told_to_invalidate_again() -> None:
    t, _ = table()
    since = t.epoch  # a lookup begins
    t.invalidate_owner(7)  # its owner goes meanwhile
    with t.lock:
        assert t.invalidated_since(since, 7)
        assert not t.invalidated_since(since, 8)
        assert not t.invalidated_since(t.epoch + 1, 7)  # a lookup that began after it


def test_forgotten_invalidations_make_every_older_lookup_invalidate_again() -> None:
    t, _ = table()
    since = t.epoch
    for owner in range(5000):  # more than the table remembers
        t.invalidate_owner(owner)
    with t.lock:
        assert t.invalidated_since(since, 123456)


@given(s.lists(s.tuples(s.sampled_from("abc"), s.integers(1, 3)), max_size=40))
def test_counts_are_exact_under_any_sequence_of_lookups_and_forgets(
    steps: list[tuple[str, int]],
) -> None:
    t, _ = table()
    expected: dict[str, int] = {}
    inos: dict[str, int] = {}
    for key, n in steps:
        if key in inos and n == 3:  # forget everything of key
            t.forget(inos.pop(key), expected.pop(key))
            continue
        for _ in range(n):
            inos[key] = commit(t, Thing(key))
            expected[key] = expected.get(key, 0) + 1
    assert {k: t.counts[i] for k, i in inos.items()} == expected
    assert set(t.nodes) == {ROOT_ID, *inos.values()}


class Tree(Thing):
    """A directory whose children are found again by name, as long as `present` names them."""

    def __init__(self, key: Hashable, present: set[str]) -> None:
        super().__init__(key)
        self.present = present

    def lookup(self, name: str, req: Requester) -> Node:
        if name not in self.present:
            raise OSError(errno.ESRCH, "gone")
        return Tree((self.key, name), self.present)


def test_a_successor_restores_inodes_and_whats_under_a_lost_one_fails_as_it_does() -> None:
    """Taken over: each inode found again under its parent, with its count; one that is gone is
    lost with its errno, and so is everything under it (not ESTALE: a reader inside a task's
    directory that went sees the task gone)."""
    present = {"1", "7"}
    first = InodeTable(Tree("root", present), lambda owner: None)
    file = TableFile.create()
    try:
        first.keep_in(file)
        with first.lock:
            one = first.commit(Tree(("root", "1"), present), ROOT_ID, b"1", DIR)
            seven = first.commit(Tree(("root", "7"), present), ROOT_ID, b"7", DIR)
            first.commit(Tree(("root", "7"), present), ROOT_ID, b"7", DIR)
            task = first.commit(Tree((("root", "7"), "task"), present), seven, b"task", DIR)
        present.discard("7")
        successor = InodeTable(Tree("root", present), lambda owner: None)
        lost = successor.restore(TableFile(os.dup(file.fd), created=False))
        assert successor.counts[one] == 1 and successor.counts[seven] == 2
        assert not isinstance(successor.node(one), Lost)
        for ino in (seven, task):
            node = successor.node(ino)
            assert isinstance(node, Lost) and node.code == errno.ESRCH
        assert sorted(lost) == [(ROOT_ID, b"7"), (seven, b"task")]
    finally:
        file.close()


def test_a_successor_sweeps_away_the_inodes_the_kernel_no_longer_has() -> None:
    """What the predecessor counted and the kernel forgot (a FORGET lost with it) is forgotten
    with its whole count; what the kernel has stays, and so does what the successor counted
    itself since (its answer may not have reached the kernel); the root is never asked about.
    A FORGET of a swept inode coming late changes nothing."""
    present = {"1", "2", "3"}
    first = InodeTable(Tree("root", present), lambda owner: None)
    file = TableFile.create()
    try:
        first.keep_in(file)
        with first.lock:
            inos = {n: first.commit(Tree(("root", n), present), ROOT_ID, n.encode(), DIR)
                    for n in sorted(present)}  # fmt: skip
            first.commit(Tree(("root", "2"), present), ROOT_ID, b"2", DIR)
        successor = InodeTable(Tree("root", present), lambda owner: None)
        successor.restore(TableFile(os.dup(file.fd), created=False))
        with successor.lock:
            assert successor.commit(Tree(("root", "3"), present), ROOT_ID, b"3", DIR) == inos["3"]
        asked: list[int] = []

        def known(ino: int) -> bool:
            asked.append(ino)
            return ino == inos["1"]

        assert successor.sweep(known) == [inos["2"]]
        assert sorted(asked) == sorted(inos.values())
        assert successor.node(inos["2"]) is None and inos["2"] not in successor.counts
        assert successor.counts[inos["1"]] == 1 and successor.counts[inos["3"]] == 2
        assert successor.forget(inos["2"], 2) and successor.counts[inos["1"]] == 1
        assert successor.sweep(lambda ino: False) == [inos["1"], inos["3"]]  # nothing touched now
        assert successor.node(ROOT_ID) is not None
        assert [r.ino for r in TableFile(os.dup(file.fd), created=False).records()] == []
    finally:
        file.close()


def test_a_successor_minds_the_passthrough_opens_its_predecessor_left_out() -> None:
    """The table keeps each inode's passthrough opens out; a successor's opens of such an inode
    wait for the predecessor's RELEASEs (the kernel fails an open that names another backing
    file), then go. The device here is a pipe: registering fails, so they go by direct I/O."""
    first = InodeTable(Thing("root"), lambda owner: None)
    file = TableFile.create()
    read_end, write_end = os.pipe()
    try:
        first.keep_in(file)
        ino = commit(first, Thing("stat"), name=b"stat")
        first.passed(ino, 7, 2)  # what the predecessor's Backings told it
        first.registered(9)
        successor = InodeTable(Thing("root"), lambda owner: None)
        successor.restore(TableFile(os.dup(file.fd), created=False))
        assert successor.foreign == {ino: (7, 2)} and successor.file is not None
        assert successor.file.backings == 9
        backings = Backings(read_end)
        backings.adopt(successor.foreign, successor.file.backings)
        assert backings.open(ino, 0, b"new") == BUSY
        got: list[int | None] = []
        backings.wait(ino, 0, b"new", got.append)
        backings.release_foreign(ino)
        assert got == []  # one of the predecessor's two is still out
        backings.release_foreign(ino)
        assert got == [None] and ino not in backings.active
        backings.release_foreign(ino)  # a handle of no passthrough open: nothing to count
    finally:
        file.close()
        os.close(read_end)
        os.close(write_end)


def test_a_successor_takes_back_counts_of_answers_sent_again_lookups_and_opens_apart() -> None:
    """A predecessor counted a lookup (request 10) and a passthrough open (request 12) it never
    answered: when the kernel sends each again, the successor takes back that one count, the
    lookup's from the inode, the open's from the opens out (the RELEASE will never come)."""
    first = InodeTable(Thing("root"), lambda owner: None)
    file = TableFile.create()
    try:
        first.keep_in(file)
        first.unique = 10
        looked = commit(first, Thing("status"), name=b"status")
        first.unique = 8
        opened = commit(first, Thing("stat"), name=b"stat")
        first.passed(opened, 7, 1)
        first.opened(opened, 12)
        successor = InodeTable(Thing("root"), lambda owner: None)
        successor.restore(TableFile(os.dup(file.fd), created=False))
        assert successor.foreign == {opened: (7, 1)}
        assert successor.resent(8) == []  # counted a lookup once, later its open: nothing left
        assert successor.counts[opened] == 1
        assert successor.resent(12) == [opened]  # the caller releases that open
        assert successor.counts[opened] == 1
        assert successor.resent(10) == [] and looked not in successor.nodes
    finally:
        file.close()


def test_a_successor_finds_again_inodes_of_names_up_to_the_kernels_limit() -> None:
    """Names longer than a slot holds (nested: a directory and a file in it) are restored, not
    lost: their users get what they got before the takeover, not ESTALE."""
    long_dir, long_file = "d" * 41, "f" * 255
    present = {long_dir, long_file, "1"}
    first = InodeTable(Tree("root", present), lambda owner: None)
    file = TableFile.create()
    try:
        first.keep_in(file)
        with first.lock:
            outer = first.commit(Tree(("root", long_dir), present), ROOT_ID, long_dir.encode(), DIR)
            inner = first.commit(
                Tree((("root", long_dir), long_file), present), outer, long_file.encode(), FILE
            )
            short = first.commit(Tree(("root", "1"), present), ROOT_ID, b"1", DIR)
        successor = InodeTable(Tree("root", present), lambda owner: None)
        assert successor.restore(TableFile(os.dup(file.fd), created=False)) == []
        for ino in (outer, inner, short):
            assert not isinstance(successor.node(ino), Lost)
        node = successor.node(inner)
        assert node is not None and node.key == (("root", long_dir), long_file)
        assert successor.entry_of[outer] == (ROOT_ID, long_dir.encode())
    finally:
        file.close()


def test_each_successor_unregisters_only_the_backing_ids_of_the_server_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel gives backing ids out in rising order: a successor closes those of its
    predecessor, not again those of every server since the first (a loop that grew with every
    takeover)."""
    from pidns.fuse.bridge import Bridge

    closed: list[int] = []
    device = 1000  # no fd: every ioctl on it is seen here

    def ioctl(fd: int, request: int, arg: bytearray, mutate: bool = True) -> int:
        assert fd == device and request == abi.BACKING_CLOSE
        closed.append(int.from_bytes(bytes(arg)[:4], sys.byteorder))
        return 0

    monkeypatch.setattr(fcntl, "ioctl", ioctl)  # as passthrough.py calls it
    file = TableFile.create()
    try:
        for highest in (5, 9):  # two takeovers; each server before registered up to `highest`
            file.set_backings(highest)
            bridge = Bridge(Thing("root"))
            bridge.table.restore(TableFile(os.dup(file.fd), created=False))
            bridge.use_backings(Backings(device))
        assert closed == list(range(1, 10))
        assert TableFile(os.dup(file.fd), created=False).closed == 9
    finally:
        file.close()
