"""The FUSE kernel protocol on /dev/fuse (include/uapi/linux/fuse.h): wire structs, opcodes, INIT.

Pure packing and unpacking on bytes, no I/O. pidns speaks protocol 7.38: a newer kernel (6.18 speaks
7.45) falls back to the smaller minor that the INIT reply names, so the structs below are the 7.38
ones and nothing the kernel added later (statx, io_uring) is ever sent to us. One later feature is
taken when offered, since it depends on the flag and not on the minor: passthrough (7.40), whose
open reply fills the former padding of fuse_open_out with a backing id.

Every request starts with fuse_in_header; every reply and notification with fuse_out_header, whose
`error` is 0 or a negated errno for a reply, and a positive FUSE_NOTIFY_* code (with unique 0) for a
notification. Multi-byte fields are native-endian; Linux on every supported architecture pads the
structs to 64 bits, which the explicit formats below spell out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 38
ROOT_ID = 1
MIN_READ_BUFFER = 8192  # the kernel refuses reads of the device into anything smaller

# -- opcodes (enum fuse_opcode) ------------------------------------------------------------------
LOOKUP = 1
FORGET = 2  # no reply
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
NOTIFY_REPLY = 41
BATCH_FORGET = 42  # no reply
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47

OP_NAMES = {
    code: name
    for name, code in list(globals().items())
    if name.isupper()
    and isinstance(code, int)
    and 1 <= code <= COPY_FILE_RANGE
    and name not in ("KERNEL_VERSION", "KERNEL_MINOR_VERSION", "ROOT_ID")
}

# -- notification codes (enum fuse_notify_code) ----------------------------------------------------
NOTIFY_POLL = 1
NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3
NOTIFY_STORE = 4
NOTIFY_RETRIEVE = 5
NOTIFY_DELETE = 6
NOTIFY_RESEND = 7  # 7.40 (6.9): the kernel queues again every request read and not answered

# -- INIT flags (fuse_init_in.flags / fuse_init_out.flags) ---------------------------------------
ASYNC_READ = 1 << 0
POSIX_LOCKS = 1 << 1
ATOMIC_O_TRUNC = 1 << 3
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
DONT_MASK = 1 << 6
SPLICE_WRITE = 1 << 7
SPLICE_MOVE = 1 << 8
SPLICE_READ = 1 << 9
FLOCK_LOCKS = 1 << 10
HAS_IOCTL_DIR = 1 << 11
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
HANDLE_KILLPRIV = 1 << 19
POSIX_ACL = 1 << 20
ABORT_ERROR = 1 << 21
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24
EXPLICIT_INVAL_DATA = 1 << 25
INIT_EXT = 1 << 30  # flags2 is read (the flags below are its bits, shifted by 32)
PASSTHROUGH = 1 << 37  # opens may name a backing file that serves read(2) and mmap (6.9)
HAS_RESEND = 1 << 39  # offered by a kernel that understands NOTIFY_RESEND (6.9); no reply needed
REQUEST_TIMEOUT = 1 << 42  # the kernel aborts the connection when a request waits longer (6.14)
# Set in the unique of a request the kernel sends again after NOTIFY_RESEND; the reply names it so.
UNIQUE_RESEND = 1 << 63

# -- OPEN reply flags (fuse_open_out.open_flags) -------------------------------------------------
FOPEN_DIRECT_IO = 1 << 0  # no page cache: every read(2) is a READ request, served from our snapshot
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5  # no FLUSH at close(2) for this file (7.35)
FOPEN_PASSTHROUGH = 1 << 7  # reads go to the backing file named by backing_id (7.40)

# -- ioctls on the /dev/fuse fd (passthrough) --------------------------------------------------
BACKING_OPEN = 0x4010E501  # _IOW(229, 1, struct fuse_backing_map): returns a backing id
BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, uint32_t): the backing id
BACKING_MAP = struct.Struct("=iIQ")  # fuse_backing_map: fd flags padding
BACKING_ID = struct.Struct("=I")
# the depth of stacking the backing files' filesystems may have: 1 takes files of any plain
# filesystem (a memfd), never of another stacked one (procfs counts as the deepest, so never it)
MAX_STACK_DEPTH = 1
# notify_inval_entry flags
EXPIRE_ONLY = 1 << 0

# The low bit of an INTERRUPT request's unique; the interrupted request's unique is in its body.
INT_REQ_BIT = 1

# -- structs ------------------------------------------------------------------------------------
# fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
IN_HEADER = struct.Struct("=IIQQIIIHH")
# fuse_out_header: len, error, unique
OUT_HEADER = struct.Struct("=IiQ")
# fuse_attr: ino size blocks atime mtime ctime, atimensec mtimensec ctimensec mode nlink uid gid rdev
# blksize flags
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
# fuse_entry_out: nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec, attr
ENTRY_OUT = struct.Struct("=QQQQII" + ATTR.format[1:])
# fuse_attr_out: attr_valid attr_valid_nsec dummy, attr
ATTR_OUT = struct.Struct("=QII" + ATTR.format[1:])
# fuse_init_in (7.36+: flags2 and 11 unused words follow; older kernels send the first four)
INIT_IN = struct.Struct("=IIII")
INIT_IN_FLAGS2 = struct.Struct("=I")
# fuse_init_out: major minor max_readahead flags max_background congestion_threshold max_write
# time_gran max_pages map_alignment flags2 max_stack_depth request_timeout unused[11]
INIT_OUT = struct.Struct("=IIIIHHIIHHIIH22x")
OPEN_IN = struct.Struct("=II")  # flags, open_flags
OPEN_OUT = struct.Struct("=QIi")  # fh, open_flags, backing_id (padding before 7.40)
READ_IN = struct.Struct("=QQIIQII")  # fh offset size read_flags lock_owner flags padding
RELEASE_IN = struct.Struct("=QIIQ")  # fh flags release_flags lock_owner
GETATTR_IN = struct.Struct("=IIQ")  # getattr_flags dummy fh
FORGET_IN = struct.Struct("=Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("=II")  # count dummy
FORGET_ONE = struct.Struct("=QQ")  # nodeid nlookup
INTERRUPT_IN = struct.Struct("=Q")  # unique
# fuse_kstatfs: blocks bfree bavail files ffree bsize namelen frsize padding spare[6]
STATFS_OUT = struct.Struct("=QQQQQIIII24x")
DIRENT = struct.Struct("=QQII")  # ino off namelen type, then the name, padded to 8 bytes
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("=QII")  # parent namelen flags, then name and a NUL
NOTIFY_INVAL_INODE_OUT = struct.Struct("=Qqq")  # ino off len

_ZERO_PAD = bytes(8)
BLKSIZE = 1024


@dataclass(slots=True, frozen=True)
class InitIn:
    major: int
    minor: int
    max_readahead: int
    flags: int


class Attr(Protocol):
    """What a reply says about an inode (its ino, when 0, is the node id the table assigns)."""

    @property
    def mode(self) -> int: ...
    @property
    def nlink(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def ino(self) -> int: ...


def unpack_init(body: bytes | memoryview) -> InitIn:
    """The INIT request's body (after the in header)."""
    major, minor, readahead, flags = INIT_IN.unpack_from(body)
    if minor >= 36 and len(body) >= INIT_IN.size + INIT_IN_FLAGS2.size:
        flags |= INIT_IN_FLAGS2.unpack_from(body, INIT_IN.size)[0] << 32
    return InitIn(major, minor, readahead, flags)


