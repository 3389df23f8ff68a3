"""The inode table's file on its own: names of every length the kernel allows kept across slots
taken, freed, reused and grown, as a successor maps them again; what a server that died halfway
leaves; and which versions of the file a successor takes up."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as s

from pidns.fuse import tablefile
from pidns.fuse.tablefile import FIRST, INLINE, MAGIC, NAME_MAX, OLDER, SLOT_SIZE, TableFile

# ino -> name, parent, identity, is a directory, count
Kept = dict[int, tuple[bytes | None, int, int, bool, int]]


def successor(t: TableFile) -> TableFile:
    """The table as a successor maps it (the predecessor's own mapping and fd closed)."""
    again = TableFile(os.dup(t.fd), created=False)
    t.close()
    return again


def kept(t: TableFile) -> Kept:
    return {r.ino: (r.name, r.parent, r.identity, r.is_dir, r.lookups) for r in t.records()}


def check_slots(t: TableFile) -> None:
    """Every slot below the high water is free, an inode's, or a piece of one's name: one of them."""
    inodes = [r.slot for r in t.records()]
    assert set(t.pieces) <= set(inodes)
    pieces = [p for slot in inodes for p in t.pieces.get(slot, ())]
    every = t.free + inodes + pieces
    assert sorted(every) == list(range(t.used))


# lengths drawn evenly (hypothesis's own binary() keeps to short ones)
names = s.integers(0, NAME_MAX).flatmap(lambda n: s.binary(min_size=n, max_size=n))
steps = s.lists(
    s.one_of(
        s.tuples(s.just("add"), names, s.booleans()),
        s.tuples(s.just("remove"), s.integers(0, 1000)),
        s.tuples(s.just("count"), s.integers(0, 1000)),
        s.tuples(s.just("takeover")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_names_of_any_length_come_back_across_grow_free_reuse_and_takeovers(
    plan: list[tuple[Any, ...]],
) -> None:
    t = TableFile.create(slots=2)  # grows within a few long names
    model: Kept = {}
    slot_of: dict[int, int] = {}
    ino = 2
    try:
        for step in plan:
            live = sorted(model)
            if step[0] == "add":
                name, is_dir = step[1], step[2]
                parent = live[-1] if live else 1
                slot_of[ino] = t.add(ino, parent, name, ino * 7, is_dir, 0)
                model[ino] = (name, parent, ino * 7, is_dir, 1)
                ino += 1
            elif step[0] == "remove" and live:
                gone = live[step[1] % len(live)]
                t.remove(slot_of.pop(gone))
                del model[gone]
            elif step[0] == "count" and live:
                which = live[step[1] % len(live)]
                name, parent, identity, is_dir, count = model[which]
                t.count(slot_of[which], count + 1, 0)
                model[which] = (name, parent, identity, is_dir, count + 1)
            elif step[0] == "takeover":
                t = successor(t)
                assert kept(t) == model
                check_slots(t)
            check_slots(t)
        t = successor(t)
        assert kept(t) == model
        assert {r.ino: r.slot for r in t.records()} == slot_of
        check_slots(t)
    finally:
        t.close()


def test_short_names_cost_one_slot_and_long_ones_a_piece_per_80_bytes_more() -> None:
    t = TableFile.create()
    try:
        for length, slots in ((0, 1), (INLINE, 1), (INLINE + 1, 2), (108, 2), (109, 3), (255, 4)):
            before = t.used
            t.add(2 + length, 1, b"n" * length, 0, False, 0)
            assert t.used - before == slots, length
    finally:
        t.close()


def test_a_name_over_the_kernels_limit_is_not_kept() -> None:
    t = TableFile.create()
    try:
        t.add(2, 1, b"x" * (NAME_MAX + 1), 0, False, 0)
        t = successor(t)
        assert [r.name for r in t.records()] == [None]
    finally:
        t.close()


def test_pieces_a_dead_server_left_without_their_slot_are_free_again() -> None:
    """A server that died inside remove (the nodeid gone, the pieces still marked) or inside add
    (the pieces marked, the nodeid not yet written): the same table, and the pieces are free."""
    t = TableFile.create()
    try:
        keep = t.add(2, 1, b"k" * 200, 0, False, 0)
        dead = t.add(3, 1, b"d" * 255, 0, False, 0)
        used = t.used
        tablefile._NEXT.pack_into(t.map, FIRST + dead * SLOT_SIZE, 0)  # remove's first store
        t = successor(t)
        assert kept(t) == {2: (b"k" * 200, 1, 0, False, 1)}
        assert t.records()[0].slot == keep
        check_slots(t)
        assert len(t.free) == 4  # the dead one's slot and its three pieces
        t.add(4, 1, b"r" * 255, 0, False, 0)
        assert t.used == used  # reused, not grown
        t = successor(t)
        assert {r.ino: r.name for r in t.records()} == {2: b"k" * 200, 4: b"r" * 255}
    finally:
        t.close()


def test_a_table_of_the_layout_before_is_taken_up_and_marked_as_this_one() -> None:
    """The older layout is this one without pieces (names over 40 bytes not kept: LONG, no
    name): a successor reads it as it is, and marks it so that older code refuses it from then on
    (it could not read the pieces to come)."""
    t = TableFile.create()
    try:
        t.add(2, 1, b"status", 0, False, 0)
        t.add(3, 1, b"x" * (NAME_MAX + 1), 0, True, 0)  # what the older code wrote for 41 bytes
        t.map[0 : len(OLDER)] = OLDER
        t = successor(t)
        assert t.map[0 : len(MAGIC)] == MAGIC
        assert {r.ino: r.name for r in t.records()} == {2: b"status", 3: None}
    finally:
        t.close()


@pytest.mark.parametrize("magic", [b"PIDNSIT1", b"PIDNSIT4", b"\0" * 8])
def test_a_table_of_another_version_is_refused_and_its_fd_left_to_the_caller(magic: bytes) -> None:
    t = TableFile.create()
    try:
        t.map[0 : len(magic)] = magic
        fd = os.dup(t.fd)
        with pytest.raises(ValueError):
            TableFile(fd, created=False)
        os.fstat(fd)  # still open: the caller closes what it was given
        os.close(fd)
    finally:
        t.close()
