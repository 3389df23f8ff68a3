"""The FUSE server: connection, bridge and inode table, driven over a socket pair with the kernel's
messages (no mount)."""

from __future__ import annotations

import errno
import os
import socket
import stat as st
import threading
from collections.abc import Callable, Iterator

import pytest

from pidns.fuse.bridge import ENTRY_TIMEOUT, Bridge
from pidns.fuse.node import Absent, Attr, Node, Requester
from pidns.fuse.server import Connection, Notifier, Watchdog
from pidns.kernel import fuse_abi as abi


class File(Node):
    def __init__(self, name: str, data: bytes, gate: threading.Event | None = None) -> None:
        self.key = ("file", name)
        self.data = data
        self.gate = gate
        self.released = 0

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFREG | 0o444, 1, 0, 0)

    def content(self, req: Requester) -> bytes:
        if self.gate is not None:
            self.gate.wait(10)
        return self.data

    def release(self) -> None:
        self.released += 1


class Dir(Node):
    def __init__(self, names: list[str]) -> None:
        self.key = ("dir",)
        self.names = names
        self.made: list[File] = []
        self.slow = threading.Event()

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFDIR | 0o555, 2, 0, 0)

    def lookup(self, name: str, req: Requester) -> Node:
        if name == "ctty":
            raise Absent()
        if name == "slow":
            return File("slow", b"late", self.slow)
        if name not in self.names:
            raise FileNotFoundError(errno.ENOENT, "no")
        node = File(name, f"content of {name}\n".encode())
        self.made.append(node)
        return node

    def listing(self, req: Requester) -> list[tuple[int, str, Node]]:
        return [(i + 1, name, self.lookup(name, req)) for i, name in enumerate(self.names)]


