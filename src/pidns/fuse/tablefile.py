"""The inode table as the kernel knows it, kept in a memfd a successor server can map again.

The kernel keeps the inodes a server gave out (nodeids, with their lookup counts) for as long as
its dentries live, whatever happens to the server. So that a successor can answer for them, every
inode's record lives in a shared file: its nodeid, its parent's, its name there, the identity of
what it named (Node.identity), its lookup count, the unique of the last request that counted
it, and the passthrough opens of it that are out (their backing id and how many). The file is a memfd the holder keeps with the connection's fd; the server writes it in place
(stores into a shared mapping, no system call), under the inode table's lock.

Layout: a header (magic, slot size, slots in use, the next nodeid, the highest backing id any
server of the connection registered), then fixed-size slots. A slot
whose nodeid is 0 is free. Names longer than NAME_MAX are not kept (the slot says so): a successor
cannot find such an inode again and answers for it as for one whose node is gone.

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
from dataclasses import dataclass

MAGIC = b"PIDNSIT2"
HEADER = struct.Struct("=8sIIQ")  # magic, slot size, slots in use (high water), next nodeid
# nodeid, parent nodeid, identity, last unique, count, name length, flags, backing id of the
# passthrough opens out, how many; then the name
SLOT = struct.Struct("=QQQQIHHII")
NAME_MAX = 40
SLOT_SIZE = SLOT.size + NAME_MAX  # 88
FIRST = 64  # the header's room
_COUNT = struct.Struct("=QI")  # last unique and count are adjacent: one store for both
_COUNT_AT = 24
_PASSED = struct.Struct("=II")
_PASSED_AT = 40
_BACKINGS_AT = 24  # in the header
_NEXT = struct.Struct("=Q")
_USED = struct.Struct("=I")
OPENED = 1  # in a last unique: that request counted a passthrough open, not a lookup
DIR = 1  # flags: a directory (its entry answers "..")
LONG = 2  # the name was too long to keep
INITIAL_SLOTS = 1024


@dataclass(slots=True, frozen=True)
class Record:
    ino: int
    parent: int
    name: bytes | None  # None: not kept (LONG)
    identity: int
    count: int
    is_dir: bool
    last_unique: int
    slot: int
    backing: int = 0  # the backing id of the passthrough opens of it that are out
    passed: int = 0  # how many


class TableFile:
    def __init__(self, fd: int, created: bool) -> None:
        """Own fd (a memfd); `created`: lay out an empty table, else map the one it holds."""
        self.fd = fd
        if created:
            os.ftruncate(fd, FIRST + INITIAL_SLOTS * SLOT_SIZE)
        size = os.fstat(fd).st_size
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if created:
            HEADER.pack_into(self.map, 0, MAGIC, SLOT_SIZE, 0, 2)
        magic, slot_size, used, _next = HEADER.unpack_from(self.map, 0)
        if magic != MAGIC or slot_size != SLOT_SIZE:
            self.map.close()
            raise ValueError("not an inode table file of this version")
        self.capacity = (size - FIRST) // SLOT_SIZE
        self.used = used
        self.free: list[int] = []
        if not created:
            self.free = [i for i in range(used) if self._ino(i) == 0]

    @classmethod
    def create(cls) -> TableFile:
        return cls(os.memfd_create("pidns-inodes", os.MFD_CLOEXEC), True)

    def _ino(self, slot: int) -> int:
        return int(_NEXT.unpack_from(self.map, FIRST + slot * SLOT_SIZE)[0])

    @property
    def next_ino(self) -> int:
        return int(_NEXT.unpack_from(self.map, 16)[0])

    def set_next_ino(self, ino: int) -> None:
        _NEXT.pack_into(self.map, 16, ino)

    def add(
        self, ino: int, parent: int, name: bytes, identity: int, is_dir: bool, unique: int
    ) -> int:
        """A new inode with one lookup; its slot."""
        if self.free:
            slot = self.free.pop()
        else:
            if self.used == self.capacity:
                self._grow()
            slot = self.used
            self.used += 1
            _USED.pack_into(self.map, 12, self.used)
        flags = DIR if is_dir else 0
        if len(name) > NAME_MAX:
            flags |= LONG
            name = b""
        at = FIRST + slot * SLOT_SIZE
        # the name first, the nodeid last: a slot is in use once its nodeid is there
        self.map[at + SLOT.size : at + SLOT.size + len(name)] = name
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

    def set_backings(self, backing: int) -> None:
        if backing > self.backings:
            _NEXT.pack_into(self.map, _BACKINGS_AT, backing)

    def remove(self, slot: int) -> None:
        _NEXT.pack_into(self.map, FIRST + slot * SLOT_SIZE, 0)
        self.free.append(slot)

    def records(self) -> list[Record]:
        out = []
        for slot in range(self.used):
            at = FIRST + slot * SLOT_SIZE
            ino, parent, identity, unique, count, length, flags, backing, passed = SLOT.unpack_from(
                self.map, at
            )
            if not ino:
                continue
            name = (
                None if flags & LONG else bytes(self.map[at + SLOT.size : at + SLOT.size + length])
            )
            out.append(
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
        return out

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
