"""The FUSE wire protocol on bytes: struct sizes and layouts as include/uapi/linux/fuse.h has them."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from pidns.kernel import fuse_abi as abi


@dataclass(frozen=True)
class A:
    mode: int = 0o100444
    nlink: int = 1
    uid: int = 1000
    gid: int = 1001
    size: int = 1025
    mtime_ns: int = 1_700_000_000_123_456_789
    ino: int = 0


@pytest.mark.parametrize(
    ("layout", "size"),
    [
        (abi.IN_HEADER, 40),
        (abi.OUT_HEADER, 16),
        (abi.ATTR, 88),
        (abi.ENTRY_OUT, 128),
        (abi.ATTR_OUT, 104),
        (abi.INIT_OUT, 64),
        (abi.OPEN_IN, 8),
        (abi.OPEN_OUT, 16),
        (abi.READ_IN, 40),
        (abi.RELEASE_IN, 24),
        (abi.GETATTR_IN, 16),
        (abi.STATFS_OUT, 80),
        (abi.DIRENT, 24),
        (abi.FORGET_ONE, 16),
        (abi.NOTIFY_INVAL_ENTRY_OUT, 16),
        (abi.NOTIFY_INVAL_INODE_OUT, 24),
    ],
)
def test_struct_sizes_match_the_kernel_header(layout: struct.Struct, size: int) -> None:
    assert layout.size == size


def test_in_header_fields() -> None:
    raw = struct.pack("=IIQQIIIHH", 56, abi.LOOKUP, 0x1234, 7, 1000, 1001, 4242, 0, 0)
    assert abi.IN_HEADER.unpack(raw) == (56, abi.LOOKUP, 0x1234, 7, 1000, 1001, 4242, 0, 0)


def test_unpack_init_reads_flags2_only_from_7_36() -> None:
    old = struct.pack("=IIII", 7, 31, 131072, abi.DO_READDIRPLUS)
    assert abi.unpack_init(old) == abi.InitIn(7, 31, 131072, abi.DO_READDIRPLUS)
    new = struct.pack("=IIIII44x", 7, 45, 65536, abi.INIT_EXT | abi.ASYNC_READ, 0b101)
    init = abi.unpack_init(new)
    assert (init.major, init.minor, init.max_readahead) == (7, 45, 65536)
    assert init.flags == abi.INIT_EXT | abi.ASYNC_READ | (0b101 << 32)


def test_init_reply_takes_the_smaller_minor_and_only_offered_flags() -> None:
    kernel = abi.InitIn(7, 45, 131072, abi.DO_READDIRPLUS | abi.PARALLEL_DIROPS | abi.ASYNC_READ)
    wanted = abi.DO_READDIRPLUS | abi.READDIRPLUS_AUTO | abi.PARALLEL_DIROPS
    out = abi.pack_init_reply(99, kernel, wanted, max_write=4096)
    length, error, unique = abi.OUT_HEADER.unpack_from(out)
    assert (length, error, unique) == (len(out), 0, 99) and length == 16 + 64
    major, minor, readahead, flags, _bg, _cong, max_write, time_gran, *_ = abi.INIT_OUT.unpack_from(
        out, 16
    )
    assert (major, minor, readahead) == (7, abi.KERNEL_MINOR_VERSION, 131072)
    assert flags == abi.DO_READDIRPLUS | abi.PARALLEL_DIROPS  # AUTO was not offered
    assert (max_write, time_gran) == (4096, 1)
    older = abi.pack_init_reply(1, abi.InitIn(7, 31, 0, 0), 0)
    assert abi.INIT_OUT.unpack_from(older, 16)[1] == 31


def test_init_reply_asks_for_a_request_timeout_only_where_offered() -> None:
    offered = abi.InitIn(7, 45, 0, abi.INIT_EXT | abi.ASYNC_READ | abi.REQUEST_TIMEOUT)
    wanted = abi.INIT_EXT | abi.REQUEST_TIMEOUT
    fields = abi.INIT_OUT.unpack_from(
        abi.pack_init_reply(1, offered, wanted, request_timeout=60), 16
    )
    flags, flags2, timeout = fields[3], fields[10], fields[12]
    assert (flags, flags2, timeout) == (abi.INIT_EXT, abi.REQUEST_TIMEOUT >> 32, 60)
    older = abi.InitIn(7, 38, 0, abi.INIT_EXT | abi.ASYNC_READ)  # a kernel before 6.14
    fields = abi.INIT_OUT.unpack_from(abi.pack_init_reply(1, older, wanted, request_timeout=60), 16)
    assert (fields[10], fields[12]) == (0, 0)


def test_init_reply_to_another_major_names_ours() -> None:
    out = abi.pack_init_reply(5, abi.InitIn(8, 0, 0, 0), abi.DO_READDIRPLUS)
    assert abi.OUT_HEADER.unpack_from(out) == (16 + 64, 0, 5)
    assert struct.unpack_from("=II", out, 16) == (abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION)


def test_replies_and_errors() -> None:
    assert abi.reply(7, b"abc") == struct.pack("=IiQ", 19, 0, 7) + b"abc"
    assert abi.error_reply(8, 2) == struct.pack("=IiQ", 16, -2, 8)


def test_entry_layout() -> None:
    out = abi.pack_entry(42, A(), 86400.0, 1.5)
    assert len(out) == 128
    nodeid, gen, e_sec, a_sec, e_nsec, a_nsec = struct.unpack_from("=QQQQII", out)
    assert (nodeid, gen, e_sec, a_sec, e_nsec, a_nsec) == (42, 0, 86400, 1, 0, 500_000_000)
    (
        ino,
        size,
        blocks,
        atime,
        mtime,
        ctime,
        atns,
        mtns,
        ctns,
        mode,
        nlink,
        uid,
        gid,
        rdev,
        blksize,
        flags,
    ) = abi.ATTR.unpack_from(out, 40)
    assert (ino, size, blocks) == (42, 1025, 3)
    assert atime == mtime == ctime == 1_700_000_000 and atns == mtns == ctns == 123_456_789
    assert (mode, nlink, uid, gid, rdev, blksize, flags) == (
        0o100444,
        1,
        1000,
        1001,
        0,
        abi.BLKSIZE,
        0,
    )


def test_negative_entry_has_no_node_and_a_lifetime() -> None:
    out = abi.pack_negative_entry(10.25)
    assert len(out) == 128
    assert struct.unpack_from("=QQQQII", out) == (0, 0, 10, 0, 250_000_000, 0)
    assert out[40:] == bytes(88)


def test_attr_out_layout() -> None:
    out = abi.pack_attr_out(3, A(), 1.0)
    assert len(out) == 104
    assert struct.unpack_from("=QII", out) == (1, 0, 0)
    assert abi.ATTR.unpack_from(out, 16)[0] == 3


def test_open_and_statfs() -> None:
    assert abi.pack_open(5, abi.FOPEN_DIRECT_IO | abi.FOPEN_NOFLUSH) == struct.pack(
        "=QII", 5, 0b100001, 0
    )
    st = abi.STATFS_OUT.unpack(abi.pack_statfs())
    assert st[5:8] == (4096, 255, 4096)


def test_dirents_are_padded_to_8_bytes() -> None:
    one = abi.pack_dirent(9, 3, b"abc", 4)
    assert len(one) == 32 and one[24:27] == b"abc" and one[27:] == bytes(5)
    assert abi.DIRENT.unpack_from(one) == (9, 3, 3, 4)
    exact = abi.pack_dirent(9, 3, b"12345678", 8)
    assert len(exact) == 32
    plus = abi.pack_direntplus(abi.pack_entry(9, A(), 1, 1), 9, 4, b"status", 8)
    assert len(plus) == 128 + 24 + 8
    assert abi.DIRENT.unpack_from(plus, 128) == (9, 4, 6, 8) and plus[152:158] == b"status"


def test_notify_inval_entry() -> None:
    msg = abi.notify_inval_entry(1, b"1234")
    length, code, unique = abi.OUT_HEADER.unpack_from(msg)
    assert (length, code, unique) == (len(msg), abi.NOTIFY_INVAL_ENTRY, 0)
    assert abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(msg, 16) == (1, 4, 0)
    assert msg[32:] == b"1234\0"


def test_notify_inval_inode() -> None:
    msg = abi.notify_inval_inode(7, 0, -1)
    assert abi.OUT_HEADER.unpack_from(msg) == (40, abi.NOTIFY_INVAL_INODE, 0)
    assert abi.NOTIFY_INVAL_INODE_OUT.unpack_from(msg, 16) == (7, 0, -1)


def test_batch_forget_and_names() -> None:
    body = abi.BATCH_FORGET_IN.pack(2, 0) + abi.FORGET_ONE.pack(5, 3) + abi.FORGET_ONE.pack(9, 1)
    assert abi.unpack_batch_forget(body) == [(5, 3), (9, 1)]
    assert abi.name_of(b"status\0") == b"status"
    assert abi.name_of(b"noterm") == b"noterm"


def test_an_attr_with_an_inode_of_its_own_shows_it_under_the_servers_node_id() -> None:
    attr = A(ino=4026531836)
    out = abi.pack_entry(42, attr, 1.0, 1.0)
    nodeid = struct.unpack_from("=Q", out)[0]
    ino = struct.unpack_from("=Q", out, 40)[0]  # fuse_attr starts after the 40-byte entry head
    assert (nodeid, ino) == (42, 4026531836)


def test_open_reply_carries_the_backing_id_and_init_the_stack_depth() -> None:
    assert abi.OPEN_OUT.unpack(abi.pack_open(7, abi.FOPEN_PASSTHROUGH, 3)) == (
        7,
        abi.FOPEN_PASSTHROUGH,
        3,
    )
    kernel = abi.InitIn(7, 45, 65536, abi.PASSTHROUGH | abi.INIT_EXT)
    body = abi.pack_init_reply(1, kernel, abi.PASSTHROUGH | abi.INIT_EXT)[abi.OUT_HEADER.size :]
    out = abi.INIT_OUT.unpack(body)
    assert out[10] == abi.PASSTHROUGH >> 32 and out[11] == abi.MAX_STACK_DEPTH
    body = abi.pack_init_reply(1, kernel, abi.INIT_EXT)[abi.OUT_HEADER.size :]
    assert abi.INIT_OUT.unpack(body)[10:12] == (0, 0)