class Kernel:
    """The kernel's end: sends requests, reads replies and notifications."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unique = 100

    def send(
        self, op: int, nodeid: int, body: bytes = b"", unique: int | None = None, uid: int = 0
    ) -> int:
        if unique is None:
            self.unique += 2
            unique = self.unique
        header = abi.IN_HEADER.pack(
            abi.IN_HEADER.size + len(body), op, unique, nodeid, uid, 0, 4242, 0, 0
        )
        self.sock.send(header + body)
        return unique

    def receive(self) -> tuple[int, int, bytes]:
        data = self.sock.recv(1 << 16)
        length, error, unique = abi.OUT_HEADER.unpack_from(data)
        assert length == len(data)
        return unique, error, data[abi.OUT_HEADER.size :]

    def call(self, op: int, nodeid: int, body: bytes = b"", uid: int = 0) -> tuple[int, bytes]:
        unique = self.send(op, nodeid, body, uid=uid)
        got, error, payload = self.receive()
        assert got == unique
        return error, payload

    def lookup(self, parent: int, name: bytes) -> int:
        error, payload = self.call(abi.LOOKUP, parent, name + b"\0")
        assert error == 0
        return int(abi.ENTRY_OUT.unpack_from(payload)[0])


@pytest.fixture
def mount() -> Iterator[tuple[Kernel, Connection, Dir]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(10)
    root = Dir(["a", "bb", "ccc", "dddd"])
    notifier = Notifier()
    watchdog = Watchdog()
    session = Connection(
        os.dup(ours.fileno()),
        Bridge(root, lambda req: req.uid != 666),
        notifier,
        watchdog=watchdog,
        name="t",
    )
    ours.close()
    session.start()
    kernel = Kernel(theirs)
    error, _ = kernel.call(abi.INIT, 0, struct_init())
    assert error == 0
    yield kernel, session, root
    root.slow.set()
    theirs.close()
    watchdog.stop()
    notifier.stop()


def struct_init() -> bytes:
    return abi.INIT_IN.pack(7, 45, 65536, abi.DO_READDIRPLUS | abi.PARALLEL_DIROPS)


def test_lookups_are_counted_and_forgotten_exactly(mount: tuple[Kernel, Connection, Dir]) -> None:
    kernel, session, root = mount
    ino = kernel.lookup(abi.ROOT_ID, b"a")
    assert kernel.lookup(abi.ROOT_ID, b"a") == ino
    assert session.bridge.table.counts[ino] == 2
    kernel.send(abi.FORGET, ino, abi.FORGET_IN.pack(1))
    kernel.send(
        abi.BATCH_FORGET,
        0,
        abi.BATCH_FORGET_IN.pack(2, 0) + abi.FORGET_ONE.pack(ino, 1) + abi.FORGET_ONE.pack(999, 5),
    )  # an unknown inode is no failure
    error, _ = kernel.call(
        abi.GETATTR, abi.ROOT_ID, abi.GETATTR_IN.pack(0, 0, 0)
    )  # FORGETs are done
    assert error == 0
    assert ino not in session.bridge.table.nodes and ino not in session.bridge.table.counts
    assert root.made[0].released == 1  # the node kept: released once forgotten
    assert root.made[1].released == 1  # the duplicate of the second lookup: released at once
    assert kernel.lookup(abi.ROOT_ID, b"a") != ino  # a new inode after a forget


def test_absent_names_are_cacheable_and_missing_ones_not(
    mount: tuple[Kernel, Connection, Dir],
) -> None:
    kernel, _, _ = mount
    error, payload = kernel.call(abi.LOOKUP, abi.ROOT_ID, b"ctty\0")
    assert error == 0
    nodeid, _gen, entry_valid, *_ = abi.ENTRY_OUT.unpack_from(payload)
    assert nodeid == 0 and entry_valid == int(ENTRY_TIMEOUT)
    assert kernel.call(abi.LOOKUP, abi.ROOT_ID, b"zz\0")[0] == -errno.ENOENT


def test_open_serves_a_snapshot_with_direct_io(mount: tuple[Kernel, Connection, Dir]) -> None:
    kernel, session, _ = mount
    ino = kernel.lookup(abi.ROOT_ID, b"bb")
    error, payload = kernel.call(abi.OPEN, ino, abi.OPEN_IN.pack(os.O_RDONLY, 0))
    fh, flags, _ = abi.OPEN_OUT.unpack(payload)
    assert error == 0 and flags == abi.FOPEN_DIRECT_IO | abi.FOPEN_NOFLUSH
    assert kernel.call(abi.READ, ino, abi.READ_IN.pack(fh, 0, 5, 0, 0, 0, 0)) == (0, b"conte")
    assert kernel.call(abi.READ, ino, abi.READ_IN.pack(fh, 5, 4096, 0, 0, 0, 0)) == (
        0,
        b"nt of bb\n",
    )
    assert kernel.call(abi.READ, ino, abi.READ_IN.pack(fh, 99, 4096, 0, 0, 0, 0)) == (0, b"")
    assert kernel.call(abi.FLUSH, ino, bytes(24))[0] == -errno.ENOSYS
    assert kernel.call(abi.RELEASE, ino, abi.RELEASE_IN.pack(fh, 0, 0, 0))[0] == 0
    assert fh not in session.bridge.files
    assert kernel.call(abi.OPEN, ino, abi.OPEN_IN.pack(os.O_WRONLY, 0))[0] == -errno.EROFS
    assert kernel.call(abi.READLINK, ino)[0] == -errno.EINVAL


def test_the_gate_keeps_requesters_out(mount: tuple[Kernel, Connection, Dir]) -> None:
    kernel, _, _ = mount
    assert kernel.call(abi.LOOKUP, abi.ROOT_ID, b"a\0", uid=666)[0] == -errno.EACCES


def _entries(payload: bytes) -> list[tuple[int, int, bytes]]:
    """(nodeid, next offset, name) of a READDIRPLUS reply."""
    out, at = [], 0
    while at < len(payload):
        nodeid = abi.ENTRY_OUT.unpack_from(payload, at)[0]
        _ino, off, namelen, _type = abi.DIRENT.unpack_from(payload, at + abi.ENTRY_OUT.size)
        start = at + abi.ENTRY_OUT.size + abi.DIRENT.size
        out.append((nodeid, off, payload[start : start + namelen]))
        at += (abi.ENTRY_OUT.size + abi.DIRENT.size + namelen + 7) & ~7
    return out


def test_readdirplus_resumes_at_stable_offsets_and_counts_what_it_sent(
    mount: tuple[Kernel, Connection, Dir],
) -> None:
    kernel, session, root = mount
    error, payload = kernel.call(abi.OPENDIR, abi.ROOT_ID, abi.OPEN_IN.pack(0, 0))
    assert error == 0
    fh = abi.OPEN_OUT.unpack(payload)[0]
    record = abi.ENTRY_OUT.size + abi.DIRENT.size + 8
    _, first = kernel.call(
        abi.READDIRPLUS, abi.ROOT_ID, abi.READ_IN.pack(fh, 0, 3 * record, 0, 0, 0, 0)
    )
    got = _entries(first)
    assert [name for _, _, name in got] == [b".", b"..", b"a"]
    root.names.insert(0, "new")  # the listing changes; the open handle keeps its snapshot
    _, rest = kernel.call(
        abi.READDIRPLUS, abi.ROOT_ID, abi.READ_IN.pack(fh, got[-1][1], 4096, 0, 0, 0, 0)
    )
    later = _entries(rest)
    assert [name for _, _, name in later] == [b"bb", b"ccc", b"dddd"]
    for nodeid, _, name in got[2:] + later:
        assert session.bridge.table.counts[nodeid] == 1, name
    assert kernel.call(abi.RELEASEDIR, abi.ROOT_ID, abi.RELEASE_IN.pack(fh, 0, 0, 0))[0] == 0


def test_an_interrupt_answers_a_stuck_request_once(mount: tuple[Kernel, Connection, Dir]) -> None:
    kernel, session, root = mount
    ino = kernel.lookup(abi.ROOT_ID, b"slow")
    stuck = kernel.send(abi.OPEN, ino, abi.OPEN_IN.pack(os.O_RDONLY, 0))
    kernel.send(abi.INTERRUPT, 0, abi.INTERRUPT_IN.pack(stuck), unique=stuck | abi.INT_REQ_BIT)
    unique, error, _ = kernel.receive()  # from the standby thread, while the request thread waits
    assert (unique, error) == (stuck, -errno.EINTR)
    root.slow.set()
    assert kernel.call(abi.GETATTR, ino, abi.GETATTR_IN.pack(0, 0, 0))[0] == 0  # no late OPEN reply
    assert not session.bridge.files  # and no handle kept for it
    unknown = 4000
    kernel.send(abi.INTERRUPT, 0, abi.INTERRUPT_IN.pack(unknown), unique=unknown | abi.INT_REQ_BIT)
    assert kernel.receive()[:2] == (unknown | abi.INT_REQ_BIT, -errno.EAGAIN)


def test_a_reaped_task_is_invalidated_from_another_thread(
    mount: tuple[Kernel, Connection, Dir],
) -> None:
    kernel, session, _ = mount

    class Task(File):
        owner = 777

    class Tasks(Dir):
        def lookup(self, name: str, req: Requester) -> Node:
            return Task(name, b"")

    session.bridge.table.nodes[abi.ROOT_ID] = Tasks([])
    ino = kernel.lookup(abi.ROOT_ID, b"5")
    assert session.bridge.table.by_owner == {777: [ino]}
    session.bridge.invalidate_owner(777)
    unique, code, body = kernel.receive()
    assert (unique, code) == (0, abi.NOTIFY_INVAL_ENTRY)
    assert (
        abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(body) == (abi.ROOT_ID, 1, 0) and body[16:] == b"5\0"
    )
    assert kernel.lookup(abi.ROOT_ID, b"5") != ino


class _Task(Dir):
    """The directory of the task with host pid 777; its names come from `child`."""

    owner = 777

    def __init__(self, child: Callable[[str], Node]) -> None:
        super().__init__([])
        self.key = ("task", 777)  # not the root's
        self.child = child

    def lookup(self, name: str, req: Requester) -> Node:
        return self.child(name)


def _tasks(session: Connection, child: Callable[[str], Node]) -> None:
    """Make the view's root list task 777 under any name, its names made by child."""

    class Tasks(Dir):
        def lookup(self, name: str, req: Requester) -> Node:
            return _Task(child)

    session.bridge.table.nodes[abi.ROOT_ID] = Tasks([])


