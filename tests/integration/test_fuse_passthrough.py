"""Passthrough reads of the generic FUSE server on a real mount: the kernel serves reads from the
snapshot taken at open, concurrent opens of one file keep their own snapshots, a mapping names
the file and not the memfd behind it, and without passthrough the same files read by direct I/O."""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import stat as st
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pidns.fuse import passthrough
from pidns.fuse.bridge import Bridge
from pidns.fuse.inodes import ROOT_ID
from pidns.fuse.node import Attr, Node, Requester, fail
from pidns.fuse.server import Connection, Notifier, Watchdog
from pidns.kernel import fuse_mount

pytestmark = [pytest.mark.root, pytest.mark.fuse]


class File(Node):
    """`counter` renders a new snapshot at each open; `fixed` the same bytes every time."""

    def __init__(self, name: str) -> None:
        self.key = ("file", name)
        self.name = name
        self.opens = itertools.count(1)

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFREG | 0o444, 1, 0, 0)

    def content(self, req: Requester) -> bytes:
        if self.name == "fixed":
            return b"the same bytes\n"
        return b"open %d\n" % next(self.opens)


class Root(Node):
    key = ("root",)

    def __init__(self) -> None:
        self.files = {name: File(name) for name in ("counter", "fixed")}

    def attr(self, req: Requester) -> Attr:
        return Attr(st.S_IFDIR | 0o555, 2, 0, 0)

    def lookup(self, name: str, req: Requester) -> Node:
        if name not in self.files:
            raise fail(errno.ENOENT)
        return self.files[name]


class Mounted:
    def __init__(self, path: str, session: Connection) -> None:
        self.path = path
        self.session = session

    def read(self, name: str) -> bytes:
        fd = os.open(f"{self.path}/{name}", os.O_RDONLY)
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)

    def requests(self) -> dict[str, int]:
        requests: dict[str, int] = self.session.stats()["requests"]
        return requests


def _mount(wanted: bool) -> Iterator[Mounted]:
    with tempfile.TemporaryDirectory() as path:
        notifier, watchdog = Notifier(), Watchdog()
        fd = fuse_mount.mount(path)
        session = Connection(fd, Bridge(Root()), notifier, watchdog=watchdog, passthrough=wanted)
        session.start()
        try:
            os.stat(f"{path}/fixed")  # INIT is answered
            yield Mounted(path, session)
        finally:
            fuse_mount.unmount(path, lazy=True)
            watchdog.stop()
            notifier.stop()


@pytest.fixture
def fs() -> Iterator[Mounted]:
    yield from _mount(True)


@pytest.fixture
def direct() -> Iterator[Mounted]:
    yield from _mount(False)


def _settled(fs: Mounted) -> dict[str, int]:
    """The counts once the RELEASEs sent at close (asynchronously) have arrived."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        requests = fs.requests()
        if requests.get("RELEASE", 0) == requests.get("OPEN", 0):
            break
        time.sleep(0.01)
    return fs.requests()


def test_reads_are_served_by_the_kernel_from_the_snapshot_taken_at_open(fs: Mounted) -> None:
    for i in range(1, 21):
        assert fs.read("counter") == b"open %d\n" % i
    requests = _settled(fs)
    assert requests["OPEN"] == 20 and "READ" not in requests
    pt = fs.session.stats()["passthrough"]
    assert pt["enabled"] and pt["opens"] == 20 and pt["slots_made"] == 1  # rewritten in place


def test_a_slot_is_written_only_when_its_snapshot_changes(fs: Mounted) -> None:
    """A snapshot the same as the one the slot holds is not written again; one longer or
    shorter replaces it whole (no tail of the longer one stays)."""
    contents = [b"a\n", b"a\n", b"longer line\n", b"short\n", b"short\n", b"", b"a\n"]
    root = fs.session.bridge.table.node(ROOT_ID)
    assert isinstance(root, Root)
    seen = []
    for data in contents:

        def content(req: Requester, data: bytes = data) -> bytes:
            return data

        root.files["fixed"].content = content  # type: ignore[method-assign]
        seen.append(fs.read("fixed"))
    assert seen == contents
    _settled(fs)
    pt = fs.session.stats()["passthrough"]
    assert pt["opens"] == len(contents) and pt["slots_made"] == 1
    assert pt["snapshots_written"] == 5  # not the second "a", nor the second "short"


def test_without_passthrough_the_same_files_read_by_direct_io(direct: Mounted) -> None:
    for i in range(1, 6):
        assert direct.read("counter") == b"open %d\n" % i
    requests = _settled(direct)
    assert requests["OPEN"] == 5 and requests["READ"] >= 5
    assert direct.session.stats()["passthrough"] == {"negotiated": False}


def test_concurrent_opens_of_the_same_bytes_share_the_backing_file(fs: Mounted) -> None:
    fds = [os.open(f"{fs.path}/fixed", os.O_RDONLY) for _ in range(3)]
    try:
        assert {os.pread(fd, 4096, 0) for fd in fds} == {b"the same bytes\n"}
    finally:
        for fd in fds:
            os.close(fd)
    assert fs.session.stats()["passthrough"]["opens"] == 3


def test_an_open_of_other_bytes_waits_and_the_first_keeps_its_snapshot(fs: Mounted) -> None:
    first = os.open(f"{fs.path}/counter", os.O_RDONLY)
    got: list[bytes] = []
    second = threading.Thread(target=lambda: got.append(fs.read("counter")))
    try:
        assert os.pread(first, 4096, 0) == b"open 1\n"
        second.start()
        second.join(0.3)
        assert second.is_alive() and not got  # it waits for the first's release...
        assert os.pread(first, 4096, 0) == b"open 1\n"  # ...which is not rewritten meanwhile
    finally:
        os.close(first)
    second.join(5)
    assert got == [b"open 2\n"]  # its own snapshot, taken at its open


def test_an_open_waiting_on_a_file_held_too_long_fails_busy(
    fs: Mounted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passthrough, "WAIT_LIMIT", 0.3)
    first = os.open(f"{fs.path}/counter", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as caught:
            fs.read("counter")
        assert caught.value.errno == errno.EBUSY
        assert os.pread(first, 4096, 0) == b"open 1\n"
    finally:
        os.close(first)
    assert fs.read("counter") == b"open 3\n"  # and the file opens again once released


def test_a_mapping_names_the_file_not_the_memfd_behind_it(fs: Mounted) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(f"{fs.path}/fixed", os.O_RDONLY)
    try:
        addr = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert ctypes.string_at(addr, 15) == b"the same bytes\n"
            start = f"{addr:x}-"
            maps = Path("/proc/self/maps").read_text().splitlines()
            [line] = [m for m in maps if m.startswith(start)]
            assert line.split()[-1] == f"{fs.path}/fixed"
            name = next(n for n in os.listdir("/proc/self/map_files") if n.startswith(start))
            assert os.readlink(f"/proc/self/map_files/{name}") == f"{fs.path}/fixed"
            assert os.readlink(f"/proc/self/fd/{fd}") == f"{fs.path}/fixed"
        finally:
            libc.munmap(addr, 4096)
    finally:
        os.close(fd)
