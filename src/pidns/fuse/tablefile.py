"""The inode table as the kernel knows it, kept in a memfd a successor server can map again.

The kernel keeps the inodes a server gave out (nodeids, with their lookup counts) for as long as
its dentries live, whatever happens to the server. So that a successor can answer for them, every
inode's record lives in a shared file: its nodeid, its parent's, its name there, the identity of
what it named (Node.identity), its lookup count, the unique of the last request that counted
it, and the passthrough opens of it that are out (their backing id and how many). The file is a memfd the holder keeps with the connection's fd; the server writes it in place
(stores into a shared mapping, no system call), under the inode table's lock.

Layout: a header (magic, slot size, slots in use, the next nodeid, the highest backing id any
server of the connection registered, the highest a successor has unregistered), then fixed-size
slots. A slot whose nodeid is 0 is free. A
name of up to INLINE bytes is kept in its inode's slot; a longer one, up to the kernel's NAME_MAX,
is SPLIT: the slot keeps its head and the numbers of up to three more slots, marked PIECE where a
nodeid would be, that hold the rest. Why pieces in slots of the same table: a slot wide enough for
255 bytes would make every table 3.5 times larger for names that are nearly all short (pids,
/proc's own names), and an area of names apart would need a growth, an allocator and a compaction
of its own, each one more way for a server that dies halfway to leave a table a successor misreads.
Pieces are taken, freed and grown as slots are, under the same rule: what a slot refers to is
written before its nodeid, and freed after it. A piece no slot refers to (its server died in
between) is free. Names over NAME_MAX, which the kernel never sends, are not kept (LONG): a
successor cannot find such an inode again and answers for it as for one whose node is gone.

Versions: MAGIC changes with the layout, and a table of another layout is refused (ValueError;
the daemon then drops that view) rather than misread. The layout before
this one (OLDER: the same slots, no pieces, names over 40 bytes not kept) is taken up as it is and
marked with MAGIC: older code that follows refuses the pieces it could not read.

Why a last unique: an answer counted and then not delivered (the server died between the two) is
sent again by the kernel after NOTIFY_RESEND, under the same unique with UNIQUE_RESEND set; the
successor takes back the counts of that unique before answering it again, so counts stay exact.
The same holds for a passthrough open counted out and never answered: its unique is kept with
OPENED set (bit 0, which the kernel's uniques of requests never have), and the successor takes
that open back too, else it would wait for a RELEASE that never comes.

Why the passthrough opens: while an inode is open through a backing file the kernel fails (EIO)
every further open of it that does not name that same backing file; a successor never saw those
opens, so it must know which inodes have them out until their RELEASEs come.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import NamedTuple

MAGIC = b"PIDNSIT3"
OLDER = b"PIDNSIT2"  # readable as is: the same slots, without pieces
HEADER = struct.Struct("=8sIIQ")  # magic, slot size, slots in use (high water), next nodeid
# nodeid, parent nodeid, identity, last unique, count, name length, flags, backing id of the
# passthrough opens out, how many; then the name (SPLIT: the numbers of its pieces, its head)
SLOT = struct.Struct("=QQQQIHHII")
INLINE = 40  # the name's room in a slot
SLOT_SIZE = SLOT.size + INLINE  # 88
_WHOLE_SLOT = struct.Struct(f"{SLOT.format}{INLINE}s")  # a slot with its name's room
NAME_MAX = 255  # the kernel's: a longer name is not kept
_REFS_MAX = 3  # pieces of a name: HEAD + 3 * PIECE_ROOM >= NAME_MAX
_REFS = struct.Struct(f"={_REFS_MAX}I")  # the slots of a split name's pieces, as many as it needs
HEAD = INLINE - _REFS.size  # 28 bytes of a split name in its own slot
PIECE = (1 << 64) - 1  # the nodeid of a slot holding a piece of another slot's name
PIECE_ROOM = SLOT_SIZE - 8  # 80 bytes of name in a piece, after its mark
FIRST = 64  # the header's room
_COUNT = struct.Struct("=QI")  # last unique and count are adjacent: one store for both
_COUNT_AT = 24
_PASSED = struct.Struct("=II")
_PASSED_AT = 40
_BACKINGS_AT = 24  # in the header
_CLOSED_AT = 32  # in the header: the highest backing id a successor has unregistered (older: 0)
_NEXT = struct.Struct("=Q")
_USED = struct.Struct("=I")
OPENED = 1  # in a last unique: that request counted a passthrough open, not a lookup
DIR = 1  # flags: a directory (its entry answers "..")
LONG = 2  # the name was too long to keep
SPLIT = 4  # the name is in pieces
INITIAL_SLOTS = 1024


def _pieces(length: int) -> int:
    """How many pieces a split name of `length` bytes takes (the slot itself holds HEAD)."""
    return max(0, -(-(length - HEAD) // PIECE_ROOM))


class Record(NamedTuple):  # a tuple: a successor makes one per inode the kernel knows
    ino: int
    parent: int
    name: bytes | None  # None: not kept (LONG)
    identity: int
    lookups: int  # the kernel's count of it
    is_dir: bool
    last_unique: int
    slot: int
    backing: int = 0  # the backing id of the passthrough opens of it that are out
    passed: int = 0  # how many


class TableFile:
    def __init__(self, fd: int, created: bool, slots: int = INITIAL_SLOTS) -> None:
        """Own fd (a memfd); `created`: lay out an empty table of `slots` slots, else map the one
        it holds (ValueError when that is no table of this version)."""
        self.fd = fd
        if created:
            os.ftruncate(fd, FIRST + slots * SLOT_SIZE)
        size = os.fstat(fd).st_size
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if created:
            HEADER.pack_into(self.map, 0, MAGIC, SLOT_SIZE, 0, 2)
        magic, slot_size, used, _next = HEADER.unpack_from(self.map, 0)
        if magic not in (MAGIC, OLDER) or slot_size != SLOT_SIZE or size < FIRST + used * SLOT_SIZE:
            self.map.close()
            raise ValueError("not an inode table file of this version")
        if magic != MAGIC:
            self.map[0 : len(MAGIC)] = MAGIC  # pieces may come: no older server may read it now
        self.capacity = (size - FIRST) // SLOT_SIZE
        self.used = int(used)
        self.free: list[int] = []
        self.pieces: dict[int, tuple[int, ...]] = {}  # a split name's slot -> its pieces' slots
        if not created:
            self._scan()

    @classmethod
    def create(cls, slots: int = INITIAL_SLOTS) -> TableFile:
        return cls(os.memfd_create("pidns-inodes", os.MFD_CLOEXEC), True, slots)

    def _scan(self) -> None:
        """The free slots and the pieces of a predecessor's table; a piece no slot refers to (its
        server died between the two) is freed."""
        marked: set[int] = set()
        for slot in range(self.used):
            at = FIRST + slot * SLOT_SIZE
            ino = self._ino(slot)
            if ino == 0:
                self.free.append(slot)
            elif ino == PIECE:
                marked.add(slot)
            else:
                length, flags = SLOT.unpack_from(self.map, at)[5:7]
                if flags & SPLIT:
                    refs = _REFS.unpack_from(self.map, at + SLOT.size)[: _pieces(length)]
                    if all(r < self.used and self._ino(r) == PIECE for r in refs):
                        self.pieces[slot] = refs
        for refs in self.pieces.values():
            marked.difference_update(refs)
        self.free += sorted(marked)  # rewritten whole before they are used again

    def _ino(self, slot: int) -> int:
        return int(_NEXT.unpack_from(self.map, FIRST + slot * SLOT_SIZE)[0])

    @property
    def next_ino(self) -> int:
        return int(_NEXT.unpack_from(self.map, 16)[0])

    def set_next_ino(self, ino: int) -> None:
        _NEXT.pack_into(self.map, 16, ino)

    def _take(self) -> int:
        """A free slot: a freed one, else the next one never used (the file grows when full)."""
        if self.free:
            return self.free.pop()
        if self.used == self.capacity:
            self._grow()
        slot = self.used
        self.used += 1
        _USED.pack_into(self.map, 12, self.used)
        return slot

    def add(
        self, ino: int, parent: int, name: bytes, identity: int, is_dir: bool, unique: int
    ) -> int:
        """A new inode with one lookup; its slot."""
        slot = self._take()
        flags = DIR if is_dir else 0
        if len(name) > NAME_MAX:
            flags |= LONG
            name = b""
        at = FIRST + slot * SLOT_SIZE
        # the name first, the nodeid last: a slot is in use once its nodeid is there
        if len(name) <= INLINE:
            self.map[at + SLOT.size : at + SLOT.size + len(name)] = name
        else:
            flags |= SPLIT
            refs = []
            for start in range(HEAD, len(name), PIECE_ROOM):
                piece = self._take()
                where = FIRST + piece * SLOT_SIZE
                part = name[start : start + PIECE_ROOM]
                self.map[where + 8 : where + 8 + len(part)] = part
                _NEXT.pack_into(self.map, where, PIECE)
                refs.append(piece)
            self.pieces[slot] = tuple(refs)
            _REFS.pack_into(self.map, at + SLOT.size, *refs, *(0,) * (_REFS_MAX - len(refs)))
            self.map[at + SLOT.size + _REFS.size : at + SLOT_SIZE] = name[:HEAD]
        SLOT.pack_into(self.map, at, 0, parent, identity, unique, 1, len(name), flags, 0, 0)
        _NEXT.pack_into(self.map, at, ino)
        return slot

    def count(self, slot: int, count: int, unique: int) -> None:
        _COUNT.pack_into(self.map, FIRST + slot * SLOT_SIZE + _COUNT_AT, unique, count)

    def opened(self, slot: int, unique: int) -> None:
        """The last passthrough open counted for the slot's inode came with request `unique`
        (written after its count: a server that dies in between leaves the count unmarked)."""
        _NEXT.pack_into(self.map, FIRST + slot * SLOT_SIZE + _COUNT_AT, unique | OPENED)

    def passed(self, slot: int, backing: int, opens: int) -> None:
        """The passthrough opens of the slot's inode that are out now, and their backing id."""
        _PASSED.pack_into(self.map, FIRST + slot * SLOT_SIZE + _PASSED_AT, backing, opens)

    @property
    def backings(self) -> int:
        """The highest backing id registered with the connection so far."""
        return int(_NEXT.unpack_from(self.map, _BACKINGS_AT)[0])

    @property
    def closed(self) -> int:
        """The highest backing id a successor has unregistered: those up to it are gone."""
        return int(_NEXT.unpack_from(self.map, _CLOSED_AT)[0])

    def set_closed(self, backing: int) -> None:
        _NEXT.pack_into(self.map, _CLOSED_AT, backing)

    def set_backings(self, backing: int) -> None:
        if backing > self.backings:
            _NEXT.pack_into(self.map, _BACKINGS_AT, backing)

    def remove(self, slot: int) -> None:
        _NEXT.pack_into(self.map, FIRST + slot * SLOT_SIZE, 0)
        self.free.append(slot)
        for piece in self.pieces.pop(slot, ()):  # after the slot: none is free while it is used
            _NEXT.pack_into(self.map, FIRST + piece * SLOT_SIZE, 0)
            self.free.append(piece)

    def records(self) -> list[Record]:
        """Every inode kept. One pass of struct's own loop over the slots: a successor reads
        them all before it answers any request."""
        out: list[Record] = []
        append = out.append
        area = memoryview(self.map)[FIRST : FIRST + self.used * SLOT_SIZE]
        try:
            for slot, fields in enumerate(_WHOLE_SLOT.iter_unpack(area)):
                ino, parent, identity, unique, count, length, flags, backing, passed, raw = fields
                if not ino or ino == PIECE:
                    continue
                name: bytes | None
                if flags & (LONG | SPLIT):
                    name = None if flags & LONG else self._split_name(slot, length)
                else:
                    name = raw[: min(length, INLINE)]
                append(
                    Record(
                        ino,
                        parent,
                        name,
                        identity,
                        count,
                        bool(flags & DIR),
                        unique,
                        slot,
                        backing,
                        passed,
                    )
                )
        finally:
            area.release()  # the map may be resized later: no export may outlive this
        return out

    def _split_name(self, slot: int, length: int) -> bytes | None:
        """A split name put together again; None when its pieces are not all there."""
        refs = self.pieces.get(slot)
        if refs is None or not INLINE < length <= NAME_MAX:
            return None
        at = FIRST + slot * SLOT_SIZE + SLOT.size + _REFS.size
        parts = [self.map[at : at + HEAD]]
        for piece in refs:
            where = FIRST + piece * SLOT_SIZE + 8
            parts.append(self.map[where : where + PIECE_ROOM])
        return b"".join(parts)[:length]

    def _grow(self) -> None:
        capacity = self.capacity * 2
        os.ftruncate(self.fd, FIRST + capacity * SLOT_SIZE)
        self.map.resize(FIRST + capacity * SLOT_SIZE)
        self.capacity = capacity

    def close(self) -> None:
        self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