def _invalidated(body: bytes) -> tuple[int, bytes]:
    """(parent, name) of a FUSE_NOTIFY_INVAL_ENTRY."""
    parent, namelen, _flags = abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(body)
    start = abi.NOTIFY_INVAL_ENTRY_OUT.size
    return parent, body[start : start + namelen]


def test_a_flush_invalidates_every_name_under_the_task_children_first(
    mount: tuple[Kernel, Connection, Dir],
) -> None:
    """A name still in use when its task's directory is invalidated would stay cached and pin the
    directory: each is invalidated itself, deepest first."""
    kernel, session, _ = mount

    class Status(File):
        owner = 777

    _tasks(session, lambda name: Status(name, b""))
    task = kernel.lookup(abi.ROOT_ID, b"5")
    status = kernel.lookup(task, b"status")
    assert session.bridge.table.by_owner == {777: [task, status]}
    session.bridge.invalidate_owner(777)
    invalidated = []
    for _ in range(2):
        unique, code, body = kernel.receive()
        assert (unique, code) == (0, abi.NOTIFY_INVAL_ENTRY)
        invalidated.append(_invalidated(body))
    assert invalidated == [(task, b"status"), (abi.ROOT_ID, b"5")]
    assert session.bridge.table.by_owner == {}


def test_a_negative_entry_under_a_task_flushed_meanwhile_is_invalidated_after_the_answer(
    mount: tuple[Kernel, Connection, Dir],
) -> None:
    """A name looked up while its task is flushed escapes the flush (the kernel's shrinking skips
    a name in lookup); cached afterwards, even negative, it would pin the task's directory."""
    kernel, session, _ = mount

    def reaped_meanwhile(name: str) -> Node:
        session.bridge.invalidate_owner(777)  # the task is reaped while this lookup is in flight
        raise Absent()

    _tasks(session, reaped_meanwhile)
    task = kernel.lookup(abi.ROOT_ID, b"5")
    unique = kernel.send(abi.LOOKUP, task, b"ctty\0")
    messages = [kernel.receive() for _ in range(3)]  # the flush's, the answer, the one after it
    answer = next(i for i, (u, _c, _b) in enumerate(messages) if u == unique)
    assert messages[answer][1] == 0
    assert abi.ENTRY_OUT.unpack_from(messages[answer][2])[0] == 0  # negative
    # (position, parent, name); the flush's own may come before or after the answer
    invalidated = [
        (i, *_invalidated(body))
        for i, (u, code, body) in enumerate(messages)
        if u == 0 and code == abi.NOTIFY_INVAL_ENTRY
    ]
    assert sorted(x[1:] for x in invalidated) == [(abi.ROOT_ID, b"5"), (task, b"ctty")]
    assert next(i for i, p, _n in invalidated if p == task) > answer


