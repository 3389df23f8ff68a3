"""File handles that say what their snapshot was, so that a successor server can answer for them.

An OPEN renders the file's whole content once (a snapshot) and READs are served from it; the
snapshot lives in the server's memory only, so a successor does not have it. The handle carries
what is needed to answer honestly without it: the snapshot's length and a checksum of it. A READ of
a handle the server does not know (its predecessor's) renders the file again from the inode the
READ names, then:

- at offset 0 nothing was read yet: the new snapshot is as good as the old one;
- at the old snapshot's length or past it, the reader had all of it: end of file;
- in between, the new snapshot serves the rest only if it has the same length and checksum (the
  same bytes, to a chance of 2**-CRC_BITS), else the read fails with EIO: a reader never gets
  the tail of another rendering than its head.

fh bits: serial (SERIAL_BITS) | checksum (CRC_BITS) | length (LENGTH_BITS; all ones: too long).
"""

from __future__ import annotations

import zlib

SERIAL_BITS = 20
CRC_BITS = 19
LENGTH_BITS = 25
_SERIAL = (1 << SERIAL_BITS) - 1
_CRC = (1 << CRC_BITS) - 1
_LENGTH = (1 << LENGTH_BITS) - 1


def file_handle(serial: int, data: bytes) -> int:
    length = min(len(data), _LENGTH)
    crc = zlib.crc32(data) & _CRC
    return (serial & _SERIAL) | crc << SERIAL_BITS | length << (SERIAL_BITS + CRC_BITS)


def snapshot_length(fh: int) -> int | None:
    """The length of the snapshot fh was given for; None when it was too long to say."""
    length = fh >> (SERIAL_BITS + CRC_BITS)
    return None if length == _LENGTH else length


def same_snapshot(fh: int, data: bytes) -> bool:
    """Whether data is (to the checksum's precision) the snapshot fh was given for."""
    return snapshot_length(fh) == len(data) and (fh >> SERIAL_BITS) & _CRC == (
        zlib.crc32(data) & _CRC
    )