def pack_init_reply(
    unique: int,
    kernel: InitIn,
    wanted: int,
    max_write: int = 4096,
    max_background: int = 0,
    request_timeout: int = 0,
) -> bytes:
    """INIT reply: our minor (the kernel then uses the smaller of the two) and the wanted flags the
    kernel offered; request_timeout (s) counts when REQUEST_TIMEOUT is among them. A kernel of
    another major version gets just our major and resends INIT."""
    if kernel.major != KERNEL_VERSION:
        body = struct.pack("=II", KERNEL_VERSION, KERNEL_MINOR_VERSION) + bytes(INIT_OUT.size - 8)
        return reply(unique, body)
    agreed = kernel.flags & wanted
    body = INIT_OUT.pack(
        KERNEL_VERSION,
        min(kernel.minor, KERNEL_MINOR_VERSION),
        kernel.max_readahead,
        agreed & 0xFFFFFFFF,
        max_background,
        0,  # congestion_threshold: the kernel's default
        max_write,
        1,  # time_gran: nanoseconds
        0,  # max_pages: only with MAX_PAGES
        0,  # map_alignment
        agreed >> 32,  # flags2 (read by the kernel with INIT_EXT)
        MAX_STACK_DEPTH if agreed & PASSTHROUGH else 0,
        request_timeout if agreed & REQUEST_TIMEOUT else 0,
    )
    return reply(unique, body)