def _init_with_flags2(flags: int) -> bytes:
    """fuse_init_in of a 7.45 kernel: flags, then flags2 (INIT_EXT) and the unused words."""
    low, high = flags & 0xFFFFFFFF, flags >> 32
    return (
        abi.INIT_IN.pack(7, 45, 65536, low | abi.INIT_EXT)
        + abi.INIT_IN_FLAGS2.pack(high)
        + bytes(44)
    )


@pytest.mark.parametrize("wanted", [True, False])
def test_passthrough_is_negotiated_only_when_wanted(wanted: bool) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(10)
    notifier = Notifier()
    session = Connection(
        os.dup(ours.fileno()), Bridge(Dir(["a"])), notifier, name="t", passthrough=wanted
    )
    ours.close()
    session.start()
    kernel = Kernel(theirs)
    try:
        error, payload = kernel.call(abi.INIT, 0, _init_with_flags2(abi.PASSTHROUGH))
        assert error == 0
        out = abi.INIT_OUT.unpack(payload)
        flags2, max_stack_depth = out[10], out[11]
        assert bool(flags2 & (abi.PASSTHROUGH >> 32)) is wanted
        assert max_stack_depth == (abi.MAX_STACK_DEPTH if wanted else 0)
        assert (session.bridge.backings is not None) is wanted
        assert session.stats()["passthrough"]["negotiated"] is wanted
    finally:
        theirs.close()
        notifier.stop()


def test_a_refused_backing_file_falls_back_to_direct_io_for_good() -> None:
    """The device here is a socket: the backing ioctl fails as for a daemon without the
    privilege, and every open is served by direct I/O from its snapshot."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(10)
    notifier = Notifier()
    session = Connection(os.dup(ours.fileno()), Bridge(Dir(["a"])), notifier, name="t")
    ours.close()
    session.start()
    kernel = Kernel(theirs)
    try:
        assert kernel.call(abi.INIT, 0, _init_with_flags2(abi.PASSTHROUGH))[0] == 0
        ino = kernel.lookup(abi.ROOT_ID, b"a")
        for _ in range(2):
            error, payload = kernel.call(abi.OPEN, ino, abi.OPEN_IN.pack(os.O_RDONLY, 0))
            fh, flags, backing = abi.OPEN_OUT.unpack(payload)
            assert error == 0 and flags == abi.FOPEN_DIRECT_IO | abi.FOPEN_NOFLUSH and backing == 0
            read = kernel.call(abi.READ, ino, abi.READ_IN.pack(fh, 0, 4096, 0, 0, 0, 0))
            assert read == (0, b"content of a\n")
            assert kernel.call(abi.RELEASE, ino, abi.RELEASE_IN.pack(fh, 0, 0, 0))[0] == 0
        stats = session.stats()
        assert stats["passthrough"] == {
            "negotiated": True,
            "enabled": False,
            "opens": 0,
            "slots_made": 0,
            "snapshots_written": 0,
            "slots_idle": 0,
        }
        assert stats["requests"]["OPEN"] == 2 and stats["requests"]["READ"] == 2
    finally:
        theirs.close()
        notifier.stop()