def reply(unique: int, body: bytes = b"") -> bytes:
    """A successful reply to request `unique`."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body


def error_reply(unique: int, errno: int) -> bytes:
    """A failed reply: the kernel hands -errno to the caller (errno must be positive)."""
    return OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)


def _split_ns(ns: int) -> tuple[int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000


def _valid(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * 1_000_000_000)


def pack_attr(ino: int, attr: Attr) -> tuple[int, ...]:
    """fuse_attr fields, for splicing into ENTRY_OUT or ATTR_OUT; attr.ino, when set, is the
    number stat() shows (the node id stays `ino`)."""
    sec, nsec = _split_ns(attr.mtime_ns)
    return (
        attr.ino or ino,
        attr.size,
        (attr.size + 511) // 512,
        sec,
        sec,
        sec,
        nsec,
        nsec,
        nsec,
        attr.mode,
        attr.nlink,
        attr.uid,
        attr.gid,
        0,
        BLKSIZE,
        0,
    )


def pack_entry(
    ino: int, attr: Attr, entry_valid: float, attr_valid: float, generation: int = 0
) -> bytes:
    """fuse_entry_out for a LOOKUP reply or a READDIRPLUS record."""
    e_sec, e_nsec = _valid(entry_valid)
    a_sec, a_nsec = _valid(attr_valid)
    return ENTRY_OUT.pack(ino, generation, e_sec, a_sec, e_nsec, a_nsec, *pack_attr(ino, attr))


def pack_negative_entry(entry_valid: float) -> bytes:
    """A LOOKUP reply saying "no such name" that the kernel may cache for entry_valid seconds."""
    e_sec, e_nsec = _valid(entry_valid)
    return ENTRY_OUT.pack(0, 0, e_sec, 0, e_nsec, 0, *(0,) * 16)


def pack_attr_out(ino: int, attr: Attr, attr_valid: float) -> bytes:
    a_sec, a_nsec = _valid(attr_valid)
    return ATTR_OUT.pack(a_sec, a_nsec, 0, *pack_attr(ino, attr))


def pack_open(fh: int, open_flags: int, backing_id: int = 0) -> bytes:
    return OPEN_OUT.pack(fh, open_flags, backing_id)


def backing_map(fd: int) -> bytearray:
    """The argument of BACKING_OPEN for fd (mutable: ioctl then returns the syscall's result)."""
    return bytearray(BACKING_MAP.pack(fd, 0, 0))


def backing_id(backing: int) -> bytearray:
    """The argument of BACKING_CLOSE."""
    return bytearray(BACKING_ID.pack(backing))


def pack_statfs(namelen: int = 255, bsize: int = 4096) -> bytes:
    return STATFS_OUT.pack(0, 0, 0, 0, 0, bsize, namelen, bsize, 0)


def _padded(record: bytes) -> bytes:
    return record + _ZERO_PAD[: -len(record) % 8]


def pack_dirent(ino: int, next_off: int, name: bytes, dtype: int) -> bytes:
    """One fuse_dirent of a READDIR reply; `next_off` is where a later READDIR resumes after it."""
    return _padded(DIRENT.pack(ino, next_off, len(name), dtype) + name)


def pack_direntplus(entry: bytes, ino: int, next_off: int, name: bytes, dtype: int) -> bytes:
    """One fuse_direntplus of a READDIRPLUS reply: an entry (as pack_entry) then the dirent."""
    return _padded(entry + DIRENT.pack(ino, next_off, len(name), dtype) + name)


def notify_inval_entry(parent: int, name: bytes, flags: int = 0) -> bytes:
    """Drop the dentry `name` under inode `parent` from the kernel's cache (the next access looks it
    up again). Written to the device like a reply with unique 0."""
    body = NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), flags) + name + b"\0"
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_ENTRY, 0) + body


def notify_inval_inode(ino: int, offset: int = 0, length: int = 0) -> bytes:
    """Drop an inode's cached attributes, and its cached data from offset (length 0: to the
    end) unless offset is negative. Written for an inode the kernel does not have, it fails with
    ENOENT."""
    body = NOTIFY_INVAL_INODE_OUT.pack(ino, offset, length)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE, 0) + body


def notify_resend() -> bytes:
    """Ask the kernel to send again every request a server of this connection read and never
    answered (a dead predecessor's), each with UNIQUE_RESEND in its unique. No body."""
    return OUT_HEADER.pack(OUT_HEADER.size, NOTIFY_RESEND, 0)


def unpack_batch_forget(body: bytes | memoryview) -> list[tuple[int, int]]:
    """(nodeid, nlookup) pairs of a BATCH_FORGET body."""
    count, _ = BATCH_FORGET_IN.unpack_from(body)
    size = FORGET_ONE.size
    start = BATCH_FORGET_IN.size
    return [FORGET_ONE.unpack_from(body, start + i * size) for i in range(count)]


def name_of(body: bytes | memoryview) -> bytes:
    """A request's NUL-terminated name argument (LOOKUP)."""
    data = bytes(body)
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


# -- request decoding: every request body is read through these ------------------------------
# Each takes the whole request as read from the device (the in header, then the body).
_BODY = IN_HEADER.size


def init_in(request: bytes) -> InitIn:
    return unpack_init(request[_BODY:])


def lookup_name(request: bytes) -> bytes:
    return name_of(request[_BODY:])


def open_flags(request: bytes) -> int:
    return int(OPEN_IN.unpack_from(request, _BODY)[0])


def read_in(request: bytes) -> tuple[int, int, int]:
    """(fh, offset, size) of a READ, READDIR or READDIRPLUS."""
    fh, offset, size, *_ = READ_IN.unpack_from(request, _BODY)
    return fh, offset, size


def release_fh(request: bytes) -> int:
    """The handle a RELEASE or RELEASEDIR closes."""
    return int(RELEASE_IN.unpack_from(request, _BODY)[0])


def forget_nlookup(request: bytes) -> int:
    return int(FORGET_IN.unpack_from(request, _BODY)[0])


def batch_forgets(request: bytes) -> list[tuple[int, int]]:
    return unpack_batch_forget(request[_BODY:])


def interrupt_target(request: bytes) -> int:
    """The unique of the request an INTERRUPT is about."""
    return int(INTERRUPT_IN.unpack_from(request, _BODY)[0])
